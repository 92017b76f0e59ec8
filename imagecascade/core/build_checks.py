"""Checks `invoke plan` and `invoke cascade` make before anything is built or sent.

- `builder_refusal`: a Dockerfile whose syntax the chosen builder cannot build (BuildKit-only
  syntax with the classic builder, a feature newer than a BuildKit's Dockerfile frontend) is
  refused up front, naming file, line, feature and what it needs.
- `missing_copy_sources`: a COPY/ADD source that is not in the sent context (missing, or left out
  by the ignore file) fails the build; it is reported before an hours-long parent build.
- `credential_files`: files that look like credentials and are sent: a warning per file, or an
  error with `[build] secret_files = "error"` in cascade.toml.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from pathlib import Path

from imagecascade.core import buildkit_syntax
from imagecascade.core.buildkit_syntax import FrontendSupport
from imagecascade.core.context import display_path
from imagecascade.core.dockerfile import copy_sources, read_dockerfile
from imagecascade.core.dockerignore import go_clean, ignore_file_for
from imagecascade.core.plan import Plan, PlannedImage
from imagecascade.core.refusals import Refusal
from imagecascade.errors import ConfigError

# Names whose whole point is a secret (private keys, tokens, credential stores).
CREDENTIAL_NAMES = frozenset(
    {
        ".env",
        ".netrc",
        ".git-credentials",
        ".pypirc",
        ".npmrc",
        "credentials.json",
        "application_default_credentials.json",
        "id_rsa",
        "id_dsa",
        "id_ecdsa",
        "id_ed25519",
    }
)
CREDENTIAL_SUFFIXES = (".pem", ".key", ".p12", ".pfx")
CREDENTIAL_PATHS = (".docker/config.json",)
# `.env.local`, `.env.production` hold secrets; these are templates meant to be committed.
_ENV_TEMPLATES = (".example", ".sample", ".template", ".dist")
_WILDCARD_OR_VARIABLE = frozenset("*?[\\$")


def _selected(plan: Plan, names: Iterable[str] | None) -> list[PlannedImage]:
    wanted = None if names is None else set(names)
    return [image for image in plan.images if wanted is None or image.name in wanted]


def builder_refusal(image: PlannedImage, support: FrontendSupport) -> Refusal | None:
    """The one check of a Dockerfile's syntax against the chosen builder: why `support` cannot
    build `image` (`<Dockerfile>: line N: <feature> needs ...`, and the fix), or None.

    The classic builder refuses every BuildKit-only feature; a BuildKit refuses what its Dockerfile
    frontend does not know yet and a `# syntax=` line (see core/buildkit_syntax.py). The entry
    points add the result to the plan (`Plan.with_refusals`): the image is refused before anything
    is built, the rest of the cascade still builds.
    """
    return buildkit_syntax.refusal(read_dockerfile(image.spec.dockerfile), support)


def missing_copy_sources(plan: Plan, names: Iterable[str] | None = None) -> None:
    """Raise ConfigError for a COPY/ADD source that the sent context does not hold.

    Only literal sources are checked (no wildcards, no variables), against the entries that are
    really sent (so a source left out by the ignore file is reported as such).
    """
    for image in _selected(plan, names):
        present: set[str] = set()
        for entry in image.inputs.files:
            path = entry.path
            while path and path not in present:
                present.add(path)
                path = posixpath.dirname(path)
        parsed = read_dockerfile(image.spec.dockerfile)
        for instruction, sources in copy_sources(parsed):
            for source in sources:
                if _WILDCARD_OR_VARIABLE.intersection(source):
                    continue
                relative = go_clean("/" + source).lstrip("/")
                if relative and relative not in present:
                    line, keyword = instruction.line, instruction.keyword
                    raise ConfigError(_missing_source_message(image, line, keyword, source))


def _missing_source_message(image: PlannedImage, line: int, keyword: str, source: str) -> str:
    spec = image.spec
    ignore = ignore_file_for(spec.context, spec.dockerfile)
    relative = go_clean("/" + source).lstrip("/")
    if (spec.context / relative).exists() or (spec.context / relative).is_symlink():
        reason = f"it is left out by {ignore}" if ignore else "it is never sent"
    else:
        reason = f"it does not exist in the build context {spec.context}"
    return f"{spec.dockerfile}: line {line}: {keyword} source {source!r} is not sent: {reason}"


def looks_like_credential(path: str) -> bool:
    """Whether a context path's name says it holds a secret (see CREDENTIAL_NAMES and friends)."""
    name = posixpath.basename(path)
    if name in CREDENTIAL_NAMES or name.endswith(CREDENTIAL_SUFFIXES):
        return True
    if name.startswith(".env.") and not name.endswith(_ENV_TEMPLATES):
        return True
    return any(path == suffix or path.endswith("/" + suffix) for suffix in CREDENTIAL_PATHS)


def credential_files(plan: Plan, names: Iterable[str] | None = None) -> list[str]:
    """One line per sent file that looks like a credential: `<image>: <path> ...`.

    With `[build] secret_files = "error"` the first one raises ConfigError instead.
    """
    lines = []
    for image in _selected(plan, names):
        for entry in image.inputs.files:
            if entry.kind == "dir" or not looks_like_credential(entry.path):
                continue
            shown = _shown(plan.settings.root, image.spec.context / entry.path)
            line = (
                f"{image.name}: {shown} looks like a credential and is sent to the build "
                "(exclude it in .dockerignore)"
            )
            if plan.settings.secret_files == "error":
                raise ConfigError(f'{line}; [build] secret_files = "error" in cascade.toml')
            lines.append(line)
    return lines


def _shown(root: Path, path: Path) -> str:
    try:
        return display_path(path.relative_to(root).as_posix())
    except ValueError:
        return display_path(str(path))


def check_before_build(plan: Plan, names: Iterable[str] | None = None) -> list[str]:
    """Every check above; returns the warnings to show, raises ConfigError for the first error."""
    selected = None if names is None else list(names)
    missing_copy_sources(plan, selected)
    return credential_files(plan, selected)

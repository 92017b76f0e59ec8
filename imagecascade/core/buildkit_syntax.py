"""Which Dockerfile syntax needs BuildKit, and which Dockerfile frontend version, decided before building.

The Dockerfile is read with BuildKit's own parser (the `dockerfile` package). Each feature is
listed with the first Dockerfile frontend release that knows it, from BuildKit's frontend
changelog (frontend/dockerfile/docs/reference.md and the `docker/dockerfile` release notes):
`RUN --mount` and `COPY --chmod` 1.2, `RUN --network` 1.3, heredocs, `COPY --link` and tmpfs
`size=` 1.4, `ADD --checksum` and `--keep-git-dir` 1.6, secret mounts with `env=` 1.10;
`COPY --parents`, `COPY --exclude` and `RUN --security` only in the `-labs` frontend. The
engine's built-in frontend is the one of the BuildKit it vendors (frontend 1.N ships with
BuildKit 0.N+6). The classic builder knows none of them.

A `# syntax=` directive is refused with BuildKit: it makes BuildKit fetch a frontend image from
a registry at build time, which no freshness hash covers and which fails offline.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Literal

import dockerfile as parser

from imagecascade.core.refusals import Refusal
from imagecascade.errors import ConfigError

Version = tuple[int, int]
LABS: Version = (99, 0)  # only the `docker/dockerfile:*-labs` frontend, fetched with `# syntax=`

_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z]+)\s*=\s*(.*?)\s*$")
_PLATFORM_ARGS = re.compile(
    r"\$\{?(BUILDPLATFORM|BUILDOS|BUILDARCH|BUILDVARIANT|TARGETPLATFORM|TARGETOS|TARGETARCH|TARGETVARIANT)\b"
)
# RUN --mount options a frontend release added after `--mount` itself (1.2).
_MOUNT_OPTIONS: dict[tuple[str, str], Version] = {("secret", "env"): (1, 10), ("tmpfs", "size"): (1, 4)}
_FLAGS: dict[tuple[str, str], Version] = {
    ("RUN", "mount"): (1, 2),
    ("RUN", "network"): (1, 3),
    ("RUN", "security"): LABS,
    ("RUN", "device"): LABS,
    ("COPY", "chmod"): (1, 2),
    ("ADD", "chmod"): (1, 2),
    ("COPY", "link"): (1, 4),
    ("ADD", "link"): (1, 4),
    ("ADD", "checksum"): (1, 6),
    ("ADD", "keep-git-dir"): (1, 6),
    ("COPY", "parents"): LABS,
    ("COPY", "exclude"): LABS,
    ("ADD", "exclude"): LABS,
}


@dataclasses.dataclass(frozen=True)
class Feature:
    """One use of BuildKit-only syntax: where, what, and the first frontend release that knows it."""

    line: int
    name: str  # e.g. "a heredoc", "COPY --link"
    needs: Version


@dataclasses.dataclass(frozen=True)
class SecretMount:
    id: str
    required: bool
    line: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class FrontendSupport:
    """What the chosen builder can build.

    `frontend` is the Dockerfile frontend version of a BuildKit builder, None when it is not
    known (then only the `# syntax=` rule applies); `describe` names the builder for messages.
    """

    builder: Literal["classic", "buildkit"]
    frontend: Version | None
    describe: str
    remedy: str  # what a user does to get a builder that can


def version_text(version: Version) -> str:
    return (
        "the -labs frontend" if version == LABS else f"Dockerfile frontend {version[0]}.{version[1]} or newer"
    )


def parse(text: str, path: Path) -> tuple[parser.Command, ...]:
    """BuildKit's parse of `text`; a parse error is a ConfigError naming the file (and line)."""
    try:
        return tuple(parser.parse_string(text))
    except parser.GoParseError as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else "cannot parse"
        raise ConfigError(f"{path}: {message}") from error


def syntax_directive(text: str) -> tuple[int, str] | None:
    """(line, value) of a `# syntax=` parser directive at the top of the file, else None."""
    for number, line in enumerate(text.removeprefix("\ufeff").splitlines(), start=1):
        match = _DIRECTIVE.match(line.strip())
        if not match:
            return None
        if match.group(1).lower() == "syntax":
            return number, match.group(2)
    return None


def _mount_options(flag: str) -> dict[str, str]:
    options: dict[str, str] = {}
    for part in flag.split("=", 1)[1].split(","):
        key, _, value = part.partition("=")
        options[key.strip().lower()] = value.strip()
    return options


def features(commands: tuple[parser.Command, ...]) -> list[Feature]:
    """Every use of syntax that needs BuildKit, in file order."""
    found: list[Feature] = []
    for command in commands:
        keyword = command.cmd.upper()
        if command.heredocs:
            found.append(Feature(command.start_line, f"a heredoc in {keyword}", (1, 4)))
        for flag in command.flags:
            name = flag.lstrip("-").split("=", 1)[0].lower()
            needs = _FLAGS.get((keyword, name))
            if needs is None:
                if keyword == "FROM" and name == "platform" and _PLATFORM_ARGS.search(flag):
                    found.append(Feature(command.start_line, f"FROM {flag}", (1, 0)))
                continue
            if (keyword, name) == ("RUN", "mount"):
                options = _mount_options(flag)
                kind = options.get("type", "bind")
                later = {key: _MOUNT_OPTIONS[(kind, key)] for key in options if (kind, key) in _MOUNT_OPTIONS}
                label = f"RUN --mount=type={kind}" + "".join(f" with {key}=" for key in later)
                found.append(Feature(command.start_line, label, max([needs, *later.values()])))
            else:
                found.append(Feature(command.start_line, f"{keyword} --{name}", needs))
        if keyword == "FROM" and any(_PLATFORM_ARGS.search(value) for value in command.value):
            found.append(Feature(command.start_line, "a BuildKit platform argument in FROM", (1, 0)))
    return found


def secret_mounts(commands: tuple[parser.Command, ...]) -> list[SecretMount]:
    """Every `RUN --mount=type=secret`: its id (default: the target's file name) and `required`."""
    mounts: list[SecretMount] = []
    for command in commands:
        if command.cmd.upper() != "RUN":
            continue
        for flag in command.flags:
            if flag.lstrip("-").split("=", 1)[0].lower() != "mount" or "=" not in flag:
                continue
            options = _mount_options(flag)
            if options.get("type") != "secret":
                continue
            target = options.get("target") or options.get("dst") or options.get("destination") or ""
            secret_id = options.get("id") or target.rstrip("/").rsplit("/", 1)[-1]
            required = options.get("required", "false").lower() in ("", "true", "1")  # bare `required`
            mounts.append(SecretMount(secret_id, required, command.start_line))
    return mounts


def refusal(path: Path, text: str, support: FrontendSupport) -> Refusal | None:
    """Why `support` cannot build this Dockerfile (`FILE:LINE: feature needs ...`) and the fix, or None.

    Raises ConfigError when the Dockerfile does not parse.
    """
    commands = parse(text, path)
    if support.builder == "buildkit":
        directive = syntax_directive(text)
        if directive is not None:
            line, value = directive
            return Refusal(
                f"{path}:{line}: `# syntax={value}` needs the frontend image {value} fetched from its "
                "registry at build time (outside the freshness hash, impossible offline)",
                f"remove the line to build with the {support.describe}",
            )
    for feature in features(commands):
        if support.builder == "classic":
            return Refusal(
                f"{path}:{feature.line}: {feature.name} needs BuildKit, but {support.describe}",
                support.remedy,
            )
        if support.frontend is not None and feature.needs > support.frontend:
            have = f"{support.frontend[0]}.{support.frontend[1]}"
            return Refusal(
                f"{path}:{feature.line}: {feature.name} needs {version_text(feature.needs)}, but the "
                f"{support.describe} is {have}",
                support.remedy,
            )
    return None

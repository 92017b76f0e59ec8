"""Build secrets: which sources the person running a build gives, and keeping their values out of output.

A secret reaches a build only as a BuildKit secret mount (`RUN --mount=type=secret,id=ID`). Its
source comes from the person running the build, never from a committed file: `--secret
id=ID,src=PATH` or `id=ID,env=VAR` (the docker CLI's syntax), or the `[secrets]` table of the
git-ignored `cascade.local.toml`. A secret's content is never hashed, labelled or logged: this
module only ever holds where a value lives, and `Redactor` masks values in build output.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal

from imagecascade.core.tomlfile import read_toml
from imagecascade.errors import ConfigError

LOCAL_SETTINGS_FILE = "cascade.local.toml"
# BuildKit accepts any id; these are the ids that survive a `--secret id=...,` list and a
# Cloud Build environment variable name unchanged.
SECRET_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
MASK = "****"
# Lines of a multi-line secret shorter than this are not masked on their own: `[global]` in a
# pip.conf would otherwise hide every `[global]` in a log.
_MIN_MASKED_LINE = 10

SecretKind = Literal["file", "env"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class SecretSource:
    """Where one secret's value lives on the machine running the build; never the value itself."""

    id: str
    kind: SecretKind
    location: str  # an absolute file path, or an environment variable name
    origin: str  # "--secret" or the local settings file, for messages

    def cli_value(self) -> str:
        """The `--secret` value the docker CLI takes: `id=ID,src=PATH` or `id=ID,env=VAR`."""
        return f"id={self.id},{'src' if self.kind == 'file' else 'env'}={self.location}"

    def describe(self) -> str:
        return f"{'file ' if self.kind == 'file' else 'environment variable '}{self.location} ({self.origin})"

    def problem(self, environ: Mapping[str, str]) -> str | None:
        """Why this source cannot be read now (missing file, unset variable), or None."""
        if self.kind == "env":
            return None if self.location in environ else f"environment variable {self.location} is not set"
        path = Path(self.location)
        if not path.is_file():
            return f"file {self.location} does not exist"
        if not os.access(path, os.R_OK):
            return f"file {self.location} is not readable"
        return None

    def read(self, environ: Mapping[str, str]) -> bytes:
        """The value, for masking it in output only; raises ConfigError when it cannot be read."""
        if self.kind == "env":
            return environ.get(self.location, "").encode()
        try:
            return Path(self.location).read_bytes()
        except OSError as error:
            raise ConfigError(f"secret {self.id}: cannot read {self.location}: {error.strerror}") from error


def how_to_provide(secret_id: str) -> str:
    return (
        f"pass --secret id={secret_id},src=PATH (or id={secret_id},env=VAR), or set "
        f'{secret_id} = "PATH" under [secrets] in {LOCAL_SETTINGS_FILE}'
    )


def check_id(secret_id: str, where: str) -> str:
    if not SECRET_ID.match(secret_id):
        raise ConfigError(
            f"{where}: secret id {secret_id!r} must be letters, digits, '_', '.' or '-' "
            "(and not start with '.' or '-')"
        )
    return secret_id


def _absolute(path: str, base: Path) -> str:
    expanded = Path(path).expanduser()
    return str(expanded if expanded.is_absolute() else (base / expanded).resolve())


def parse_secret_flag(text: str, cwd: Path) -> SecretSource:
    """One `--secret` value in the docker CLI's syntax: `id=ID,src=PATH`, `id=ID,env=VAR`.

    Also takes `source=` for `src=` and `type=file|env` (with `type=env` and no `env=`, the
    variable named like the id), as docker buildx does. Relative paths are taken from `cwd`.
    Raises ConfigError naming the flag.
    """
    where = f"--secret {text}"
    fields: dict[str, str] = {}
    for part in text.split(","):
        key, equals, value = part.partition("=")
        key = key.strip().lower()
        if not equals or not value or key not in ("id", "src", "source", "env", "type"):
            raise ConfigError(f"{where}: expected id=ID,src=PATH or id=ID,env=VAR (bad field {part!r})")
        if key == "source":
            key = "src"
        if key in fields:
            raise ConfigError(f"{where}: {key} is given twice")
        fields[key] = value
    if "id" not in fields:
        raise ConfigError(f"{where}: missing id= (expected id=ID,src=PATH or id=ID,env=VAR)")
    secret_id = check_id(fields["id"], where)
    kind = fields.get("type")
    if kind not in (None, "file", "env"):
        raise ConfigError(f"{where}: type must be file or env, not {kind!r}")
    if "src" in fields and "env" in fields:
        raise ConfigError(f"{where}: give either src= or env=, not both")
    if (kind == "env" and "src" in fields) or (kind == "file" and "env" in fields):
        raise ConfigError(f"{where}: type={kind} does not go with {'src' if kind == 'env' else 'env'}=")
    if "env" in fields or kind == "env":
        return SecretSource(
            id=secret_id, kind="env", location=fields.get("env", secret_id), origin="--secret"
        )
    if "src" not in fields:
        raise ConfigError(
            f"{where}: say where the value is: id={secret_id},src=PATH or id={secret_id},env=VAR"
        )
    return SecretSource(id=secret_id, kind="file", location=_absolute(fields["src"], cwd), origin="--secret")


def parse_secret_flags(values: Iterable[str], cwd: Path) -> dict[str, SecretSource]:
    sources: dict[str, SecretSource] = {}
    for text in values:
        source = parse_secret_flag(text, cwd)
        if source.id in sources:
            raise ConfigError(f"--secret {text}: secret {source.id} is given twice")
        sources[source.id] = source
    return sources


def load_local_secrets(root: Path) -> dict[str, SecretSource]:
    """The `[secrets]` table of `cascade.local.toml` under `root` (absent file: none).

    Each entry is `ID = "PATH"` (relative to `root`, `~` expanded) or `ID = { src = "PATH" }` or
    `ID = { env = "VAR" }`. The file must not be tracked by git: it says where one person's
    credentials are. Raises ConfigError naming the file.
    """
    path = root / LOCAL_SETTINGS_FILE
    if not path.exists():
        return {}
    if _tracked_by_git(root, LOCAL_SETTINGS_FILE):
        raise ConfigError(
            f"{path}: is committed to git; it names one person's secret sources and must stay local "
            f"(git rm --cached {LOCAL_SETTINGS_FILE} and add it to .gitignore)"
        )
    data = read_toml(path)
    unknown = sorted(set(data) - {"secrets"})
    if unknown:
        raise ConfigError(f"{path}: unknown section [{unknown[0]}] (known: secrets)")
    table = data.get("secrets", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [secrets] must be a table")
    sources: dict[str, SecretSource] = {}
    for secret_id, value in table.items():
        where = f"{path}: secrets.{secret_id}"
        check_id(secret_id, str(path))
        if isinstance(value, str):
            value = {"src": value}
        if not isinstance(value, dict) or len(value) != 1 or not set(value) <= {"src", "env"}:
            raise ConfigError(f'{where}: must be "PATH", {{ src = "PATH" }} or {{ env = "VAR" }}')
        ((key, location),) = value.items()
        if not isinstance(location, str) or not location:
            raise ConfigError(f"{where}: {key} must be a non-empty string")
        if key == "src":
            sources[secret_id] = SecretSource(
                id=secret_id, kind="file", location=_absolute(location, root), origin=LOCAL_SETTINGS_FILE
            )
        else:
            sources[secret_id] = SecretSource(
                id=secret_id, kind="env", location=location, origin=LOCAL_SETTINGS_FILE
            )
    return sources


def _tracked_by_git(root: Path, relative: str) -> bool:
    try:
        done = subprocess.run(
            ["git", "-C", str(root), "ls-files", "--", relative],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and bool(done.stdout.strip())


class Redactor:
    """Masks secret values in text: the whole value and each of its longer lines."""

    def __init__(self, values: Iterable[bytes]) -> None:
        needles: set[str] = set()
        for value in values:
            text = value.decode("utf-8", "replace")
            for candidate in (text, text.strip(), *text.splitlines()):
                candidate = candidate.strip()
                if len(candidate) >= _MIN_MASKED_LINE or (candidate and candidate == text.strip()):
                    needles.add(candidate)
        # Longest first, so a value is masked whole before any of its lines.
        self._needles = sorted(needles, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for needle in self._needles:
            if needle in text:
                text = text.replace(needle, MASK)
        return text

    def __bool__(self) -> bool:
        return bool(self._needles)


# A Secret Manager secret version, as Cloud Build's availableSecrets takes it.
SECRET_VERSION = re.compile(r"^projects/[^/\s]+/secrets/[^/\s]+/versions/[^/\s]+$")


def check_secret_version(secret_id: str, version: object, where: str) -> None:
    """A `[cloudbuild.secrets]` entry: a secret id mapped to `projects/P/secrets/S/versions/V`."""
    check_id(secret_id, where)
    if not isinstance(version, str) or not SECRET_VERSION.match(version):
        raise ConfigError(
            f"{where}.{secret_id} must be a Secret Manager version, "
            f'"projects/PROJECT/secrets/SECRET/versions/VERSION" (VERSION may be latest)'
        )

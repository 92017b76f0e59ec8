"""Python locks declared by `[[python_locks]]` in image.toml: which top-level requirements an image
locks, for which interpreter and platform, and what is installed otherwise.

```toml
[[python_locks]]
requirements = "requirements.txt"      # top-level pins, relative to the image folder
lock = "requirements.lock"             # the full, hash-locked resolution `nox -s lock` writes
python = "3.10"                        # the image's interpreter (X.Y)
platform = "x86_64-manylinux_2_35"     # uv's --python-platform: Ubuntu 22.04 has glibc 2.35
isolated = false                       # true: installed apart (build tools), not on the parent's

# Installed from an input image, never from an index: resolved with this metadata, never locked.
[python_locks.provided.torch]
version = "2.6.0"
requires = ["filelock", "typing-extensions>=4.10.0", "sympy==1.13.1", "networkx", "jinja2", "fsspec"]
```

Pure: reading and checking only. Resolving and checking staleness live in `imagecascade.pins.pylock`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from imagecascade.core.tables import array_of_tables
from imagecascade.errors import ConfigError

_KEYS = ("requirements", "lock", "python", "platform", "isolated", "provided")
_PROVIDED_KEYS = ("version", "requires")
_PYTHON = re.compile(r"^3\.[0-9]{1,2}$")
_PLATFORM = re.compile(r"^[a-z0-9_]+(?:-[a-z0-9_.]+)*$")
_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$")
_VERSION = re.compile(r"^[0-9][0-9A-Za-z.+!-]*$")


def normalize(name: str) -> str:
    """A distribution name as PEP 503 compares it: `Typing_Extensions` → `typing-extensions`."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclasses.dataclass(frozen=True, kw_only=True)
class Provided:
    """A distribution installed from elsewhere (a wheel built by an input image)."""

    name: str
    version: str
    requires: tuple[str, ...]


@dataclasses.dataclass(frozen=True, kw_only=True)
class PythonLock:
    """One top-level requirements file and the lock resolved from it (absolute paths)."""

    requirements: Path
    lock: Path
    python: str
    platform: str
    isolated: bool = False
    provided: tuple[Provided, ...] = ()


def _string(raw: Mapping[str, Any], key: str, where: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: {key} must be a non-empty string")
    return value


def _provided(raw: Any, where: str) -> tuple[Provided, ...]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: provided must be a table of distribution name = {{version, requires}}")
    found = []
    for name, entry in sorted(raw.items()):
        at = f"{where}: provided.{name}"
        if not _NAME.match(name):
            raise ConfigError(f"{at}: {name!r} is not a distribution name")
        if not isinstance(entry, dict):
            raise ConfigError(f"{at} must be a table with version and requires")
        unknown = sorted(set(entry) - set(_PROVIDED_KEYS))
        if unknown:
            raise ConfigError(f"{at}: unknown key {unknown[0]!r} (known: {', '.join(_PROVIDED_KEYS)})")
        version = entry.get("version")
        if not isinstance(version, str) or not _VERSION.match(version):
            raise ConfigError(f'{at}: version must be an exact version such as "2.6.0"')
        requires = entry.get("requires", [])
        if not isinstance(requires, list) or not all(isinstance(item, str) for item in requires):
            raise ConfigError(f"{at}: requires must be a list of requirement strings")
        found.append(Provided(name=normalize(name), version=version, requires=tuple(requires)))
    return tuple(found)


def parse_python_locks(raw: Any, folder: Path, where: str) -> tuple[PythonLock, ...]:
    """Check `[[python_locks]]` of the image in `folder`; `where` prefixes every error message.

    The requirements file must exist; the lock may not yet (`nox -s lock` writes it). Both stay
    inside the image folder, and no two entries write the same lock.
    """
    locks: list[PythonLock] = []
    for at, item in array_of_tables(raw, _KEYS, where, "python_locks"):
        paths = {}
        for key in ("requirements", "lock"):
            relative = _string(item, key, at)
            path = (folder / relative).resolve()
            if folder.resolve() not in path.parents:
                raise ConfigError(f"{at}: {key} {relative!r} is outside the image folder")
            paths[key] = path
        if not paths["requirements"].is_file():
            raise ConfigError(f"{at}: requirements {item['requirements']!r} is missing")
        if paths["requirements"] == paths["lock"]:
            raise ConfigError(f"{at}: lock must be another file than requirements")
        python = _string(item, "python", at)
        if not _PYTHON.match(python):
            raise ConfigError(f'{at}: python {python!r} must be a version X.Y such as "3.10"')
        platform = _string(item, "platform", at)
        if not _PLATFORM.match(platform):
            raise ConfigError(f"{at}: platform {platform!r} is not a platform such as x86_64-manylinux_2_35")
        isolated = item.get("isolated", False)
        if not isinstance(isolated, bool):
            raise ConfigError(f"{at}: isolated must be true or false")
        locks.append(
            PythonLock(
                requirements=paths["requirements"],
                lock=paths["lock"],
                python=python,
                platform=platform,
                isolated=isolated,
                provided=_provided(item.get("provided", {}), at),
            )
        )
    written = [lock.lock for lock in locks]
    for path in written:
        if written.count(path) > 1:
            raise ConfigError(f"{where}: two entries write {path.name}")
    return tuple(locks)


def requirement_lines(text: str) -> list[str]:
    """The requirement lines of a requirements file: comments, blanks and continuations removed.

    Options (`-r`, `--hash`, ...) are kept as they are; hashes after a requirement are dropped.
    """
    joined = re.sub(r"\\\n", " ", text)
    lines = []
    for line in joined.splitlines():
        content = line.split(" #", 1)[0].strip() if not line.lstrip().startswith("#") else ""
        content = re.sub(r"\s+--hash=\S+", "", content).strip()
        if content:
            lines.append(content)
    return lines


def pins(lines: Sequence[str]) -> dict[str, str]:
    """`name==version` requirements (extras and markers dropped) → {normalized name: version}."""
    found = {}
    for line in lines:
        requirement = line.split(";", 1)[0].strip()
        name, separator, version = requirement.partition("==")
        if separator and not line.startswith("-"):
            found[normalize(re.sub(r"\[.*\]", "", name).strip())] = version.strip()
    return found

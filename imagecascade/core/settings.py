"""Repository-wide settings from the committed `cascade.toml`, overridable per command."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from imagecascade.core.secrets import SecretSource, check_id
from imagecascade.errors import ConfigError

SETTINGS_FILE = "cascade.toml"
IMAGES_DIR = "images"
LOCK_FILE = "images.lock.json"
CACHE_DIR = ".cache/imagecascade"
SecretFiles = Literal["warn", "error"]

# section -> key -> (Settings field, type)
_KNOWN: dict[str, dict[str, tuple[str, type]]] = {
    "registry": {"url": ("registry", str)},
    "build": {
        "jobs": ("jobs", int),
        "secret_files": ("secret_files", str),
        "builder": ("builder", str),
        "docker_cli": ("docker_cli", str),
    },
    "cloudbuild": {
        "project": ("cloudbuild_project", str),
        "region": ("cloudbuild_region", str),
        "bucket": ("cloudbuild_bucket", str),
        "secrets": ("cloudbuild_secrets", dict),
    },
}
BUILDERS = ("auto", "buildkit", "classic")
# A Secret Manager secret version, as Cloud Build's availableSecrets takes it.
SECRET_VERSION = re.compile(r"^projects/[^/\s]+/secrets/[^/\s]+/versions/[^/\s]+$")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    """Values every command shares; the empty string means "not configured"."""

    root: Path
    registry: str = ""
    jobs: int = 2
    secret_files: SecretFiles = "warn"  # what a sent file that looks like a credential is
    cloudbuild_project: str = ""
    cloudbuild_region: str = "global"
    cloudbuild_bucket: str = ""
    builder: str = "auto"  # auto | buildkit | classic
    docker_cli: str = ""  # the docker CLI that drives BuildKit; "" = IMAGECASCADE_DOCKER_CLI, else PATH
    # secret id -> Secret Manager version, for builds on Cloud Build
    cloudbuild_secrets: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # secret id -> where its value lives on this machine (--secret, cascade.local.toml); never committed
    secrets: Mapping[str, SecretSource] = dataclasses.field(default_factory=dict)

    @property
    def images_dir(self) -> Path:
        return self.root / IMAGES_DIR

    @property
    def lock_path(self) -> Path:
        return self.root / LOCK_FILE

    @property
    def cache_dir(self) -> Path:
        return self.root / CACHE_DIR

    @property
    def effective_bucket(self) -> str:
        if self.cloudbuild_bucket:
            return self.cloudbuild_bucket
        return f"{self.cloudbuild_project}_cloudbuild" if self.cloudbuild_project else ""

    def with_overrides(self, **overrides: Any) -> Settings:
        """Apply command-line flags; None means the flag was not given."""
        given = {key: value for key, value in overrides.items() if value is not None}
        if "registry" in given:
            given["registry"] = str(given["registry"]).rstrip("/")
        if "builder" in given:
            check_builder(str(given["builder"]), "--builder")
        return dataclasses.replace(self, **given)


def check_builder(value: str, where: str) -> str:
    if value not in BUILDERS:
        raise ConfigError(f"{where}: unknown builder {value!r} (known: {', '.join(BUILDERS)})")
    return value


def check_secret_version(secret_id: str, version: object, where: str) -> None:
    """A `[cloudbuild.secrets]` entry: a secret id mapped to `projects/P/secrets/S/versions/V`."""
    check_id(secret_id, where)
    if not isinstance(version, str) or not SECRET_VERSION.match(version):
        raise ConfigError(
            f"{where}.{secret_id} must be a Secret Manager version, "
            f'"projects/PROJECT/secrets/SECRET/versions/VERSION" (VERSION may be latest)'
        )


def find_root(start: Path) -> Path:
    """The nearest folder at or above `start` holding `cascade.toml` or `images/`."""
    start = start.resolve()
    for folder in (start, *start.parents):
        if (folder / SETTINGS_FILE).is_file() or (folder / IMAGES_DIR).is_dir():
            return folder
    raise ConfigError(f"{start}: no {SETTINGS_FILE} or {IMAGES_DIR}/ here or in any parent folder")


def load_settings(root: Path) -> Settings:
    """Read `cascade.toml` under `root` (absent file: defaults)."""
    path = root / SETTINGS_FILE
    if not path.exists():
        return Settings(root=root)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read: {error}") from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: invalid TOML: {error}") from error
    values: dict[str, Any] = {}
    for section, content in data.items():
        if section not in _KNOWN:
            raise ConfigError(f"{path}: unknown section [{section}] (known: {', '.join(_KNOWN)})")
        if not isinstance(content, dict):
            raise ConfigError(f"{path}: [{section}] must be a table")
        for key, value in content.items():
            if key not in _KNOWN[section]:
                known = ", ".join(_KNOWN[section])
                raise ConfigError(f"{path}: unknown key {section}.{key} (known: {known})")
            field, expected = _KNOWN[section][key]
            if not isinstance(value, expected) or isinstance(value, bool):
                kind = "table" if expected is dict else expected.__name__
                raise ConfigError(f"{path}: {section}.{key} must be a {kind}")
            values[field] = value
    if "registry" in values:
        values["registry"] = values["registry"].rstrip("/")
    if values.get("jobs", 1) < 1:
        raise ConfigError(f"{path}: build.jobs must be at least 1")
    if values.get("secret_files", "warn") not in ("warn", "error"):
        raise ConfigError(f'{path}: build.secret_files must be "warn" or "error"')
    if "builder" in values:
        check_builder(values["builder"], f"{path}: build.builder")
    for secret_id, version in values.get("cloudbuild_secrets", {}).items():
        check_secret_version(secret_id, version, f"{path}: cloudbuild.secrets")
    return Settings(root=root, **values)

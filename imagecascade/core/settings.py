"""Repository-wide settings from the committed `cascade.toml`, overridable per command."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any, Literal

from imagecascade.errors import ConfigError

SETTINGS_FILE = "cascade.toml"
IMAGES_DIR = "images"
LOCK_FILE = "images.lock.json"
CACHE_DIR = ".cache/imagecascade"
SecretFiles = Literal["warn", "error"]

# section -> key -> (Settings field, type)
_KNOWN: dict[str, dict[str, tuple[str, type]]] = {
    "registry": {"url": ("registry", str)},
    "build": {"jobs": ("jobs", int), "secret_files": ("secret_files", str)},
    "cloudbuild": {
        "project": ("cloudbuild_project", str),
        "region": ("cloudbuild_region", str),
        "bucket": ("cloudbuild_bucket", str),
    },
}


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
        return dataclasses.replace(self, **given)


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
                raise ConfigError(f"{path}: {section}.{key} must be a {expected.__name__}")
            values[field] = value
    if "registry" in values:
        values["registry"] = values["registry"].rstrip("/")
    if values.get("jobs", 1) < 1:
        raise ConfigError(f"{path}: build.jobs must be at least 1")
    if values.get("secret_files", "warn") not in ("warn", "error"):
        raise ConfigError(f'{path}: build.secret_files must be "warn" or "error"')
    return Settings(root=root, **values)

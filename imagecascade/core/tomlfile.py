"""Reading the repository's TOML files (cascade.toml, cascade.local.toml, image.toml) in one way."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from imagecascade.errors import ConfigError


def read_toml(path: Path) -> dict[str, Any]:
    """The document at `path`; ConfigError (one line naming the file) when unreadable or not TOML."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read: {error}") from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: invalid TOML: {error}") from error

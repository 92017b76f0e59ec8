"""Arrays of tables in image.toml (`[[artifacts]]`, `[[python_locks]]`): the shape, checked once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from imagecascade.errors import ConfigError


def array_of_tables(
    raw: Any, known: Sequence[str], where: str, name: str
) -> list[tuple[str, dict[str, Any]]]:
    """(`where[index]`, table) for each table of `[[name]]`; ConfigError for another shape or an
    unknown key, naming `where` (the file and the key) and the table's index."""
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        raise ConfigError(f"{where} must be an array of tables ([[{name}]])")
    tables = []
    for index, item in enumerate(raw):
        at = f"{where}[{index}]"
        unknown = sorted(set(item) - set(known))
        if unknown:
            raise ConfigError(f"{at}: unknown key {unknown[0]!r} (known: {', '.join(known)})")
        tables.append((at, item))
    return tables

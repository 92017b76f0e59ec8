"""Upstream bases: where each external `base` tag points now, and rewriting the pins.

A pinned base (`name:tag@sha256:...`) is part of the freshness hash, so repinning a moved tag
rebuilds that lineage and nothing else.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from imagecascade.core.declaration import ImageSpec
from imagecascade.errors import ConfigError


class TagResolver(Protocol):
    def tag_digest(self, reference: str) -> str: ...


@dataclasses.dataclass(frozen=True, kw_only=True)
class UpstreamPin:
    image: str
    declaration: Path
    key: str  # the image.toml key holding the reference: `base`, or a build arg's name
    current: str  # the reference as declared
    latest: str  # `repository:tag@<digest the registry gives now>`

    @property
    def moved(self) -> bool:
        return self.current != self.latest

    def describe(self) -> str:
        old = self.current.partition("@")[2] or "unpinned"
        new = self.latest.partition("@")[2]
        where = "" if self.key == "base" else f" (build arg {self.key})"
        return f"{self.image}{where}: {self.latest.partition('@')[0]} {_short(old)} → {_short(new)}"


def _short(digest: str) -> str:
    return digest[: len("sha256:") + 12] if digest.startswith("sha256:") else digest


def upstream_pins(specs: Mapping[str, ImageSpec], resolver: TagResolver) -> list[UpstreamPin]:
    """One entry per external reference (each `base`, each of `upstream_build_args`), asking its
    registry for the tag's digest."""
    from imagecascade.engines.registry import ImageRef

    pins = []
    for spec in specs.values():
        references = [("base", spec.base)] if spec.base is not None else []
        references += [(key, spec.build_args[key]) for key in spec.upstream_build_args]
        for key, reference in references:
            assert reference is not None
            pins.append(
                UpstreamPin(
                    image=spec.name,
                    declaration=spec.declaration_path,
                    key=key,
                    current=reference,
                    latest=ImageRef.parse(reference).pinned(resolver.tag_digest(reference)),
                )
            )
    return pins


def _line_pattern(key: str) -> re.Pattern[str]:
    return re.compile(
        rf"""^(?P<lead>\s*{re.escape(key)}\s*=\s*)(?P<quote>["'])(?P<value>[^"']*)(?P=quote)(?P<rest>.*)$"""
    )


def rewrite_pin(path: Path, current: str, latest: str, key: str = "base") -> None:
    """Replace the `<key> = "<current>"` line of `path` with `latest`, leaving every other byte alone."""
    line_pattern = _line_pattern(key)
    text = path.read_bytes().decode("utf-8")  # bytes: keep the file's own line endings
    lines = text.splitlines(keepends=True)
    for index, line in enumerate(lines):
        body = line.rstrip("\r\n")
        match = line_pattern.match(body)
        if match and match.group("value") == current:
            ending = line[len(body) :]
            quote = match.group("quote")
            lines[index] = f"{match.group('lead')}{quote}{latest}{quote}{match.group('rest')}{ending}"
            path.write_bytes("".join(lines).encode("utf-8"))
            return
    raise ConfigError(f'{path}: cannot find the line `{key} = "{current}"` to repin (write it on one line)')

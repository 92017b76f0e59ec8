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

from imagecascade.declaration import ImageSpec
from imagecascade.errors import ConfigError


class TagResolver(Protocol):
    def tag_digest(self, reference: str) -> str: ...


@dataclasses.dataclass(frozen=True, kw_only=True)
class UpstreamPin:
    image: str
    declaration: Path
    current: str  # the base as declared
    latest: str  # `repository:tag@<digest the registry gives now>`

    @property
    def moved(self) -> bool:
        return self.current != self.latest

    def describe(self) -> str:
        old = self.current.partition("@")[2] or "unpinned"
        new = self.latest.partition("@")[2]
        return f"{self.image}: {self.latest.partition('@')[0]} {_short(old)} → {_short(new)}"


def _short(digest: str) -> str:
    return digest[: len("sha256:") + 12] if digest.startswith("sha256:") else digest


def upstream_pins(specs: Mapping[str, ImageSpec], resolver: TagResolver) -> list[UpstreamPin]:
    """One entry per image with an external base, asking its registry for the tag's digest."""
    from imagecascade.registry import ImageRef

    pins = []
    for spec in specs.values():
        if spec.base is None:
            continue
        ref = ImageRef.parse(spec.base)
        digest = resolver.tag_digest(spec.base)
        pins.append(
            UpstreamPin(
                image=spec.name,
                declaration=spec.declaration_path,
                current=spec.base,
                latest=ref.pinned(digest),
            )
        )
    return pins


_BASE_LINE = re.compile(
    r"""^(?P<lead>\s*base\s*=\s*)(?P<quote>["'])(?P<value>[^"']*)(?P=quote)(?P<rest>.*)$"""
)


def rewrite_pin(path: Path, current: str, latest: str) -> None:
    """Replace the `base = "<current>"` line of `path` with `latest`, leaving every other byte alone."""
    text = path.read_bytes().decode("utf-8")  # bytes: keep the file's own line endings
    lines = text.splitlines(keepends=True)
    for index, line in enumerate(lines):
        body = line.rstrip("\r\n")
        match = _BASE_LINE.match(body)
        if match and match.group("value") == current:
            ending = line[len(body) :]
            quote = match.group("quote")
            lines[index] = f"{match.group('lead')}{quote}{latest}{quote}{match.group('rest')}{ending}"
            path.write_bytes("".join(lines).encode("utf-8"))
            return
    raise ConfigError(f'{path}: cannot find the line `base = "{current}"` to repin (write it on one line)')

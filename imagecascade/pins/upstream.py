"""Upstream pins: where each external `base` tag points now, what each downloaded artifact is
now, and rewriting the pins.

A pinned base (`name:tag@sha256:...`) and an artifact's SHA-256 build arg are part of the
freshness hash, so repinning rebuilds that lineage and nothing else. After repinning,
`repin` says exactly which entries of the lock file changed, and why.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from imagecascade.core.declaration import ImageSpec, load_images
from imagecascade.core.lock import explain, write_lock
from imagecascade.core.plan import Plan, compute_plan
from imagecascade.core.settings import Settings
from imagecascade.errors import ConfigError
from imagecascade.pins.artifacts import ArtifactPin, Fetch, artifact_pins, download_sha256


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

    @property
    def state(self) -> str:
        """`current`, `unpinned` (no digest recorded yet) or `moved` (the tag points elsewhere now)."""
        if not self.moved:
            return "current"
        return "moved" if "@" in self.current else "unpinned"

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


Pin = UpstreamPin | ArtifactPin


@dataclasses.dataclass(frozen=True, kw_only=True)
class UpstreamReport:
    """What `invoke upstream` found and did."""

    pins: tuple[Pin, ...]  # every external reference and artifact, in image order
    lock_lines: tuple[str, ...] = ()  # after repinning: `image: old → new: why` per moved entry
    lock_written: bool = False  # the lock was current before, so it now records the new hashes
    checked_only: bool = True

    @property
    def changed(self) -> list[Pin]:
        return [pin for pin in self.pins if pin.state != "current"]

    def counts(self) -> str:
        """`1 unpinned, 2 moved`: the changed pins by state."""
        states: dict[str, int] = {}
        for pin in self.changed:
            states[pin.state] = states.get(pin.state, 0) + 1
        return ", ".join(f"{count} {state}" for state, count in sorted(states.items()))


def lock_changes(before: Plan, after: Plan) -> list[str]:
    """`image: old tag → new tag: reasons` for each image whose hash differs between the plans."""
    lines = []
    for image in after.images:
        try:
            old = before.get(image.name)
        except KeyError:
            continue
        if old.hash != image.hash:
            reasons = "; ".join(explain(old.lock_entry(), image.lock_entry()))
            lines.append(f"{image.name}: {old.tag} → {image.tag}: {reasons}")
    return lines


def repin(
    settings: Settings,
    resolver: TagResolver,
    fetch: Fetch = download_sha256,
    *,
    check: bool = False,
) -> UpstreamReport:
    """Ask every registry and download every artifact first, then (unless `check`) rewrite each
    changed pin in its image.toml. Nothing is written when any lookup fails.

    When the lock file was current before, it is rewritten with the new hashes (the repin is then
    the whole change); when it was already stale, it is left alone. Either way the report lists
    exactly the lock entries the repin changed. Raises BackendError (a registry or download
    failed) or ConfigError (no such tag or file, a pin line that cannot be found).
    """
    specs = load_images(settings)
    pins: list[Pin] = [*upstream_pins(specs, resolver), *artifact_pins(specs, fetch)]
    changed = [pin for pin in pins if pin.state != "current"]
    if check or not changed:
        return UpstreamReport(pins=tuple(pins), checked_only=check)
    before = compute_plan(settings)
    for pin in changed:
        rewrite_pin(pin.declaration, pin.current, pin.latest, pin.key)
    after = compute_plan(settings)
    written = before.lock_is_current and write_lock(settings.lock_path, after.lock_entries())
    return UpstreamReport(
        pins=tuple(pins),
        lock_lines=tuple(lock_changes(before, after)),
        lock_written=written,
        checked_only=False,
    )

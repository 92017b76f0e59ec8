"""Values the engine's container verbs return, and the pure helpers that make them.

No docker import: the smoke layer uses these types without loading the docker SDK.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import json
import re
from collections.abc import Iterator
from typing import Any, Literal, Protocol


@dataclasses.dataclass(frozen=True)
class ContainerSummary:
    """A container as a listing shows it."""

    id: str
    labels: dict[str, str]
    state: str


@dataclasses.dataclass(frozen=True)
class PathStat:
    """A path in a container's filesystem: its kind, permission bits (0o7777), size in bytes and,
    for a symlink, its target resolved in the container's root."""

    kind: Literal["file", "dir", "symlink", "other"]
    mode: int
    size: int
    link_target: str | None = None


class PathError(Exception):
    """The engine cannot say what is at a path (a symlink loop, a file used as a folder, ...)."""


# Go's os.FileMode bits, as the archive API reports them.
_GO_MODE_DIR = 1 << 31
_GO_MODE_SYMLINK = 1 << 27
_GO_MODE_SETUID = 1 << 23
_GO_MODE_SETGID = 1 << 22
_GO_MODE_STICKY = 1 << 20
_GO_MODE_TYPE = (1 << 31) | (1 << 27) | (1 << 26) | (1 << 25) | (1 << 24) | (1 << 21) | (1 << 19)


def path_stat_from_archive(header: str) -> PathStat:
    """Decode the archive API's `X-Docker-Container-Path-Stat` header (base64 JSON, Go FileMode)."""
    try:
        found = json.loads(base64.b64decode(header))
        mode = int(found.get("mode", 0))
    except (ValueError, TypeError, AttributeError) as error:
        raise PathError(f"the engine sent an unreadable path stat: {error}") from error
    kind: Literal["file", "dir", "symlink", "other"] = "other"
    if mode & _GO_MODE_DIR:
        kind = "dir"
    elif mode & _GO_MODE_SYMLINK:
        kind = "symlink"
    elif not mode & _GO_MODE_TYPE:
        kind = "file"
    return PathStat(
        kind=kind,
        mode=(mode & 0o777)
        | (0o4000 if mode & _GO_MODE_SETUID else 0)
        | (0o2000 if mode & _GO_MODE_SETGID else 0)
        | (0o1000 if mode & _GO_MODE_STICKY else 0),
        size=int(found.get("size", 0)),
        link_target=str(found.get("linkTarget") or "") or None,
    )


class _Closable(Protocol):
    def __iter__(self) -> Iterator[bytes]: ...

    def close(self) -> None: ...


def read_head(stream: _Closable, limit: int) -> bytes:
    """The first `limit` bytes of a log stream; the rest is not read."""
    kept = bytearray()
    try:
        for chunk in stream:
            kept += chunk[: limit - len(kept)]
            if len(kept) >= limit:
                break
    finally:
        stream.close()
    return bytes(kept)


def read_tail(stream: _Closable, limit: int) -> bytes:
    """The last `limit` bytes of a log stream, holding no more than that (plus one chunk)."""
    chunks: collections.deque[bytes] = collections.deque()
    held = 0
    try:
        for chunk in stream:
            chunks.append(chunk)
            held += len(chunk)
            while held - len(chunks[0]) >= limit:
                held -= len(chunks.popleft())
    finally:
        stream.close()
    return b"".join(chunks)[-limit:] if limit else b""


# The engine names paths on the host (`/var/lib/docker/overlay2/<id>/merged/etc`); show `/etc`.
_HOST_ROOT = re.compile(r"/\S*?/merged(?=/)")


def clean_engine_path(message: str) -> str:
    return _HOST_ROOT.sub("", message)


def engine_message(response: Any) -> str:
    """The `message` of an engine's JSON error answer (a requests response), else its text."""
    try:
        return str(json.loads(response.content).get("message", ""))
    except (ValueError, AttributeError):
        return str(response.text[:500])

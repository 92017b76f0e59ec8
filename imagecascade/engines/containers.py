"""Values the engine's verbs return and raise (images, containers, pushes), and the pure rules
that make them: how a refused build request counts, what an engine error says without its URL.

No docker import: the smoke layer and the backends use these without loading the docker SDK.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import datetime
import json
import re
from collections.abc import Iterator
from typing import Any, Literal, Protocol

from imagecascade.core.backend import BuildError
from imagecascade.core.build_log import shorten
from imagecascade.core.platforms import Platform
from imagecascade.errors import BackendError


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


class PushStopped(Exception):
    """A push given up because the run was cancelled (Ctrl-C, SIGTERM)."""

    def __init__(self, reference: str) -> None:
        super().__init__(f"push of {reference} stopped")
        self.reference = reference


class PushStalled(Exception):
    """A push given up because the engine reported no progress for `seconds`."""

    def __init__(self, reference: str, seconds: float) -> None:
        super().__init__(f"push of {reference} made no progress for {seconds:g} s")
        self.reference = reference
        self.seconds = seconds


@dataclasses.dataclass(frozen=True)
class ImageInfo:
    """What the engine knows about one local image."""

    id: str
    labels: dict[str, str]
    config: dict[str, Any]
    size: int = 0  # bytes, as `docker images` counts them
    platform: Platform | None = None  # its config's Os/Architecture/Variant, normalised
    tags: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class LocalImage:
    """One image in the engine's store, as listed: its tags, labels and creation time (RFC 3339)."""

    id: str
    tags: tuple[str, ...]
    labels: dict[str, str]
    created: str
    size: int = 0  # bytes, layers shared with other images included


def local_images(listing: list[dict[str, Any]]) -> list[LocalImage]:
    """The engine's image listing (`GET /images/json`) as LocalImage values, newest first."""
    images = [
        LocalImage(
            id=str(summary.get("Id", "")),
            tags=tuple(tag for tag in summary.get("RepoTags") or () if tag != "<none>:<none>"),
            labels=dict(summary.get("Labels") or {}),
            created=datetime.datetime.fromtimestamp(int(summary.get("Created") or 0), datetime.UTC)
            .isoformat()
            .replace("+00:00", "Z"),
            size=int(summary.get("Size") or 0),
        )
        for summary in listing
    ]
    return sorted(images, key=lambda image: image.created, reverse=True)


# Build request refusals that belong to the image, not to the engine: its Dockerfile, its size.
IMAGE_FAULTS = {
    400: "the engine refused the build",
    413: "the build request is too large for the engine",
    414: "the build request's URL is too long for the engine (build args and labels travel in it)",
    431: "the build request is too large for the engine (HTTP 431): build args and labels travel in the "
    "request URL, which the engine limits to about 1 MB; put large values in a file of the build context",
}
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+")


def build_refusal(status: int | None, explanation: str) -> BuildError | BackendError:
    """How an engine's refusal of a build request counts: BuildError when it is the image's own
    fault (its Dockerfile, build args too large: HTTP 400, 413, 414, 431), else BackendError."""
    if status == 400:
        return BuildError(f"{IMAGE_FAULTS[400]}: {explanation}")
    if status in IMAGE_FAULTS:
        return BuildError(IMAGE_FAULTS[status])
    return BackendError(f"Docker Engine: cannot build: {explanation}")


def root_cause(error: BaseException) -> str:
    """The innermost OS-level reason (`No such file or directory`), else the error's own words."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        for candidate in (current, *(arg for arg in current.args if isinstance(arg, BaseException))):
            if isinstance(candidate, OSError) and candidate.strerror:
                return candidate.strerror
        nested = [arg for arg in current.args if isinstance(arg, BaseException)]
        current = current.__cause__ or current.__context__ or (nested[0] if nested else None)
    return shorten(without_url(str(error)), 200)


def without_url(text: str) -> str:
    """`text` with every URL replaced by `<url>` (the SDK's errors carry request URLs with build args)."""
    text = _URL.sub("<url>", text)
    return re.sub(r"with url: \S+", "with url: <url>", text)


def split_reference(reference: str) -> tuple[str, str]:
    """`repo[:tag]` → (repo, tag); a colon inside the registry host is not a tag."""
    repository, _, tag = reference.rpartition(":")
    if not repository or "/" in tag:
        return reference, "latest"
    return repository, tag

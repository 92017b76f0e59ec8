"""The tar a builder receives: exactly the hashed entries, and the Dockerfile without leaving it behind.

What COPY sees must be exactly what was hashed. BuildKit reads the Dockerfile apart from the
context, but the classic builder (the local engine's build API, and `docker build` on Cloud Build
without BuildKit) finds it inside the context tar and afterwards drops it, and `.dockerignore`,
only if the tar's own `.dockerignore` excludes them (moby `builder/remotecontext/detect.go`,
`removeDockerfile`, with `MatchesOrParentMatches`). So:

- the Dockerfile is sent under its own path when it is one of the hashed entries;
- otherwise (excluded by the ignore file, or outside the context) it travels as a file that the
  builder drops again: under its own path when excluded, else `.imagecascade.Dockerfile`; next to a
  `.dockerignore` of our own that names both, when the context sends no `.dockerignore`; when it
  does, under a name that file excludes (for the local engine also a name derived from its
  patterns; Cloud Build configs name the file, so there it is one of the first two);
- whatever cannot be made exact this way (a sent `.dockerignore` that excludes itself or the sent
  Dockerfile, possible only with `<Dockerfile>.dockerignore`) is refused with a fix to apply.

Owners, times and permission bits other than the executable bit are normalised.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import os
import posixpath
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Literal

from imagecascade.core.context import ContextEntry, display_path, walk_order
from imagecascade.core.dockerignore import IGNORE_FILE, IgnoreRules, parse_ignore_file
from imagecascade.errors import ConfigError

if TYPE_CHECKING:
    import tarfile

SIDE_DOCKERFILE = ".imagecascade.Dockerfile"
# Every tar member gets the same owner and time: only the hashed facts may reach the image.
TAR_MTIME = 315_532_800  # 1980-01-01, the earliest time every archive tool accepts


@dataclasses.dataclass(frozen=True)
class Packing:
    """How the Dockerfile reaches the builder: its name in the tar, and members added for it."""

    dockerfile_name: str
    extra: tuple[tuple[str, bytes], ...] = ()


def plan_packing(
    context: Path, dockerfile: Path, entries: Sequence[ContextEntry], *, any_side_name: bool = True
) -> Packing:
    """Where the Dockerfile goes in the tar so that the classic builder leaves exactly `entries`.

    `any_side_name` lets the side file take a name derived from the sent `.dockerignore` (the
    local engine, where we pass the name); Cloud Build configs name the file, so they get the
    fixed `.imagecascade.Dockerfile`. Raises ConfigError when no packing is exact.
    """
    try:
        dockerfile_bytes = dockerfile.read_bytes()
    except OSError as error:
        raise ConfigError(f"{dockerfile}: cannot read: {error}") from error
    by_path = {entry.path: entry for entry in entries}
    rules = _sent_ignore_rules(context, by_path.get(IGNORE_FILE))
    if rules is not None and rules.matches_or_parent_matches(IGNORE_FILE):
        raise ConfigError(
            f"{context / IGNORE_FILE}: excludes itself, but the Dockerfile's own ignore file sends it; "
            "the classic builder would then drop it from the image. Remove the line that excludes it"
        )
    relative = dockerfile.relative_to(context).as_posix() if context in dockerfile.parents else None
    sent = by_path.get(relative) if relative else None
    if (
        relative is not None
        and sent is not None
        and sent.kind == "file"
        and sent.digest == hashlib.sha256(dockerfile_bytes).hexdigest()
    ):
        if rules is not None and rules.matches_or_parent_matches(relative):
            raise ConfigError(
                f"{context / IGNORE_FILE}: excludes the Dockerfile {relative}, which its own ignore file "
                "sends; the classic builder would drop it from the image"
            )
        return Packing(relative)
    # Anything sent, and every folder above it, is taken; a side file may sit in a folder that is
    # sent anyway (else dropping it would leave an empty folder behind).
    taken = set(by_path)
    for path in by_path:
        taken.update(_parents(path))
    candidates = [relative] if relative is not None else []
    candidates.append(SIDE_DOCKERFILE)
    if rules is None:
        for name in candidates:
            ignore = _ignore_file_naming(name)
            if _placeable(name, taken) and ignore is not None:
                return Packing(name, ((name, dockerfile_bytes), (IGNORE_FILE, ignore)))
        raise ConfigError(f"{context / SIDE_DOCKERFILE}: this name is reserved for the Dockerfile")
    if any_side_name:
        candidates += _names_excluded_by(rules)
    for name in candidates:
        if _placeable(name, taken) and rules.matches_or_parent_matches(name):
            return Packing(name, ((name, dockerfile_bytes),))
    raise ConfigError(
        f"{context / IGNORE_FILE}: the Dockerfile ({dockerfile}) is not part of the build context, so it "
        f"travels as {SIDE_DOCKERFILE}, which this file must exclude or it would land in the image: "
        f"add a line `{SIDE_DOCKERFILE}`"
    )


def _parents(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[:count]) for count in range(1, len(parts))]


def _placeable(name: str, taken: set[str]) -> bool:
    return name not in taken and all(parent in taken for parent in _parents(name))


def _ignore_file_naming(name: str) -> bytes | None:
    """A `.dockerignore` that excludes itself and `name` (as checked with Docker's rules), or None."""
    escaped = "".join("\\" + char if char in "*?[\\" else char for char in name)
    if escaped.startswith(("#", "!")):
        escaped = "\\" + escaped
    data = f"{IGNORE_FILE}\n{escaped}\n".encode("utf-8", "surrogateescape")
    try:
        rules = IgnoreRules(parse_ignore_file(data, IGNORE_FILE), None)
        exact = rules.matches_or_parent_matches(name) and rules.matches_or_parent_matches(IGNORE_FILE)
    except ConfigError:
        return None
    return data if exact else None


def _sent_ignore_rules(context: Path, entry: ContextEntry | None) -> IgnoreRules | None:
    """The rules the classic builder reads from the `.dockerignore` we send (None: none sent)."""
    if entry is None:
        return None
    path = context / IGNORE_FILE
    if entry.kind != "file":
        raise ConfigError(f"{path}: must be a regular file")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error}") from error
    return IgnoreRules(parse_ignore_file(data, str(path)), path)


def _names_excluded_by(rules: IgnoreRules) -> list[str]:
    """Top-level names the patterns may exclude: each candidate is checked by the caller."""
    names = []
    for pattern in rules.patterns:
        if pattern.exclusion or "[" in pattern.text:
            continue
        for star in ("", "imagecascade-dockerfile"):
            name = pattern.text.replace("**", star).replace("*", star).replace("?", "x").replace("\\", "")
            if name and "/" not in name and name not in (".", ".."):
                names.append(name)
    return names


def write_context_tar(
    context: Path,
    dockerfile: Path,
    entries: Sequence[ContextEntry],
    output: IO[bytes],
    compression: Literal["", "gz"] = "",
    *,
    any_side_name: bool = True,
) -> str:
    """Write exactly `entries` (what was hashed) as a tar; return the Dockerfile's name in it.

    Files are read again and checked against their recorded digest, so a file changed since
    hashing fails the build instead of producing an image whose tag lies. Raises ConfigError.
    """
    import gzip
    import tarfile

    packing = plan_packing(context, dockerfile, entries, any_side_name=any_side_name)
    with contextlib.ExitStack() as stack:
        stream: IO[bytes] | gzip.GzipFile = output
        if compression == "gz":
            # mtime=0: the same entries give the same bytes, so an upload is recognisably the same.
            stream = stack.enter_context(gzip.GzipFile(fileobj=output, mode="wb", mtime=0))
        archive = stack.enter_context(tarfile.open(fileobj=stream, mode="w", format=tarfile.PAX_FORMAT))
        written_folders: set[str] = set()

        def add_folders(path: str) -> None:
            missing = []
            while path and path not in written_folders:
                missing.append(path)
                path = posixpath.dirname(path)
            for folder in reversed(missing):
                archive.addfile(_tar_info(folder, tarfile.DIRTYPE, 0o755))
                written_folders.add(folder)

        # Walk order, so that the first name of a hard link is written before the others.
        for entry in sorted(entries, key=lambda item: walk_order(item.path)):
            add_folders(posixpath.dirname(entry.path))
            if entry.kind == "dir":
                add_folders(entry.path)
            elif entry.kind in ("link", "hardlink"):
                kind = tarfile.SYMTYPE if entry.kind == "link" else tarfile.LNKTYPE
                info = _tar_info(entry.path, kind, 0o777 if entry.kind == "link" else _mode(entry))
                info.linkname = entry.digest
                archive.addfile(info)
            else:
                _add_verified_file(archive, context / entry.path, entry)
        for name, data in packing.extra:
            info = _tar_info(name, tarfile.REGTYPE, 0o644)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return packing.dockerfile_name


def _mode(entry: ContextEntry) -> int:
    return 0o755 if entry.executable else 0o644


def _tar_info(name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
    import tarfile

    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = TAR_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


class _HashingReader(io.RawIOBase):
    """Reads a file for tarfile while hashing what was read."""

    def __init__(self, handle: IO[bytes]) -> None:
        self._handle = handle
        self.hash = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        self.hash.update(data)
        return data


def _add_verified_file(archive: tarfile.TarFile, path: Path, entry: ContextEntry) -> None:
    import tarfile

    shown = display_path(str(path))
    changed = ConfigError(f"{shown}: changed after its freshness hash was computed; run again")
    try:
        with open(path, "rb") as handle:
            info = _tar_info(entry.path, tarfile.REGTYPE, _mode(entry))
            info.size = os.fstat(handle.fileno()).st_size
            reader = _HashingReader(handle)
            try:
                archive.addfile(info, reader)
            except OSError as error:  # tarfile's "unexpected end of data": the file shrank
                raise changed from error
    except OSError as error:
        raise ConfigError(f"{shown}: cannot read: {error}") from error
    if reader.hash.hexdigest() != entry.digest:
        raise changed

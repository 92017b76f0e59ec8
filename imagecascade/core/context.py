"""The build context Docker would send: its files after .dockerignore, and the tar we send.

Patterns follow the docker CLI: `<Dockerfile>.dockerignore` next to the Dockerfile replaces the
context's `.dockerignore`; lines are trimmed, `#` lines skipped, `!` re-includes, each pattern is
cleaned and anchored at the context root, the last matching pattern wins, a match on a folder
covers everything below it, and the Dockerfile and .dockerignore are always sent. The matching
itself is pathspec's gitignore engine, whose `*`, `?`, `[...]` and `**` agree with Docker's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import posixpath
import re
import stat as stat_module
from pathlib import Path
from typing import IO, TYPE_CHECKING, Literal, NamedTuple

import pathspec

from imagecascade.core.digest_cache import DigestCache, file_digest
from imagecascade.errors import ConfigError

if TYPE_CHECKING:
    import concurrent.futures
    import tarfile

EntryKind = Literal["file", "link", "dir"]
# Every tar member gets the same owner and time: only the hashed facts may reach the image.
TAR_MTIME = 315_532_800  # 1980-01-01, the earliest time every archive tool accepts


class ContextEntry(NamedTuple):
    """One sent entry. A named tuple: a large context makes tens of thousands of them."""

    path: str  # POSIX path relative to the context root
    kind: EntryKind
    executable: bool = False
    digest: str = ""  # sha256 for files, the target for links, "" for folders

    def describe(self) -> str:
        """One short string per entry, as recorded in the lock file."""
        if self.kind == "file":
            return f"{'exec' if self.executable else 'file'} {self.digest}"
        if self.kind == "link":
            return f"link {self.digest}"
        return "dir"


@dataclasses.dataclass(frozen=True)
class IgnoreRules:
    """Compiled patterns in file order: (regex, True for exclude / False for `!` exception)."""

    patterns: tuple[tuple[re.Pattern[str], bool], ...]
    exceptions: tuple[str, ...]  # the cleaned text of each `!` pattern
    source: Path | None

    def last_match(self, relative: str, inherited: int) -> int:
        """Index of the last pattern matching `relative` or a folder above it (-1: none).

        `inherited` is that index for the enclosing folder: Docker applies a pattern that
        matches a folder to everything below it, and only the last match decides.
        """
        for index in range(len(self.patterns) - 1, inherited, -1):
            if self.patterns[index][0].match(relative):
                return index
        return inherited

    def excluded(self, last_match: int) -> bool:
        return last_match >= 0 and self.patterns[last_match][1]

    def may_reinclude_below(self, folder: str) -> bool:
        """Docker descends into an excluded folder only if an exception's text starts with it."""
        prefix = folder + "/"
        return any((text + "/").startswith(prefix) for text in self.exceptions)


def ignore_file_for(context: Path, dockerfile: Path) -> Path | None:
    specific = dockerfile.with_name(dockerfile.name + ".dockerignore")
    if specific.is_file():
        return specific
    general = context / ".dockerignore"
    return general if general.is_file() else None


def _docker_patterns(lines: list[str]) -> list[tuple[bool, str]]:
    """(is_exception, cleaned pattern) exactly as the docker CLI's ignorefile reader yields them."""
    patterns: list[tuple[bool, str]] = []
    for line in lines:
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        exception = pattern.startswith("!")
        if exception:
            pattern = pattern[1:].strip()
            if not pattern:
                continue
        pattern = posixpath.normpath(pattern)
        if len(pattern) > 1 and pattern.startswith("/"):
            pattern = pattern.lstrip("/") or "/"
        patterns.append((exception, pattern))
    return patterns


def load_ignore_rules(context: Path, dockerfile: Path) -> IgnoreRules:
    source = ignore_file_for(context, dockerfile)
    lines: list[str] = []
    if source is not None:
        try:
            lines = source.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"{source}: cannot read: {error}") from error
    patterns = _docker_patterns(lines)
    # The CLI always sends the Dockerfile and .dockerignore, whatever the patterns say.
    keep = [".dockerignore"]
    if context in dockerfile.parents:
        keep.append(dockerfile.relative_to(context).as_posix())
    patterns += [(True, path) for path in keep]
    gitwild: list[str] = []
    for exception, pattern in patterns:
        anchored = "/**" if pattern in (".", "/") else "/" + pattern
        gitwild.append(("!" if exception else "") + anchored)
    compiled: list[tuple[re.Pattern[str], bool]] = []
    for compiled_pattern in pathspec.PathSpec.from_lines("gitignore", gitwild).patterns:
        regex = getattr(compiled_pattern, "regex", None)
        if regex is not None:  # None only for lines pathspec drops (never after cleaning)
            compiled.append((regex, bool(compiled_pattern.include)))
    return IgnoreRules(
        patterns=tuple(compiled),
        exceptions=tuple(pattern for exception, pattern in patterns if exception),
        source=source,
    )


def scan_context(
    context: Path,
    dockerfile: Path,
    cache: DigestCache | None = None,
    skip: frozenset[str] = frozenset(),
) -> list[ContextEntry]:
    """Every entry of the context that Docker would send, sorted by path.

    Folders are listed only when nothing below them is sent (empty folders count); `skip` holds
    absolute paths never sent (this tool's own files).
    """
    rules = load_ignore_rules(context, dockerfile)
    files: list[tuple[str, os.stat_result, str]] = []
    others: list[ContextEntry] = []
    hasher = _Hasher(cache)

    def visit(folder: str, relative: str, inherited: int) -> bool:
        """Walk one folder; True when anything below it is sent."""
        try:
            with os.scandir(folder) as iterator:
                entries = list(iterator)  # any order: the result is sorted once at the end
        except OSError as error:
            raise ConfigError(f"{folder}: cannot read folder: {error}") from error
        sent = False
        for entry in entries:
            if entry.path in skip:
                continue
            child = relative + entry.name
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError as error:
                raise ConfigError(f"{entry.path}: cannot stat: {error}") from error
            last = rules.last_match(child, inherited)
            excluded = rules.excluded(last)
            mode = info.st_mode
            if stat_module.S_ISDIR(mode):
                if excluded and not rules.may_reinclude_below(child):
                    continue  # Docker does not descend: nothing below can be re-included
                filled = visit(entry.path, child + "/", last)
                if not excluded and not filled:
                    others.append(ContextEntry(child, "dir"))
                sent = sent or filled or not excluded
            elif excluded:
                continue
            elif stat_module.S_ISREG(mode):
                files.append((child, info, entry.path))
                hasher.add(entry.path, info)
                sent = True
            elif stat_module.S_ISLNK(mode):
                others.append(ContextEntry(child, "link", digest=os.readlink(entry.path)))
                sent = True
            # sockets, fifos and devices cannot be sent by Docker either; they are left out
        return sent

    visit(str(context), "", -1)
    digests = hasher.finish()
    result = [
        ContextEntry(relative, "file", bool(info.st_mode & 0o111), digests[path])
        for relative, info, path in files
    ]
    result += others
    result.sort(key=lambda entry: entry.path)
    return result


class _Hasher:
    """Digests files while the walk goes on: cache hits at once, large files on worker threads.

    Measured on 2 cores: a worker thread hashing the large files (hashlib and reads release the
    GIL there) while the main thread walks and hashes the small ones beats one thread by ~25%;
    threads for small files lose, since their cost is GIL-bound syscall overhead. Contexts
    without large files (the pre-commit hook's usual case) never start a thread.
    """

    LARGE = 1024 * 1024

    def __init__(self, cache: DigestCache | None) -> None:
        self._cache = cache
        self._digests: dict[str, str] = {}
        self._small: list[tuple[str, os.stat_result]] = []
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._pending: list[concurrent.futures.Future[list[tuple[str, os.stat_result, str]]]] = []

    def add(self, path: str, info: os.stat_result) -> None:
        cached = self._cache.lookup(path, info) if self._cache is not None else None
        if cached is not None:
            self._digests[path] = cached
        elif info.st_size < self.LARGE:
            self._small.append((path, info))
        else:
            if self._pool is None:
                import concurrent.futures  # here: the hook's warm path never needs it

                workers = max(1, min(3, (os.cpu_count() or 1) - 1))
                self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers)
            self._pending.append(self._pool.submit(_hash_batch, [(path, info)]))

    def finish(self) -> dict[str, str]:
        """Every added file's digest, by absolute path."""
        try:
            hashed = _hash_batch(self._small)
            for future in self._pending:
                hashed += future.result()
        finally:
            if self._pool is not None:
                self._pool.shutdown(cancel_futures=True)
        for path, info, digest in hashed:
            self._digests[path] = digest
            if self._cache is not None:
                self._cache.store(path, info, digest)
        return self._digests


def _hash_batch(batch: list[tuple[str, os.stat_result]]) -> list[tuple[str, os.stat_result, str]]:
    hashed = []
    for path, info in batch:
        try:
            hashed.append((path, info, file_digest(path)))
        except OSError as error:
            raise ConfigError(f"{path}: cannot read: {error}") from error
    return hashed


def dockerfile_name_in_tar(context: Path, dockerfile: Path) -> str:
    """Where the Dockerfile sits in the tar: its own path inside the context, else a side file."""
    if context in dockerfile.parents:
        return dockerfile.relative_to(context).as_posix()
    digest = hashlib.sha256(str(dockerfile).encode()).hexdigest()[:16]
    return f".dockerfile.{digest}"


def write_context_tar(
    context: Path,
    dockerfile: Path,
    entries: list[ContextEntry],
    output: IO[bytes],
    compression: Literal["", "gz"] = "",
) -> str:
    """Write exactly `entries` (what was hashed) as a tar; return the Dockerfile's name in it.

    Owners, times and permission bits other than the executable bit are normalised, so what
    reaches the engine is the hashed content and nothing else. Files are read again here and
    checked against their recorded digest, so a file changed since hashing fails the build
    instead of producing an image whose tag lies.
    """
    # Imported here: hashing alone (the pre-commit hook) never writes a tar.
    import contextlib
    import gzip
    import tarfile

    dockerfile_name = dockerfile_name_in_tar(context, dockerfile)
    with contextlib.ExitStack() as stack:
        stream: IO[bytes] | gzip.GzipFile = output
        if compression == "gz":
            # mtime=0: the same entries give the same bytes, so an upload is recognisably the same.
            stream = stack.enter_context(gzip.GzipFile(fileobj=output, mode="wb", mtime=0))
        archive = stack.enter_context(tarfile.open(fileobj=stream, mode="w", format=tarfile.PAX_FORMAT))
        written_folders: set[str] = set()

        def add_folder(path: str) -> None:
            if not path or path in written_folders:
                return
            add_folder(posixpath.dirname(path))
            info = _tar_info(path, tarfile.DIRTYPE, 0o755)
            archive.addfile(info)
            written_folders.add(path)

        for entry in entries:
            add_folder(posixpath.dirname(entry.path))
            if entry.kind == "dir":
                add_folder(entry.path)
            elif entry.kind == "link":
                info = _tar_info(entry.path, tarfile.SYMTYPE, 0o777)
                info.linkname = entry.digest
                archive.addfile(info)
            else:
                _add_verified_file(archive, context / entry.path, entry)
        if context not in dockerfile.parents:
            data = dockerfile.read_bytes()
            info = _tar_info(dockerfile_name, tarfile.REGTYPE, 0o644)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return dockerfile_name


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

    changed = ConfigError(f"{path}: changed after its freshness hash was computed; run again")
    try:
        with open(path, "rb") as handle:
            info = _tar_info(entry.path, tarfile.REGTYPE, 0o755 if entry.executable else 0o644)
            info.size = os.fstat(handle.fileno()).st_size
            reader = _HashingReader(handle)
            try:
                archive.addfile(info, reader)
            except OSError as error:  # tarfile's "unexpected end of data": the file shrank
                raise changed from error
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error}") from error
    if reader.hash.hexdigest() != entry.digest:
        raise changed

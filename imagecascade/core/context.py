"""The build context BuildKit would send: the entries left after the ignore file, and their digests.

Which paths are sent follows `dockerignore` (a port of Docker's own matcher and BuildKit's walk).
Every kind of name is handled: paths are `os.fsdecode`d (bytes that are not UTF-8 become
`surrogateescape` characters and go back to the same bytes), the walk is iterative (any depth),
and files that share an inode are sent as hard links, as Docker does: one copy in the layer.
The tar written from these entries lives in `context_tar`.
"""

from __future__ import annotations

import os
import stat as stat_module
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple

from imagecascade.core.digest_cache import DigestCache, file_digest
from imagecascade.core.dockerignore import IgnoreRules, MatchInfo, load_ignore_rules
from imagecascade.errors import ConfigError

if TYPE_CHECKING:
    import concurrent.futures

EntryKind = Literal["file", "link", "hardlink", "dir"]


class ContextEntry(NamedTuple):
    """One sent entry. A named tuple: a large context makes tens of thousands of them."""

    path: str  # POSIX path relative to the context root (surrogateescape for non-UTF-8 bytes)
    kind: EntryKind
    executable: bool = False
    # sha256 for files, the target for symbolic links, the first path of the same inode for hard
    # links (in walk order), "" for folders
    digest: str = ""

    def describe(self) -> str:
        """One short string per entry, as recorded in the lock file: `<kind> <detail>`."""
        if self.kind == "file":
            return f"{'exec' if self.executable else 'file'} {self.digest}"
        if self.kind == "link":
            return f"link {self.digest}"
        if self.kind == "hardlink":
            return f"hardlink {self.digest}"
        return "dir"


def walk_order(path: str) -> tuple[bytes, ...]:
    """Sort key giving Go's `filepath.WalkDir` order: depth first, names by their bytes."""
    return tuple(os.fsencode(path).split(b"/"))


def display_path(path: str) -> str:
    """A path fit to print: bytes that are not UTF-8 shown as `\\xNN`."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def scan_context(
    context: Path,
    dockerfile: Path,
    cache: DigestCache | None = None,
    skip: frozenset[str] = frozenset(),
) -> list[ContextEntry]:
    """Every entry of `context` that BuildKit would send when building `dockerfile`, sorted by path.

    Folders are listed only when nothing below them is sent (empty folders count); `skip` holds
    absolute paths never sent (this tool's own files). Raises ConfigError for an unreadable
    folder or file that would be sent, and for an ignore file Docker would refuse.
    """
    walk = _Walk(load_ignore_rules(context, dockerfile), _Hasher(cache), skip)
    walk.run(str(context))
    return walk.entries()


class _Walk:
    """BuildKit's walk (fsutil filter.go) over one context, iterative so that any depth works."""

    def __init__(self, rules: IgnoreRules, hasher: _Hasher, skip: frozenset[str]) -> None:
        self._rules = rules
        self._hasher = hasher
        self._skip = skip
        self._files: list[tuple[str, os.stat_result, str]] = []  # (relative, stat, absolute)
        self._links: list[ContextEntry] = []
        self._folders: list[str] = []  # not excluded: listed unless something below is sent
        self._filled: set[str] = set()  # folders with something sent below them
        # Folders holding one of this tool's own files (never sent): such a folder with nothing
        # else in it counts as absent, so the tool's output never moves a hash.
        self._hold_skipped: set[str] = set()
        self._inodes: dict[tuple[int, int], list[str]] = {}  # names of files with st_nlink > 1

    def run(self, root: str) -> None:
        rules = self._rules
        matching = bool(rules.patterns)
        # (absolute folder, relative prefix, the folder's MatchInfo, is the folder excluded)
        pending: list[tuple[str, str, MatchInfo | None, bool]] = [(root, "", None, False)]
        while pending:
            folder, prefix, parent_info, folder_excluded = pending.pop()
            try:
                with os.scandir(folder) as iterator:
                    entries = list(iterator)
            except OSError as error:
                if folder_excluded:
                    continue  # BuildKit skips unreadable folders that are not sent themselves
                raise ConfigError(f"{display_path(folder)}: cannot read folder: {error}") from error
            sent_here = False
            for entry in entries:
                if entry.path in self._skip:
                    self._hold_skipped.add(prefix[:-1])
                    continue
                relative = prefix + entry.name
                try:
                    info = entry.stat(follow_symlinks=False)
                except OSError as error:
                    raise ConfigError(f"{display_path(entry.path)}: cannot stat: {error}") from error
                mode = info.st_mode
                if stat_module.S_ISDIR(mode):
                    excluded, match_info = rules.matches(relative, parent_info) if matching else (False, None)
                    if not excluded:
                        self._folders.append(relative)
                        sent_here = True  # the folder itself, or what is below it
                    elif not rules.may_include_below(relative):
                        continue  # BuildKit does not enter it: nothing below can be re-included
                    pending.append((entry.path, relative + "/", match_info, excluded))
                elif matching and rules.excludes(relative, parent_info):
                    continue
                elif stat_module.S_ISREG(mode):
                    sent_here = True
                    if info.st_nlink > 1 and self._another_name(info, relative):
                        continue  # the same bytes: hashed once, sent as a hard link
                    self._files.append((relative, info, entry.path))
                    self._hasher.add(entry.path, info)
                elif stat_module.S_ISLNK(mode):
                    sent_here = True
                    self._links.append(ContextEntry(relative, "link", digest=_read_link(entry.path)))
                # sockets, fifos and devices are left out (a build context has no use for them)
            if sent_here:
                self._fill(prefix[:-1])

    def _another_name(self, info: os.stat_result, relative: str) -> bool:
        names = self._inodes.setdefault((info.st_dev, info.st_ino), [])
        names.append(relative)
        return len(names) > 1

    def _fill(self, folder: str) -> None:
        while folder and folder not in self._filled:
            self._filled.add(folder)
            folder = folder.rpartition("/")[0]

    def entries(self) -> list[ContextEntry]:
        digests = self._hasher.finish()
        result: list[ContextEntry] = []
        for relative, info, absolute in self._files:
            executable = bool(info.st_mode & 0o111)
            names = self._inodes[(info.st_dev, info.st_ino)] if info.st_nlink > 1 else ()
            if len(names) <= 1:
                result.append(ContextEntry(relative, "file", executable, digests[absolute]))
                continue
            # The first name in Go's walk order holds the bytes, as in the tar BuildKit sends.
            first, *others = sorted(names, key=walk_order)
            result.append(ContextEntry(first, "file", executable, digests[absolute]))
            result += [ContextEntry(name, "hardlink", executable, first) for name in others]
        result += self._links
        left_out = self._filled | self._hold_skipped
        result += [ContextEntry(path, "dir") for path in self._folders if path not in left_out]
        result.sort(key=lambda entry: entry.path)
        return result


def _read_link(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError as error:
        raise ConfigError(f"{display_path(path)}: cannot read link: {error}") from error


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
            raise ConfigError(f"{display_path(path)}: cannot read: {error}") from error
    return hashed

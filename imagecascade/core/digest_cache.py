"""A per-file content digest cache keyed on stat data, the way git's index avoids rehashing.

An entry is reused only when size, mtime_ns, inode and ctime_ns all match. Racy-timestamp guard:
a file whose mtime is too close to the moment it was hashed is not cached, because a later
write within the same timestamp tick could leave all four values unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

# Coarsest mtime granularity we expect on a checkout's filesystem (FAT-like: 2 s).
RACY_WINDOW_NS = 2_000_000_000
# Entries are flat strings "size mtime_ns ino ctime_ns digest": ten thousand small lists would
# keep the cyclic garbage collector busy for a good part of a warm run.
_FORMAT = 2


def file_digest(path: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


class DigestCache:
    """Maps absolute file paths to their sha256, trusting stat data only when safe."""

    def __init__(self, location: Path | None) -> None:
        self._location = location
        self._entries: dict[str, str] = {}
        self._fresh: dict[str, str] = {}
        self._dirty = False
        self._started_ns = time.time_ns()
        if location is not None:
            self._entries = self._read(location)

    @staticmethod
    def _read(location: Path) -> dict[str, str]:
        try:
            data = json.loads(location.read_bytes())
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            return {}
        entries = data.get("entries")
        return entries if isinstance(entries, dict) else {}

    @staticmethod
    def _key(stat: os.stat_result) -> str:
        return f"{stat.st_size} {stat.st_mtime_ns} {stat.st_ino} {stat.st_ctime_ns} "

    def lookup(self, path: str, stat: os.stat_result) -> str | None:
        entry = self._entries.get(path)
        if entry is None:
            return None
        key = self._key(stat)
        if not entry.startswith(key):
            return None
        self._fresh[path] = entry
        return entry[len(key) :]

    def store(self, path: str, stat: os.stat_result, digest: str) -> None:
        if self._started_ns - stat.st_mtime_ns < RACY_WINDOW_NS:
            return  # racily clean: hash it again next time
        self._fresh[path] = self._key(stat) + digest
        self._dirty = True

    def digest(self, path: str, stat: os.stat_result) -> str:
        cached = self.lookup(path, stat)
        if cached is not None:
            return cached
        digest = file_digest(path)
        self.store(path, stat, digest)
        return digest

    def save(self) -> None:
        """Write the entries used in this run (entries of vanished files are dropped)."""
        if self._location is None:
            return
        if not self._dirty and len(self._fresh) == len(self._entries):
            return
        try:
            self._location.parent.mkdir(parents=True, exist_ok=True)
            temporary = self._location.with_suffix(f".{os.getpid()}.tmp")
            temporary.write_text(
                json.dumps({"format": _FORMAT, "entries": self._fresh}, separators=(",", ":")),
                encoding="utf-8",
            )
            os.replace(temporary, self._location)
        except OSError:
            pass  # a cache that cannot be written only costs time

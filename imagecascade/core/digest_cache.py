"""A per-file content digest cache keyed on stat data, the way git's index avoids rehashing.

An entry is reused only when size, mtime_ns, inode and ctime_ns all match. Racy-timestamp guard:
a file whose mtime is too close to the moment it was hashed is not cached, because a later
write within the same timestamp tick could leave all four values unchanged.

The cache can only cost time, never give a wrong hash: the file carries a sha256 of its entries
and every entry is checked for shape; a file that fails either (edited, truncated, merged, written
by something else) is dropped whole, with one warning, and the files are hashed again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path

from imagecascade.core.workdirs import ensure_private_dir

# Coarsest mtime granularity we expect on a checkout's filesystem (FAT-like: 2 s).
RACY_WINDOW_NS = 2_000_000_000
# Entries are flat strings "size mtime_ns ino ctime_ns digest": ten thousand small lists would
# keep the cyclic garbage collector busy for a good part of a warm run. The file is a header line
# `{"format": 3, "sha256": <of the rest>}` followed by the entries as one JSON object.
_FORMAT = 3
_ENTRY = re.compile(r"\d+ -?\d+ \d+ -?\d+ [0-9a-f]{64}")


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
        self.warning: str | None = None  # set when a damaged cache file was discarded
        if location is not None:
            self._entries, self.warning = self._read(location)
            self._dirty = self.warning is not None  # rewrite a damaged file even if nothing changes

    @staticmethod
    def _read(location: Path) -> tuple[dict[str, str], str | None]:
        """(entries, None), or ({}, why the file was discarded); an absent or older cache is no news."""
        try:
            content = location.read_bytes()
        except FileNotFoundError:
            return {}, None
        except OSError as error:
            return {}, _discarded(location, f"cannot read it ({error.strerror})")
        header_text, newline, body = content.partition(b"\n")
        try:
            header = json.loads(header_text)
        except ValueError:
            header = None
        if isinstance(header, dict) and isinstance(header.get("format"), int) and header["format"] < _FORMAT:
            return {}, None  # written by an older version: simply rebuilt
        if not isinstance(header, dict) or header.get("format") != _FORMAT or not newline:
            return {}, _discarded(location, "not a digest cache this version wrote")
        if header.get("sha256") != hashlib.sha256(body).hexdigest():
            return {}, _discarded(location, "its checksum does not match its entries (edited or damaged)")
        try:
            entries = json.loads(body)
        except ValueError:
            return {}, _discarded(location, "its entries are not valid JSON")
        if not isinstance(entries, dict) or not all(
            isinstance(value, str) and _ENTRY.fullmatch(value) for value in entries.values()
        ):
            return {}, _discarded(location, "an entry has the wrong shape")
        return entries, None

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
            ensure_private_dir(self._location.parent)
            temporary = self._location.with_suffix(f".{os.getpid()}.tmp")
            body = json.dumps(self._fresh, separators=(",", ":")).encode()
            header = json.dumps({"format": _FORMAT, "sha256": hashlib.sha256(body).hexdigest()})
            temporary.write_bytes(header.encode() + b"\n" + body)
            os.replace(temporary, self._location)
        except OSError:
            pass  # a cache that cannot be written only costs time


def _discarded(location: Path, why: str) -> str:
    return f"{location}: {why}; discarded, every file is hashed again"

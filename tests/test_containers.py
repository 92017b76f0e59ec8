"""The engine's docker-free helpers: archive stats as this engine sends them, bounded log reading."""

from __future__ import annotations

import base64
import json

import pytest

from imagecascade.engines.containers import (
    PathError,
    PathStat,
    clean_engine_path,
    path_stat_from_archive,
    read_head,
    read_tail,
)


def header(**stat: object) -> str:
    return base64.b64encode(json.dumps(stat).encode()).decode()


# Modes as Docker 20.10 sent them here (Go's os.FileMode: type bits high, permissions low).
@pytest.mark.parametrize(
    ("mode", "link", "expected"),
    [
        (420, "", PathStat("file", 0o644, 3)),
        (484, "", PathStat("file", 0o744, 3)),
        (2147484141, "", PathStat("dir", 0o755, 3)),
        (134218239, "/secret/config.json", PathStat("symlink", 0o777, 3, "/secret/config.json")),
        (69206454, "", PathStat("other", 0o666, 3)),  # /dev/null: a character device
        ((1 << 23) | 0o755, "", PathStat("file", 0o4755, 3)),  # setuid
        ((1 << 31) | (1 << 20) | 0o777, "", PathStat("dir", 0o1777, 3)),  # sticky /tmp
    ],
)
def test_path_stat_from_archive(mode: int, link: str, expected: PathStat) -> None:
    assert path_stat_from_archive(header(name="x", size=3, mode=mode, linkTarget=link)) == expected


def test_an_unreadable_stat_is_a_path_error() -> None:
    with pytest.raises(PathError, match="unreadable path stat"):
        path_stat_from_archive("not base64 json")


def test_engine_paths_are_shown_as_the_container_sees_them() -> None:
    message = "lstat /var/lib/docker/overlay2/fefe96bad31/merged/secret/config.json/x: not a directory"
    assert clean_engine_path(message) == "lstat /secret/config.json/x: not a directory"


class Stream:
    """A log stream as the SDK hands it out: chunks, and close()."""

    def __init__(self, chunks: int, size: int) -> None:
        self.chunks, self.size, self.read, self.closed = chunks, size, 0, False

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> bytes:
        if self.read == self.chunks:
            raise StopIteration
        self.read += 1
        return bytes([self.read % 256]) * self.size

    def close(self) -> None:
        self.closed = True


def test_read_head_stops_reading_at_the_limit() -> None:
    stream = Stream(chunks=10**9, size=1000)  # a stream without end
    assert read_head(stream, 2500) == b"\x01" * 1000 + b"\x02" * 1000 + b"\x03" * 500
    assert stream.read == 3 and stream.closed


def test_read_tail_keeps_only_the_end() -> None:
    stream = Stream(chunks=10_000, size=1000)  # 10 MB, of which 2.5 kB are kept
    tail = read_tail(stream, 2500)
    assert tail == bytes([9998 % 256]) * 500 + bytes([9999 % 256]) * 1000 + bytes([10_000 % 256]) * 1000
    assert stream.closed

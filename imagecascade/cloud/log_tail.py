"""A Cloud Build log tailed from its Cloud Storage bucket; it never decides a build's fate.

Cloud Build writes `log-<build id>.txt` into the build's `logsBucket` (`gs://bucket/prefix` puts
it under the prefix) as the build runs; ranged reads from the last offset stream it. A log that
cannot be read (connection errors, an expired token, no permission on a user-chosen bucket) is
one warning line, and reading is tried again at every poll; the build's own status decides the
image. A transient failure (a reset, a 503) is only retried at the next poll; a failure that
persists or is not transient is reported once. With `CLOUD_LOGGING_ONLY` (or `NONE`) there is no
object to read: the reader says where the log is (the build's `logUrl`) instead.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from typing import Literal

from imagecascade.cloud.cloudbuild_api import RemoteBuild
from imagecascade.cloud.gcs import CloudStorage
from imagecascade.cloud.retry import describe_error, is_transient
from imagecascade.core.build_options import NO_BUCKET_LOGGING

LineKind = Literal["log", "state"]
FINAL_READS = 20  # reads of the rest of the log once a build has finished
PATIENCE = 5  # transient read failures in a row before the warning


class LogTail:
    def __init__(self, storage: CloudStorage, tail_lines: int) -> None:
        self._storage = storage
        self.tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
        self._offset = 0
        self._pending = b""
        self._warned = False
        self._failures = 0
        self._said_where = False

    def read(self, build: RemoteBuild, fallback_logging: str = "") -> Iterator[tuple[LineKind, str]]:
        """New lines of `build`'s log as ("log", line), and ("state", note) for the user.

        Once the build has finished, reads to the end and yields the last partial line too.
        """
        logging = build.logging or fallback_logging
        if logging in NO_BUCKET_LOGGING:
            if not self._said_where:
                self._said_where = True
                where = (
                    f"in Cloud Logging: {build.log_url}" if logging != "NONE" else "not kept (logging NONE)"
                )
                yield "state", f"log {where}"
            return
        location = build.logs_bucket.removeprefix("gs://").strip("/")
        if not location:
            return  # Cloud Build has not said yet where it writes the log
        bucket, _, prefix = location.partition("/")
        name = f"{prefix}/log-{build.id}.txt" if prefix else f"log-{build.id}.txt"
        for _ in range(FINAL_READS if build.finished else 1):
            try:
                data = self._storage.read_from(bucket, name, self._offset)
            except Exception as error:  # nothing about the log may fail the build
                self._failures += 1
                if not self._warned and (self._failures >= PATIENCE or not is_transient(error)):
                    self._warned = True
                    where = build.log_url or "in the Cloud Console"
                    yield (
                        "state",
                        (
                            f"warning: cannot read the log gs://{bucket}/{name} ({describe_error(error)}); "
                            f"still following the build; its log: {where}"
                        ),
                    )
                if build.finished and is_transient(error):
                    continue
                return
            self._failures = 0
            if not data:
                break
            yield from self._lines(data)
        if build.finished and self._pending:
            yield self._line(self._pending)
            self._pending = b""

    def _lines(self, data: bytes) -> Iterator[tuple[LineKind, str]]:
        self._offset += len(data)
        *complete, self._pending = (self._pending + data).split(b"\n")
        for raw in complete:
            yield self._line(raw)

    def _line(self, raw: bytes) -> tuple[LineKind, str]:
        line = raw.decode("utf-8", "replace").rstrip("\r")
        self.tail.append(line)
        return "log", line

"""One cascade at a time per repository: an advisory file lock under `.cache/imagecascade/`.

Two `invoke cascade` runs on one checkout would otherwise both find an image missing, build it
twice and race each other's `:latest`. The second run waits for the first (it is told so, with
the first's pid) and decides what to build only once it holds the lock, so it sees what the
first pushed. `flock` locks die with their process: a killed run never leaves the lock held.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

from imagecascade.core.workdirs import ensure_private_dir

LOCK_NAME = "cascade.lock"


@contextlib.contextmanager
def exclusive_cascade(cache_dir: Path, on_wait: Callable[[str], None]) -> Iterator[Path]:
    """Hold `cache_dir/cascade.lock` for the block; yields its path.

    When another process holds it, `on_wait(message)` is called once and this one blocks until
    the lock is free; Ctrl-C (or SIGTERM turned into one) ends the wait with KeyboardInterrupt.
    Raises OSError when the folder or file cannot be created.
    """
    ensure_private_dir(cache_dir)
    path = cache_dir / LOCK_NAME
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 4096, 0).decode("utf-8", "replace").strip() or "another process"
            on_wait(f"another cascade on this repository ({holder}) holds {path}; waiting for it to finish")
            fcntl.flock(descriptor, fcntl.LOCK_EX)  # a signal handler that raises ends the wait
        started = datetime.datetime.now().astimezone().strftime("%H:%M:%S")
        note = f"pid {os.getpid()} on {socket.gethostname()}, started {started}"
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, note.encode(), 0)
        try:
            yield path
        finally:
            os.ftruncate(descriptor, 0)
    finally:
        os.close(descriptor)  # releases the lock

"""Termination signals handled like Ctrl-C, decided in one place for every entry point.

CI cancellation and `timeout` send SIGTERM; a closed terminal sends SIGHUP. Python's default for
both is to die at once, skipping every `finally`: running builds would go on, containers would be
left behind, half-pushed tags would stay. Inside `termination_as_interrupt()` these signals raise
`Terminated`, a KeyboardInterrupt, so the code paths that already stop cleanly on Ctrl-C run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from types import FrameType

DEFAULT_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGHUP)


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when a termination signal arrives; `signal_name` says which."""

    def __init__(self, signal_number: int) -> None:
        self.signal_name = signal.Signals(signal_number).name
        super().__init__(f"stopped by {self.signal_name}")


def interrupt_name(interrupt: KeyboardInterrupt) -> str:
    """`SIGTERM`, `SIGHUP` or, for a plain Ctrl-C, `SIGINT`: for messages that say what stopped a run."""
    return interrupt.signal_name if isinstance(interrupt, Terminated) else "SIGINT"


@contextlib.contextmanager
def termination_as_interrupt(signals: Sequence[signal.Signals] = DEFAULT_SIGNALS) -> Iterator[None]:
    """Within the block, `signals` raise `Terminated` in the main thread; earlier handlers come back after.

    Outside the main thread (where Python cannot install handlers) this is a no-op.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(number: int, frame: FrameType | None) -> None:
        raise Terminated(number)

    previous = {number: signal.signal(number, handler) for number in signals}
    try:
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old)


@contextlib.contextmanager
def quiet_broken_pipe() -> Iterator[None]:
    """A reader that stops early (`invoke graph | head -1`) ends the command quietly with exit 0.

    Python ignores SIGPIPE and raises BrokenPipeError instead, with a traceback; here the rest of
    the output goes to /dev/null (so the flush at exit cannot fail again) and SystemExit(0) follows:
    the reader chose to stop, which is not a failure of the command. An exit the body chose
    itself (a check's exit 1) is kept.
    """
    broken = False
    try:
        try:
            yield
        except BrokenPipeError:
            broken = True
    finally:
        try:
            sys.stdout.flush()  # buffered output meets the closed pipe here, also on the way out
        except BrokenPipeError:
            broken = True
        if broken:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
    if broken:
        raise SystemExit(0)

"""SIGTERM and SIGHUP stop a process the way Ctrl-C does: `finally` blocks and interrupt handlers run."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

SCRIPT = """
import sys, time
from imagecascade.signals import interrupt_name, termination_as_interrupt
try:
    with termination_as_interrupt():
        try:
            print("ready", flush=True)
            time.sleep(30)
        finally:
            print("cleaned up", flush=True)
except KeyboardInterrupt as interrupt:
    print(f"interrupted by {interrupt_name(interrupt)}", flush=True)
    sys.exit(130)
"""


@pytest.mark.parametrize(
    ("sent", "name"), [(signal.SIGTERM, "SIGTERM"), (signal.SIGHUP, "SIGHUP"), (signal.SIGINT, "SIGINT")]
)
def test_termination_runs_cleanup_like_ctrl_c(sent: signal.Signals, name: str) -> None:
    process = subprocess.Popen([sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    started = time.monotonic()
    process.send_signal(sent)
    out, _ = process.communicate(timeout=20)
    assert process.returncode == 130
    assert out.splitlines() == ["cleaned up", f"interrupted by {name}"]
    assert time.monotonic() - started < 10


def test_handlers_are_restored_after_the_block() -> None:
    from imagecascade.signals import termination_as_interrupt

    before = signal.getsignal(signal.SIGTERM)
    with termination_as_interrupt():
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before

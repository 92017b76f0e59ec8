"""Start the W&B launch agent configured from the environment, and stop it when idle.

Exit status: the agent's own; 0 after an idle stop (LAUNCH_IDLE_TIMEOUT seconds
without a running job); 2 with one `launcher-entrypoint: fatal: ...` line when the
environment is incomplete or spot scheduling was requested but cannot be switched on.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import IO

from arr_vertex_launcher.config import LauncherConfigError, agent_config, agent_environment, read_settings

PROG = "launcher-entrypoint"
FATAL = 2
# The agent's periodic status line ("... running 1 out of a maximum of 2 jobs"), the
# same wording in every wandb release that has the launch agent.
_STATUS = re.compile(r"running (\d+) out of a maximum of \d+ jobs")
# Lines the agent prints when it takes a job from a queue.
_ACTIVITY = re.compile(r"(?i)\b(?:got job|launching run|launching job|received job)\b")
_STOP_GRACE_SECONDS = 30.0


class IdleTracker:
    """How long the agent has had no running job, judged from its output."""

    def __init__(self, now: float) -> None:
        self.running = 0
        self.since = now

    def observe(self, line: str, now: float) -> None:
        status = _STATUS.search(line)
        if status:
            running = int(status.group(1))
            if running or self.running:
                self.since = now
            self.running = running
        elif _ACTIVITY.search(line):
            self.since = now

    def idle_for(self, now: float) -> float:
        return 0.0 if self.running else now - self.since


def _read_lines(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def _stop(process: subprocess.Popen[str]) -> None:
    process.terminate()
    try:
        process.wait(timeout=_STOP_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def supervise(
    command: Sequence[str],
    env: Mapping[str, str],
    idle_timeout: float,
    out: IO[str],
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Run `command`, copying its output to `out`; stop it after `idle_timeout` idle seconds (0: never)."""
    process = subprocess.Popen(
        list(command),
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    )
    forwarded = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            forwarded[signum] = signal.signal(signum, lambda number, _frame: process.send_signal(number))
    lines: queue.Queue[str | None] = queue.Queue()
    assert process.stdout is not None
    reader = threading.Thread(target=_read_lines, args=(process.stdout, lines), daemon=True)
    reader.start()
    tracker = IdleTracker(clock())
    try:
        while True:
            try:
                line = lines.get(timeout=1.0)
            except queue.Empty:
                line = ""
            if line is None:
                break
            if line:
                out.write(line)
                out.flush()
                tracker.observe(line, clock())
            idle = tracker.idle_for(clock())
            if idle_timeout and idle >= idle_timeout:
                out.write(
                    f"{PROG}: no job for {idle:.0f} s "
                    f"(LAUNCH_IDLE_TIMEOUT={idle_timeout:g}), stopping the agent\n"
                )
                out.flush()
                _stop(process)
                return 0
        code = process.wait()
    finally:
        if process.poll() is None:
            _stop(process)
        for signum, handler in forwarded.items():
            signal.signal(signum, handler)
    return 128 - code if code < 0 else code


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the agent config built from the environment and exit",
    )
    parser.add_argument("agent_args", nargs="*", help="extra arguments for `wandb launch-agent`")
    args = parser.parse_args(argv)
    environ = os.environ if environ is None else environ
    try:
        settings = read_settings(environ)
    except LauncherConfigError as error:
        print(f"{PROG}: fatal: {error}", file=sys.stderr, flush=True)
        return FATAL
    config = agent_config(settings)
    if args.print_config:
        print(json.dumps(config, indent=2, sort_keys=True))
        return 0
    if settings.spot:
        from arr_vertex_launcher import spot

        try:
            import google.cloud.aiplatform  # noqa: F401  (applies the spot patch)
        except Exception as error:
            print(
                f"{PROG}: fatal: VERTEX_SPOT=1 but google.cloud.aiplatform does not import: {error}",
                file=sys.stderr,
            )
            return FATAL
        if not spot.ACTIVE:
            reason = spot.PROBLEM or "the arr-vertex-spot.pth startup hook did not run"
            print(
                f"{PROG}: fatal: VERTEX_SPOT=1 but spot scheduling is not active: {reason}", file=sys.stderr
            )
            return FATAL
    try:
        settings.config_path.parent.mkdir(parents=True, exist_ok=True)
        settings.config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    except OSError as error:
        print(
            f"{PROG}: fatal: cannot write the agent config {settings.config_path}: {error}", file=sys.stderr
        )
        return FATAL
    print(
        f"{PROG}: agent for {settings.entity}, queues {','.join(settings.queues)}, region {settings.region}, "
        f"spot {'on' if settings.spot else 'off'}, idle timeout {settings.idle_timeout:g} s",
        flush=True,
    )
    command = ["wandb", "launch-agent", "--config", str(settings.config_path), *args.agent_args]
    try:
        return supervise(command, agent_environment(settings, environ), settings.idle_timeout, sys.stdout)
    except FileNotFoundError as error:
        print(f"{PROG}: fatal: cannot start the agent: {error}", file=sys.stderr)
        return FATAL


if __name__ == "__main__":
    raise SystemExit(main())

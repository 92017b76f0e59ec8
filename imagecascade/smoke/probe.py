"""The in-container side of the smoke checks: observe, never judge.

This file is sent whole into a container as `python3 -c <this source> <json spec>`, so it must
run on any python3 >= 3.8 with the standard library only (torch is imported only when the
spec asks for CUDA facts). The host (`smoke/evaluate.py`) turns observations into pass/fail/skip.

Two processes: the first (PID 1 in the container) is a watchdog that forks a worker, collects
the worker's observations as they are made, and at the end of the time budget kills it and
reports which step was running. So a hanging import is reported by name, the container never
outlives its budget even when nobody on the host is left to stop it, and a crash in one step
keeps what the steps before it saw. The watchdog prints one JSON document after MARKER on the
original stdout; everything the checks print goes to stderr.

Files are not observed here: the host reads them through the engine, whatever this process may
read (see `smoke/files.py`).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from typing import Any

MARKER = "@@imagecascade-probe@@"
PROBE_VERSION = 2
# Bytes of a command's output kept in memory and searched by `output`; the rest is only counted.
OUTPUT_CAP = 64 * 1024 * 1024
_EXCERPT = 300
_READ = 1 << 16


def source() -> str:
    """This module's text, as sent into containers."""
    with open(__file__, encoding="utf-8") as handle:
        return handle.read()


def _error_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


class _Events:
    """The worker's side of the pipe: one JSON object per line."""

    def __init__(self, fd: int, started: float) -> None:
        self.fd = fd
        self.started = started

    def send(self, event: dict[str, Any]) -> None:
        data = (json.dumps(event, sort_keys=True) + "\n").encode("utf-8")
        while data:
            data = data[os.write(self.fd, data) :]

    def start(self, step: str, **extra: Any) -> None:
        self.send(dict(extra, start=step, at=round(time.monotonic() - self.started, 3)))

    def done(self, step: str, value: Any) -> None:
        self.send({"step": step, "value": value})


def observe_user() -> dict[str, Any]:
    user: dict[str, Any] = {"uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(), "name": None}
    try:
        import pwd

        user["name"] = pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        pass
    return user


def observe_import(module: str) -> str | None:
    import importlib

    try:
        importlib.import_module(module)
        return None
    except (Exception, SystemExit) as error:  # an import may do anything, even exit
        return _error_text(error)


def observe_version(distribution: str) -> str | None:
    try:
        from importlib import metadata
    except ImportError:  # pragma: no cover - python < 3.8
        return None
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def run_command(
    argv: list[str], timeout: float | None, pattern: str | None, events: _Events | None = None
) -> dict[str, Any]:
    """Run argv (stdin closed, stderr into stdout) for at most `timeout` seconds (None: no own limit).

    The output is read as it comes: the first OUTPUT_CAP bytes are kept and searched for
    `pattern`, the rest only counted, so a command that prints without end costs bounded memory.
    """
    started = time.monotonic()
    result: dict[str, Any] = {"returncode": None, "error": None, "timed_out": False}
    try:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: a timeout stops what it started too
        )
    except OSError as error:
        result["error"] = f"cannot run {argv[0]}: {error.strerror or error}"
        return result
    if events is not None:
        events.send({"group": process.pid})
    assert process.stdout is not None
    fd = process.stdout.fileno()
    kept = bytearray()
    tail = b""
    total = 0
    ends = None if timeout is None else started + timeout
    open_pipe = True
    while True:
        now = time.monotonic()
        if ends is not None and now >= ends:
            result["timed_out"] = True
            break
        exited = process.poll() is not None
        wait = 0.5 if ends is None else min(0.5, ends - now)
        ready = select.select([fd], [], [], 0.1 if exited else wait)[0] if open_pipe else []
        if ready:
            chunk = os.read(fd, _READ)
            if not chunk:
                open_pipe = False
                continue
            total += len(chunk)
            if len(kept) < OUTPUT_CAP:
                kept += chunk[: OUTPUT_CAP - len(kept)]
            tail = (tail + chunk)[-4 * _EXCERPT :]
        elif exited or not open_pipe:
            if exited:
                break  # exited, and nothing more came: a background child may hold the pipe
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=wait)
    _kill_group(process.pid)
    process.wait()
    process.stdout.close()
    if not result["timed_out"]:
        result["returncode"] = process.returncode
    searched = len(kept)
    text = kept.decode("utf-8", "replace")
    del kept  # the text is all that is searched
    result.update(
        bytes=total,
        searched=searched,
        head=text[:_EXCERPT],
        tail=_text(tail)[-_EXCERPT:],
        seconds=round(time.monotonic() - started, 3),
    )
    lines = [line for line in _text(tail).splitlines() if line.strip()]
    result["last_line"] = lines[-1][-_EXCERPT:] if lines else ""
    if pattern is not None:
        import re

        try:
            found = re.search(pattern, text)
        except re.error as error:
            result["pattern_error"] = str(error)
        else:
            result["match"] = None if found is None else found.group(0)[:_EXCERPT]
    return result


def _kill_group(group: int) -> None:
    with contextlib.suppress(OSError):
        os.killpg(group, signal.SIGKILL)


def observe_torch(gpu: bool, matmul: bool) -> dict[str, Any]:
    import importlib

    try:
        # Any: the probe reads torch's attributes defensively, whatever its version.
        torch: Any = importlib.import_module("torch")
    except (Exception, SystemExit) as error:
        return {"error": _error_text(error)}
    found: dict[str, Any] = {"error": None, "version": str(torch.__version__)}
    found["cuda"] = getattr(torch.version, "cuda", None)
    try:
        found["cudnn"] = torch.backends.cudnn.version()
    except Exception as error:
        found["cudnn"] = None
        found["cudnn_error"] = _error_text(error)
    # Compiled architectures, readable without a GPU; CPU builds lack the function.
    arch_flags = getattr(torch._C, "_cuda_getArchFlags", None)
    flags = arch_flags() if arch_flags is not None else None
    found["arch_flags"] = str(flags).split() if flags else []
    try:
        found["nccl"] = bool(torch.distributed.is_available() and torch.distributed.is_nccl_available())
    except Exception as error:
        found["nccl"] = False
        found["nccl_error"] = _error_text(error)
    try:
        found["cuda_available"] = bool(torch.cuda.is_available())
        found["device_count"] = int(torch.cuda.device_count())
        found["devices"] = [torch.cuda.get_device_name(index) for index in range(found["device_count"])]
    except Exception as error:
        found["cuda_available"] = False
        found["device_count"] = 0
        found["cuda_error"] = _error_text(error)
    if gpu and matmul:
        found["matmul"] = _matmul(torch)
    return found


def _matmul(torch: Any) -> dict[str, Any]:
    try:
        generator = torch.Generator().manual_seed(0)
        left = torch.randn(256, 256, dtype=torch.float64, generator=generator)
        right = torch.randn(256, 256, dtype=torch.float64, generator=generator)
        expected = left @ right
        product = (left.cuda() @ right.cuda()).cpu()
        torch.cuda.synchronize()
        difference = float((product - expected).abs().max().item())
        same = bool(torch.allclose(product, expected, rtol=1e-9, atol=1e-9))
        return {"ok": same, "max_abs_diff": difference}
    except Exception as error:
        return {"ok": False, "error": _error_text(error)}


def work(spec: dict[str, Any], events: _Events) -> None:
    """The worker: every observation the spec asks for, each sent as soon as it is made."""
    events.start("user")
    events.done("user", observe_user())
    if spec.get("access"):
        events.start("access")
        events.done("access", {path: os.access(path, os.X_OK) for path in spec["access"]})
    events.start("env")
    events.done("env", {name: os.environ.get(name) for name in spec.get("env", [])})
    for module in spec.get("imports", []):
        events.start(f"import {module}")
        events.done(f"import {module}", observe_import(module))
    for name in spec.get("versions", []):
        events.start(f"version {name}")
        events.done(f"version {name}", observe_version(name))
    if spec.get("pip_check"):
        events.start("pip check")
        argv = [sys.executable, "-m", "pip", "check", "--disable-pip-version-check"]
        events.done("pip check", run_command(argv, None, None, events))
    for command in spec.get("commands", []):
        step = f"command {command['name']}"
        events.start(step, limit=command.get("timeout"))
        events.done(step, run_command(command["run"], command.get("timeout"), command.get("output"), events))
    if spec.get("torch"):
        events.start("torch")
        events.done("torch", observe_torch(bool(spec.get("gpu")), bool(spec.get("matmul"))))


def supervise(spec: dict[str, Any]) -> dict[str, Any]:
    """Fork the worker, gather its observations, stop it when the budget runs out."""
    budget = float(spec.get("budget_seconds", 120))
    started = time.monotonic()
    deadline = started + budget
    report: dict[str, Any] = {
        "probe": PROBE_VERSION,
        "python": {
            "version": ".".join(str(part) for part in sys.version_info[:3]),
            "executable": sys.executable,
        },
        "budget": budget,
        "steps": {},
        "outcome": {"kind": "complete"},
    }
    read_fd, write_fd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    worker = os.fork()
    if worker == 0:  # pragma: no cover - runs in the forked child
        os.close(read_fd)
        code = 0
        try:
            events = _Events(write_fd, started)
            work(spec, events)
            events.send({"finished": True})
        except BaseException as error:  # the watchdog reports whatever stopped the worker
            with contextlib.suppress(OSError):
                _Events(write_fd, started).send({"worker_error": _error_text(error)})
            code = 70
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    os.close(write_fd)
    running: dict[str, Any] | None = None
    group: int | None = None
    finished = False
    buffer = b""
    status: int | None = None
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready = select.select([read_fd], [], [], min(left, 0.5))[0]
        if ready:
            chunk = os.read(read_fd, _READ)
            if not chunk:
                break
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                event = json.loads(line)
                if "start" in event:
                    running, group = event, None
                elif "group" in event:
                    group = event["group"]
                elif "step" in event:
                    report["steps"][event["step"]] = event["value"]
                    running, group = None, None
                elif "finished" in event:
                    finished = True
                elif "worker_error" in event:
                    report["worker_error"] = event["worker_error"]
        status = _reap(worker, status)
    os.close(read_fd)
    if not finished:
        status = _stop(worker, group, status)
        report["outcome"] = _unfinished(running, status, deadline, started)
    elif status is None:
        os.waitpid(worker, 0)
    return report


def _reap(worker: int, status: int | None) -> int | None:
    """Collect exited children: the worker's status, and (as PID 1) orphans the commands left."""
    while True:
        try:
            pid, code = os.waitpid(-1 if os.getpid() == 1 else worker, os.WNOHANG)
        except ChildProcessError:
            return status
        if pid == 0:
            return status
        if pid == worker:
            status = code


def _stop(worker: int, group: int | None, status: int | None) -> int | None:
    if group is not None:
        _kill_group(group)
    if status is None:
        with contextlib.suppress(OSError):
            os.kill(worker, signal.SIGKILL)
        status = os.waitpid(worker, 0)[1]
    return status


def _unfinished(
    running: dict[str, Any] | None, status: int | None, deadline: float, started: float
) -> dict[str, Any]:
    step = None if running is None else running["start"]
    at = None if running is None else running["at"]
    if time.monotonic() >= deadline:
        return {"kind": "timed_out", "step": step, "at": at, "limit": running and running.get("limit")}
    outcome: dict[str, Any] = {"kind": "crashed", "step": step, "at": at}
    if status is not None and os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            outcome["signal"] = signal.Signals(number).name
        except ValueError:
            outcome["signal"] = str(number)
    elif status is not None and os.WIFEXITED(status):
        outcome["exit_code"] = os.WEXITSTATUS(status)
    outcome["seconds"] = round(time.monotonic() - started, 3)
    return outcome


def main(argv: list[str]) -> int:
    spec = json.loads(argv[1]) if len(argv) > 1 else {}
    # Imported modules and C extensions may print to fd 1; keep it for the report alone.
    sys.stdout.flush()
    report_fd = os.dup(1)
    os.dup2(2, 1)
    report = supervise(spec)
    data = (MARKER + json.dumps(report, sort_keys=True) + "\n").encode("utf-8")
    while data:
        data = data[os.write(report_fd, data) :]
    return 0


def parse_report(stdout: str) -> dict[str, Any] | None:
    """The probe's JSON document from a container's stdout, or None when it never got there."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(MARKER):
            document = json.loads(line[len(MARKER) :])
            return document if isinstance(document, dict) else None
    return None


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))

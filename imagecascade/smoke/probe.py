"""The in-container side of the smoke checks: observe, never judge.

This file is sent whole into a container as `python3 -c <this source> <json spec>`, so it must
run on any python3 >= 3.8 with the standard library only (torch is imported only when the
spec asks for CUDA facts). It prints one JSON document of raw observations, after MARKER, on
the original stdout; everything else the checks print goes to stderr. The host (smoke.py)
turns observations into pass/fail/skip.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from typing import Any

MARKER = "@@imagecascade-probe@@"
PROBE_VERSION = 1
OUTPUT_LIMIT = 16000


def source() -> str:
    """This module's text, as sent into containers."""
    with open(__file__, encoding="utf-8") as handle:
        return handle.read()


def _error_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _tail(data: bytes) -> str:
    text = data.decode("utf-8", "replace")
    return text if len(text) <= OUTPUT_LIMIT else text[-OUTPUT_LIMIT:]


def observe_imports(modules: list[str]) -> dict[str, str | None]:
    import importlib

    found: dict[str, str | None] = {}
    for module in modules:
        try:
            importlib.import_module(module)
            found[module] = None
        except (Exception, SystemExit) as error:  # an import may do anything, even exit
            found[module] = _error_text(error)
    return found


def observe_versions(distributions: list[str]) -> dict[str, str | None]:
    try:
        from importlib import metadata
    except ImportError:  # pragma: no cover - python < 3.8
        return {name: None for name in distributions}
    found: dict[str, str | None] = {}
    for name in distributions:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def run_command(argv: list[str], timeout: float, budget: float) -> dict[str, Any]:
    """Run argv for at most `timeout` seconds, what is left of the probe's `budget` for commands."""
    started = time.monotonic()
    result: dict[str, Any] = {"returncode": None, "output": "", "error": None}
    if timeout <= 0:
        result["error"] = f"not run: the commands' time budget ({budget:g}s) was spent"
        return result
    try:
        completed = subprocess.run(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout
        )
        result["returncode"] = completed.returncode
        result["output"] = _tail(completed.stdout)
    except subprocess.TimeoutExpired as error:
        result["error"] = f"timed out: the commands' time budget ({budget:g}s) ran out"
        result["output"] = _tail(error.output or b"")
    except OSError as error:
        result["error"] = f"cannot run {argv[0]}: {error.strerror or error}"
    result["seconds"] = round(time.monotonic() - started, 3)
    return result


def observe_files(paths: list[str]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for path in paths:
        try:
            status = os.stat(path)
        except OSError:
            kind = "broken-link" if os.path.islink(path) else "missing"
            found[path] = {"exists": False, "kind": kind, "mode": None, "executable": False}
            continue
        if stat.S_ISREG(status.st_mode):
            kind = "file"
        elif stat.S_ISDIR(status.st_mode):
            kind = "dir"
        else:
            kind = "other"
        found[path] = {
            "exists": True,
            "kind": kind,
            "mode": stat.S_IMODE(status.st_mode),
            # root passes os.access(X_OK) on any file with one x bit; the bits decide for everyone.
            "executable": kind == "file" and bool(status.st_mode & 0o111) and os.access(path, os.X_OK),
        }
    return found


def observe_user() -> dict[str, Any]:
    user: dict[str, Any] = {"uid": os.getuid(), "gid": os.getgid(), "name": None}
    try:
        import pwd

        user["name"] = pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        pass
    return user


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


def probe(spec: dict[str, Any]) -> dict[str, Any]:
    """Every observation the spec asks for; failures are data, not exceptions."""
    budget = float(spec.get("command_budget_seconds", 60))
    deadline = time.monotonic() + budget
    report: dict[str, Any] = {
        "probe": PROBE_VERSION,
        "python": {
            "version": ".".join(str(part) for part in sys.version_info[:3]),
            "executable": sys.executable,
        },
        "user": observe_user(),
        "imports": observe_imports(spec.get("imports", [])),
        "versions": observe_versions(spec.get("versions", [])),
        "files": observe_files(spec.get("files", [])),
        "env": {name: os.environ.get(name) for name in spec.get("env", [])},
        "pip_check": None,
        "commands": {},
        "torch": None,
    }
    if spec.get("pip_check"):
        report["pip_check"] = run_command(
            [sys.executable, "-m", "pip", "check", "--disable-pip-version-check"],
            deadline - time.monotonic(),
            budget,
        )
    for command in spec.get("commands", []):
        report["commands"][command["name"]] = run_command(command["run"], deadline - time.monotonic(), budget)
    if spec.get("torch"):
        report["torch"] = observe_torch(bool(spec.get("gpu")), bool(spec.get("matmul")))
    return report


def main(argv: list[str]) -> int:
    spec = json.loads(argv[1]) if len(argv) > 1 else {}
    # Imported modules and C extensions may print to fd 1; keep it for the report alone.
    sys.stdout.flush()
    report_fd = os.dup(1)
    os.dup2(2, 1)
    report = probe(spec)
    sys.stdout.flush()
    os.write(report_fd, (MARKER + json.dumps(report, sort_keys=True) + "\n").encode("utf-8"))
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

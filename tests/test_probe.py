"""The probe, run the way containers run it (`python -c <source> <spec>`) but with host Python.

The torch cases use the CPU wheel from the dev extra: CUDA unavailable, no compiled
architectures, and the host side turning that into precise failures and skips.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from imagecascade.core.checks import SmokeChecks, parse_smoke_checks
from imagecascade.smoke import probe
from imagecascade.smoke.cuda import cudnn_version_text
from imagecascade.smoke.evaluate import evaluate
from imagecascade.smoke.results import CheckResult
from imagecascade.smoke.runner import probe_spec

IMAGE = "host"


def run_probe(spec: dict[str, Any], env: dict[str, str] | None = None) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, "-c", probe.source(), json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=True,
    )
    report = probe.parse_report(completed.stdout)
    assert report is not None, completed.stderr
    return report


def checks_from(text: str) -> SmokeChecks:
    return parse_smoke_checks(tomllib.loads(text), "test: [smoke]")


def judge(
    text: str,
    *,
    gpu: bool = False,
    require_gpu: bool = False,
    env: dict[str, str] | None = None,
) -> list[CheckResult]:
    checks = checks_from(text)
    observations = run_probe(probe_spec(checks, gpu=gpu), env=env)
    return evaluate(
        IMAGE,
        checks,
        config={},
        labels={},
        observations=observations,
        gpu=gpu,
        require_gpu=require_gpu,
    )


def outcomes(results: list[CheckResult]) -> dict[str, tuple[str, str]]:
    return {result.check: (result.status, result.message) for result in results}


def test_source_is_python_3_8() -> None:
    # Images may carry an old interpreter: the probe must parse as 3.8 and import only the stdlib.
    tree = ast.parse(probe.source(), feature_version=(3, 8))
    top_level: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            top_level.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            top_level.add(node.module.split(".")[0])
    assert top_level <= set(sys.stdlib_module_names) | {"__future__"}


def test_report_survives_output_on_stdout(tmp_path: Path) -> None:
    (tmp_path / "noisy.py").write_text("print('{not json')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    spec = {
        "imports": ["noisy"],
        "commands": [{"name": "noise", "run": [sys.executable, "-c", "print('{x')"]}],
    }
    report = run_probe(spec, env=env)
    assert report["steps"]["import noisy"] is None
    assert report["steps"]["command noise"]["head"] == "{x\n"
    assert probe.parse_report("garbage\n") is None


def test_imports() -> None:
    results = outcomes(judge('imports = ["json", "xml.etree.ElementTree", "foo_missing_module"]'))
    assert results == {
        "import json": ("pass", "host: module json imports"),
        "import xml.etree.ElementTree": ("pass", "host: module xml.etree.ElementTree imports"),
        "import foo_missing_module": (
            "fail",
            "host: module foo_missing_module does not import: "
            "ModuleNotFoundError: No module named 'foo_missing_module'",
        ),
    }


def test_versions() -> None:
    from importlib.metadata import version

    installed = version("packaging")
    results = outcomes(
        judge(
            f"""
            [versions]
            packaging = "=={installed}"
            pytest = "<1"
            no-such-distribution = ">=1"
            """
        )
    )
    assert results["version packaging"] == ("pass", f"host: packaging {installed} satisfies =={installed}")
    assert results["version pytest"] == ("fail", f"host: pytest {version('pytest')} does not satisfy <1")
    assert results["version no-such-distribution"] == (
        "fail",
        "host: distribution no-such-distribution is not installed, expected >=1",
    )


def test_commands() -> None:
    python = json.dumps(sys.executable)
    results = outcomes(
        judge(
            f"""
            timeout_seconds = 4
            [[commands]]
            name = "says-usage"
            run = [{python}, "-c", "import sys; sys.stderr.write('usage: x')"]
            output = "^usage"
            [[commands]]
            name = "wrong-output"
            run = [{python}, "-c", "print('hello')"]
            output = "usage"
            [[commands]]
            name = "silent"
            run = ["true"]
            output = "usage"
            [[commands]]
            name = "exits-1"
            run = [{python}, "-c", "print('boom'); raise SystemExit(1)"]
            [[commands]]
            name = "not-installed"
            run = ["torchrun-that-does-not-exist", "--help"]
            [[commands]]
            name = "own-limit"
            run = [{python}, "-c", "import time; print('waiting', flush=True); time.sleep(30)"]
            timeout_seconds = 1
            [[commands]]
            name = "needs-gpu"
            run = ["nvidia-smi"]
            gpu = true
            [[commands]]
            name = "hangs"
            run = [{python}, "-c", "import time; time.sleep(30)"]
            [[commands]]
            name = "after-the-budget"
            run = ["true"]
            """
        )
    )
    hangs_status, hangs_message = results.pop("command hangs")
    assert hangs_status == "fail"
    assert hangs_message.startswith("host: command hangs timed out after ")
    assert "(timeout_seconds is 4 s for all in-container checks; " in hangs_message
    assert results == {
        "command says-usage": ("pass", "host: command says-usage exited 0"),
        "command wrong-output": (
            "fail",
            "host: command wrong-output output does not match 'usage'; it printed 'hello\\n'",
        ),
        "command silent": ("fail", "host: command silent output does not match 'usage'; it printed nothing"),
        "command exits-1": ("fail", "host: command exits-1 exited 1: boom"),
        "command not-installed": (
            "fail",
            "host: command not-installed: cannot run torchrun-that-does-not-exist: No such file or directory",
        ),
        "command own-limit": (
            "fail",
            "host: command own-limit timed out after 1 s (its timeout_seconds); last output: waiting",
        ),
        "command needs-gpu": ("skip", "host: skipped: no GPU"),
        "command after-the-budget": (
            "fail",
            "host: not run: timeout_seconds (4 s) ran out during command hangs",
        ),
    }


def test_a_short_budget_is_all_for_the_checks() -> None:
    # Nothing is held back for bookkeeping: a 2 s command fits in a 3 s budget.
    results = outcomes(judge('timeout_seconds = 3\n[[commands]]\nname = "two"\nrun = ["sleep", "2"]'))
    assert results == {"command two": ("pass", "host: command two exited 0")}


def test_the_whole_output_is_searched() -> None:
    python = json.dumps(sys.executable)
    script = "import sys; sys.stdout.write('marker-at-the-start ' + 'x' * 20000 + ' end')"
    results = outcomes(
        judge(
            f"""
            [[commands]]
            name = "start"
            run = [{python}, "-c", "{script}"]
            output = "^marker-at-the-start"
            [[commands]]
            name = "end"
            run = [{python}, "-c", "{script}"]
            output = "x end$"
            [[commands]]
            name = "mismatch"
            run = [{python}, "-c", "{script}"]
            output = "not there"
            """
        )
    )
    assert results["command start"] == ("pass", "host: command start exited 0")
    assert results["command end"] == ("pass", "host: command end exited 0")
    assert results["command mismatch"] == (
        "fail",
        "host: command mismatch output does not match 'not there'; it printed 20,024 bytes, "
        f"starting {'marker-at-the-start ' + 'x' * 80!r} and ending {'x' * 96 + ' end'!r}",
    )


def test_output_beyond_the_cap_is_counted_not_kept() -> None:
    size = probe.OUTPUT_CAP + 400 * 2**20
    spec = {"commands": [{"name": "flood", "run": ["head", "-c", str(size), "/dev/zero"], "output": "never"}]}
    # The probe's peak memory, measured by a parent of its own (RUSAGE_CHILDREN: the largest child).
    measure = (
        "import resource, subprocess, sys; "
        "done = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE); "
        "sys.stdout.buffer.write(done.stdout); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    completed = subprocess.run(
        [sys.executable, "-c", measure, sys.executable, "-c", probe.source(), json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    report = probe.parse_report(completed.stdout)
    assert report is not None, completed.stderr
    peak_kib = int(completed.stdout.split()[-1])
    flood = report["steps"]["command flood"]
    assert (flood["bytes"], flood["searched"], flood["match"]) == (size, probe.OUTPUT_CAP, None)
    # Keeping everything would take more than `size`; the probe holds the cap (and its text).
    assert peak_kib * 1024 < 3 * probe.OUTPUT_CAP < size
    checks = checks_from('[[commands]]\nname = "flood"\nrun = ["x"]\noutput = "never"')
    results = outcomes(evaluate(IMAGE, checks, config={}, labels={}, observations=report))
    assert results["command flood"][1].startswith(
        f"host: command flood output does not match 'never' in the first 64 MB; it printed {size:,} bytes"
    )


def test_a_hanging_import_is_named(tmp_path: Path) -> None:
    (tmp_path / "skboom.py").write_text("import time\ntime.sleep(60)\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    results = outcomes(
        judge('timeout_seconds = 2\nimports = ["json", "skboom", "csv"]\npip_check = true', env=env)
    )
    assert results == {
        "import json": ("pass", "host: module json imports"),
        "import skboom": ("fail", "host: import of skboom timed out after 2 s"),
        "import csv": ("fail", "host: not run: timeout_seconds (2 s) ran out during import of skboom"),
        "pip check": ("fail", "host: not run: timeout_seconds (2 s) ran out during import of skboom"),
    }


def test_a_crashing_import_keeps_what_came_before(tmp_path: Path) -> None:
    (tmp_path / "segv.py").write_text("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    results = outcomes(judge('imports = ["json", "segv", "csv"]', env=env))
    assert results == {
        "import json": ("pass", "host: module json imports"),
        "import segv": ("fail", "host: import of segv crashed the probe (SIGSEGV)"),
        "import csv": ("fail", "host: not run: the probe crashed (SIGSEGV) during import of segv"),
    }


def test_env() -> None:
    env = {**os.environ, "SMOKE_ONE": "1", "SMOKE_PATHS": "/a:/b"}
    results = outcomes(
        judge(
            """
            [env]
            SMOKE_ONE = "1"
            SMOKE_PATHS = "/a"
            SMOKE_UNSET = ".*"
            """,
            env=env,
        )
    )
    assert results == {
        "env SMOKE_ONE": ("pass", "host: env SMOKE_ONE is '1'"),
        "env SMOKE_PATHS": ("fail", "host: env SMOKE_PATHS is '/a:/b', expected '/a'"),
        "env SMOKE_UNSET": ("fail", "host: env SMOKE_UNSET is not set, expected '.*'"),
    }


def test_non_root_uses_the_probe_user() -> None:
    results = outcomes(judge("[config]\nnon_root = true"))
    status, message = results["config non_root"]
    assert status == ("pass" if os.getuid() != 0 else "fail")
    assert message.startswith(f"host: runs as uid {os.getuid()}")


def test_pip_check() -> None:
    status, message = outcomes(judge("pip_check = true"))["pip check"]
    assert (status, message) == ("pass", "host: pip check is clean") or message.startswith(
        "host: pip check found problems: "
    )


def test_torch_is_not_imported_unless_cuda_checks_are_declared() -> None:
    report = run_probe(probe_spec(checks_from('imports = ["json"]'), gpu=False))
    assert "torch" not in report["steps"]


CUDA = """
[cuda]
torch_cuda = "12.4"
cudnn = ">=9"
arch_list = ["sm_80", "sm_90"]
nccl = true
available = true
min_devices = 1
matmul = true
"""


@pytest.fixture(scope="module")
def cpu_torch_report() -> dict[str, Any]:
    report: dict[str, Any] = run_probe(probe_spec(checks_from(CUDA), gpu=False))
    return report


@pytest.mark.torch
def test_cpu_torch_observations(cpu_torch_report: dict[str, Any]) -> None:
    import torch

    report = cpu_torch_report["steps"]["torch"]
    assert report["error"] is None
    assert report["version"] == torch.__version__
    assert report["cuda"] is None
    assert report["cudnn"] is None
    assert report["arch_flags"] == []
    assert report["nccl"] is False
    assert report["cuda_available"] is False
    assert report["device_count"] == 0
    assert "matmul" not in report


@pytest.mark.torch
def test_cpu_torch_fails_cuda_checks_and_skips_gpu_checks(cpu_torch_report: dict[str, Any]) -> None:
    import torch

    build = f"torch {torch.__version__}"
    results = evaluate(IMAGE, checks_from(CUDA), config={}, labels={}, observations=cpu_torch_report)
    assert outcomes(results) == {
        "cuda torch_cuda": ("fail", f"host: {build} is built without CUDA, expected CUDA 12.4"),
        "cuda cudnn": ("fail", f"host: {build} has no cuDNN, expected >=9"),
        "cuda arch_list": (
            "fail",
            f"host: CUDA architectures sm_80 sm_90 missing: {build} has none compiled in",
        ),
        "cuda nccl": ("fail", f"host: NCCL is not available in {build}"),
        "cuda available": ("skip", "host: skipped: no GPU"),
        "cuda min_devices": ("skip", "host: skipped: no GPU"),
        "cuda matmul": ("skip", "host: skipped: no GPU"),
    }


def test_require_gpu_turns_skips_into_failures() -> None:
    checks = checks_from("[cuda]\navailable = true\nmatmul = true")
    assert probe_spec(checks, gpu=False)["torch"] is False
    results = outcomes(judge("[cuda]\navailable = true\nmatmul = true", require_gpu=True))
    assert results == {
        "cuda available": (
            "fail",
            "host: cuda.available needs a GPU, but the engine offers none (--require-gpu)",
        ),
        "cuda matmul": ("fail", "host: cuda.matmul needs a GPU, but the engine offers none (--require-gpu)"),
    }


def test_gpu_checks_judged_when_the_engine_claims_a_gpu() -> None:
    # The CPU wheel inside a "GPU" container: what a broken CUDA image would report.
    results = outcomes(judge("[cuda]\navailable = true\nmin_devices = 2\nmatmul = true", gpu=True))
    assert results["cuda available"][0] == "fail"
    assert results["cuda available"][1].startswith("host: CUDA is not available to torch ")
    assert results["cuda min_devices"][0] == "fail"
    assert results["cuda min_devices"][1].endswith("sees 0 CUDA devices, expected at least 2")
    assert results["cuda matmul"][0] == "fail"
    assert results["cuda matmul"][1].startswith("host: GPU matmul failed: ")


def test_missing_torch_fails_each_cuda_check(tmp_path: Path) -> None:
    # A python without torch: shadow it with a package that raises on import.
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text("raise ImportError('no torch here')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    results = outcomes(judge("[cuda]\nnccl = true\navailable = true", env=env))
    assert results == {
        "cuda nccl": ("fail", "host: cuda.nccl: torch does not import: ImportError: no torch here"),
        "cuda available": ("skip", "host: skipped: no GPU"),
    }


OBSERVED_CUDA_BUILD = {
    "error": None,
    "version": "2.6.0+cu124",
    "cuda": "12.4",
    "cudnn": 90100,
    "arch_flags": ["sm_50", "sm_80", "sm_86", "sm_90"],
    "nccl": True,
    "cuda_available": True,
    "device_count": 1,
    "devices": ["NVIDIA H200"],
    "matmul": {"ok": True, "max_abs_diff": 1.1e-13},
}


@pytest.mark.parametrize(
    ("cuda", "expected"),
    [
        ("torch_cuda = '12.4'", ("pass", "host: torch 2.6.0+cu124 is built with CUDA 12.4")),
        ("torch_cuda = '12'", ("pass", "host: torch 2.6.0+cu124 is built with CUDA 12.4")),
        ("torch_cuda = '12.1'", ("fail", "host: torch 2.6.0+cu124 is built with CUDA 12.4, expected 12.1")),
        ("cudnn = '>=9'", ("pass", "host: cuDNN 9.1.0 satisfies >=9")),
        ("cudnn = '>=9.2'", ("fail", "host: cuDNN 9.1.0 does not satisfy >=9.2")),
        ("arch_list = ['sm_80', 'sm_90']", ("pass", "host: torch 2.6.0+cu124 is compiled for sm_80 sm_90")),
        (
            "arch_list = ['sm_75', 'sm_90']",
            (
                "fail",
                "host: CUDA architectures sm_75 missing from torch 2.6.0+cu124 (sm_50 sm_80 sm_86 sm_90)",
            ),
        ),
        ("nccl = true", ("pass", "host: NCCL is available in torch 2.6.0+cu124")),
        ("available = true", ("pass", "host: CUDA is available to torch 2.6.0+cu124")),
        ("min_devices = 1", ("pass", "host: torch 2.6.0+cu124 sees 1 CUDA device")),
        ("min_devices = 8", ("fail", "host: torch 2.6.0+cu124 sees 1 CUDA device, expected at least 8")),
        ("matmul = true", ("pass", "host: GPU matmul equals the CPU result (max abs diff 1.1e-13)")),
    ],
)
def test_cuda_evaluation_of_a_cuda_build(cuda: str, expected: tuple[str, str]) -> None:
    checks = checks_from(f"[cuda]\n{cuda}")
    observations = {"steps": {"torch": OBSERVED_CUDA_BUILD, "user": {"uid": 0}}}
    results = evaluate(IMAGE, checks, config={}, labels={}, observations=observations, gpu=True)
    assert [(result.status, result.message) for result in results] == [expected]


@pytest.mark.parametrize(
    ("number", "text"), [(90100, "9.1.0"), (90501, "9.5.1"), (8902, "8.9.2"), (7605, "7.6.5")]
)
def test_cudnn_version_text(number: int, text: str) -> None:
    assert cudnn_version_text(number) == text

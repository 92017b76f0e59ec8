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
from imagecascade.smoke.evaluate import cudnn_version_text, evaluate
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


def test_report_survives_output_on_stdout() -> None:
    spec = {"commands": [{"name": "noise", "run": [sys.executable, "-c", "print('{not json')"]}]}
    report = run_probe(spec)
    assert report["commands"]["noise"]["output"] == "{not json\n"
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


def test_files(tmp_path: Path) -> None:
    script = tmp_path / "run.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    data = tmp_path / "data.txt"
    data.write_text("x")
    data.chmod(0o644)
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    results = outcomes(
        judge(
            f"""
            [[files]]
            path = "{script}"
            executable = true
            [[files]]
            path = "{data}"
            executable = true
            [[files]]
            path = "{data}-missing"
            [[files]]
            path = "{tmp_path / "dangling"}"
            [[files]]
            path = "/"
            exists = false
            [[files]]
            path = "{tmp_path / "absent"}"
            exists = false
            """
        )
    )
    assert results[f"file {script}"] == ("pass", f"host: file {script} exists")
    assert results[f"file {data}"] == ("fail", f"host: file {data} is not executable (mode 0644)")
    assert results[f"file {data}-missing"] == ("fail", f"host: file {data}-missing is missing")
    assert results[f"file {tmp_path / 'dangling'}"] == (
        "fail",
        f"host: file {tmp_path / 'dangling'} is missing (a broken symlink)",
    )
    assert results["file /"] == ("fail", "host: file / exists (dir), expected absent")
    assert results[f"file {tmp_path / 'absent'}"] == ("pass", f"host: file {tmp_path / 'absent'} is absent")


def test_commands() -> None:
    python = json.dumps(sys.executable)
    results = outcomes(
        judge(
            f"""
            timeout_seconds = 13
            [[commands]]
            name = "says-usage"
            run = [{python}, "-c", "import sys; sys.stderr.write('usage: x')"]
            output = "^usage"
            [[commands]]
            name = "wrong-output"
            run = [{python}, "-c", "print('hello')"]
            output = "usage"
            [[commands]]
            name = "exits-1"
            run = [{python}, "-c", "print('boom'); raise SystemExit(1)"]
            [[commands]]
            name = "not-installed"
            run = ["torchrun-that-does-not-exist", "--help"]
            [[commands]]
            name = "hangs"
            run = [{python}, "-c", "import time; time.sleep(30)"]
            [[commands]]
            name = "after-the-budget"
            run = ["true"]
            [[commands]]
            name = "needs-gpu"
            run = ["nvidia-smi"]
            gpu = true
            """
        )
    )
    assert results == {
        "command says-usage": ("pass", "host: command says-usage exited 0"),
        "command wrong-output": ("fail", "host: command wrong-output output does not match 'usage'"),
        "command exits-1": ("fail", "host: command exits-1 exited 1: boom"),
        "command not-installed": (
            "fail",
            "host: command not-installed: cannot run torchrun-that-does-not-exist: No such file or directory",
        ),
        "command hangs": ("fail", "host: command hangs: timed out: the commands' time budget (3s) ran out"),
        "command after-the-budget": (
            "fail",
            "host: command after-the-budget: not run: the commands' time budget (3s) was spent",
        ),
        "command needs-gpu": ("skip", "host: skipped: no GPU"),
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
    assert report["torch"] is None


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

    report = cpu_torch_report["torch"]
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
    observations = {"torch": OBSERVED_CUDA_BUILD, "user": {"uid": 0}}
    results = evaluate(IMAGE, checks, config={}, labels={}, observations=observations, gpu=True)
    assert [(result.status, result.message) for result in results] == [expected]


@pytest.mark.parametrize(
    ("number", "text"), [(90100, "9.1.0"), (90501, "9.5.1"), (8902, "8.9.2"), (7605, "7.6.5")]
)
def test_cudnn_version_text(number: int, text: str) -> None:
    assert cudnn_version_text(number) == text

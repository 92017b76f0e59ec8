"""Judge an image: its config, labels and the probe's observations against its declared checks."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Any

from imagecascade.core.checks import SmokeChecks
from imagecascade.smoke.results import NO_GPU, CheckResult, Status


def evaluate(
    image: str,
    checks: SmokeChecks,
    *,
    config: Mapping[str, Any],
    labels: Mapping[str, str],
    observations: Mapping[str, Any] | None,
    probe_failure: str | None = None,
    gpu: bool = False,
    require_gpu: bool = False,
) -> list[CheckResult]:
    """Turn the image's config and the probe's observations into one result per check."""
    results: list[CheckResult] = []

    def add(check: str, status: Status, message: str) -> None:
        results.append(CheckResult(image, check, status, f"{image}: {message}"))

    def no_gpu(check: str, what: str) -> None:
        if require_gpu:
            add(check, "fail", f"{what} needs a GPU, but the engine offers none (--require-gpu)")
        else:
            add(check, "skip", NO_GPU)

    _evaluate_host(checks, config, labels, add)
    if probe_failure is not None:
        add("probe", "fail", probe_failure)
        return results
    if observations is None:
        return results
    _evaluate_python(checks, observations, add)
    for command in checks.commands:
        if command.gpu and not gpu:
            no_gpu(f"command {command.name}", f"command {command.name}")
            continue
        _evaluate_command(command.name, command.output, observations["commands"].get(command.name), add)
    _evaluate_files(checks, observations, add)
    for name, pattern in checks.env.items():
        _expect_match(f"env {name}", observations["env"].get(name), pattern, add)
    if checks.config.non_root is not None:
        uid = observations["user"]["uid"]
        user_name = observations["user"].get("name")
        runs_as = f"uid {uid}" + (f" ({user_name})" if user_name else "")
        if (uid != 0) == checks.config.non_root:
            add("config non_root", "pass", f"runs as {runs_as}")
        else:
            wanted = "a non-root user" if checks.config.non_root else "root"
            add("config non_root", "fail", f"runs as {runs_as}, expected {wanted}")
    if checks.cuda.declared:
        _evaluate_cuda(checks, observations.get("torch") or {}, add, no_gpu, gpu)
    return results


_Add = Callable[[str, Status, str], None]


def _expect_match(check: str, value: str | None, pattern: str, add: _Add) -> None:
    """An env variable or label whose whole value must match `pattern`."""
    if value is None:
        add(check, "fail", f"{check} is not set, expected {pattern!r}")
    elif re.fullmatch(pattern, value):
        add(check, "pass", f"{check} is {value!r}")
    else:
        add(check, "fail", f"{check} is {value!r}, expected {pattern!r}")


def _evaluate_host(
    checks: SmokeChecks, config: Mapping[str, Any], labels: Mapping[str, str], add: _Add
) -> None:
    for name, pattern in checks.labels.items():
        _expect_match(f"label {name}", labels.get(name), pattern, add)
    expected = checks.config
    if expected.user is not None:
        user = config.get("User") or ""
        shown = repr(user) if user else "unset (root)"
        status: Status = "pass" if user == expected.user else "fail"
        wrong = "" if status == "pass" else f", expected {expected.user!r}"
        add("config user", status, f"user is {shown}{wrong}")
    for key, field, wanted in (
        ("entrypoint", "Entrypoint", expected.entrypoint),
        ("cmd", "Cmd", expected.cmd),
    ):
        if wanted is None:
            continue
        actual = list(config.get(field) or [])
        if actual == list(wanted):
            add(f"config {key}", "pass", f"{key} is {actual}")
        else:
            add(f"config {key}", "fail", f"{key} is {actual}, expected {list(wanted)}")
    if expected.workdir is not None:
        workdir = config.get("WorkingDir") or ""
        status = "pass" if workdir == expected.workdir else "fail"
        shown = repr(workdir) if workdir else "unset (/)"
        wrong = "" if status == "pass" else f", expected {expected.workdir!r}"
        add("config workdir", status, f"workdir is {shown}{wrong}")


def _evaluate_python(checks: SmokeChecks, observations: Mapping[str, Any], add: _Add) -> None:
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    for module in checks.imports:
        error = observations["imports"].get(module)
        if error is None:
            add(f"import {module}", "pass", f"module {module} imports")
        else:
            add(f"import {module}", "fail", f"module {module} does not import: {error}")
    for distribution, specifier in checks.versions.items():
        installed = observations["versions"].get(distribution)
        check = f"version {distribution}"
        if installed is None:
            add(check, "fail", f"distribution {distribution} is not installed, expected {specifier}")
            continue
        try:
            satisfied = SpecifierSet(specifier).contains(Version(installed), prereleases=True)
        except InvalidVersion:
            add(check, "fail", f"{distribution} {installed} is not a PEP 440 version, expected {specifier}")
            continue
        verb = "satisfies" if satisfied else "does not satisfy"
        add(check, "pass" if satisfied else "fail", f"{distribution} {installed} {verb} {specifier}")
    if checks.pip_check:
        result = observations.get("pip_check") or {}
        output = str(result.get("output", "")).strip()
        if result.get("returncode") == 0:
            add("pip check", "pass", "pip check is clean")
        elif "No module named pip" in output:
            add("pip check", "fail", "pip check: pip is not installed")
        elif result.get("error"):
            add("pip check", "fail", f"pip check: {result['error']}")
        else:
            add("pip check", "fail", f"pip check found problems: {'; '.join(output.splitlines()[:5])}")


def _evaluate_command(name: str, output: str | None, result: Mapping[str, Any] | None, add: _Add) -> None:
    check = f"command {name}"
    if result is None:
        add(check, "fail", f"command {name} was not run")
    elif result.get("error"):
        add(check, "fail", f"command {name}: {result['error']}")
    elif result["returncode"] != 0:
        last = str(result.get("output", "")).strip().splitlines()[-1:]
        add(check, "fail", f"command {name} exited {result['returncode']}" + (f": {last[0]}" if last else ""))
    elif output is not None and not re.search(output, str(result.get("output", ""))):
        add(check, "fail", f"command {name} output does not match {output!r}")
    else:
        add(check, "pass", f"command {name} exited 0")


def _evaluate_files(checks: SmokeChecks, observations: Mapping[str, Any], add: _Add) -> None:
    for file in checks.files:
        seen = observations["files"].get(file.path) or {"exists": False, "kind": "missing"}
        check = f"file {file.path}"
        if not file.exists:
            if seen["exists"]:
                add(check, "fail", f"file {file.path} exists ({seen['kind']}), expected absent")
            else:
                add(check, "pass", f"file {file.path} is absent")
        elif not seen["exists"]:
            detail = " (a broken symlink)" if seen["kind"] == "broken-link" else ""
            add(check, "fail", f"file {file.path} is missing{detail}")
        elif file.executable is True and not seen["executable"]:
            what = "a directory" if seen["kind"] == "dir" else f"mode {seen['mode']:04o}"
            add(check, "fail", f"file {file.path} is not executable ({what})")
        elif file.executable is False and seen["executable"]:
            add(check, "fail", f"file {file.path} is executable (mode {seen['mode']:04o}), expected not")
        else:
            add(check, "pass", f"file {file.path} exists")


def cudnn_version_text(number: int) -> str:
    """cuDNN's integer version as X.Y.Z (9 and later: 90100 -> 9.1.0; 8: 8902 -> 8.9.2)."""
    if number >= 10000:
        return f"{number // 10000}.{number % 10000 // 100}.{number % 100}"
    return f"{number // 1000}.{number % 1000 // 100}.{number % 100}"


def _evaluate_cuda(
    checks: SmokeChecks,
    torch: Mapping[str, Any],
    add: _Add,
    no_gpu: Callable[[str, str], None],
    gpu: bool,
) -> None:
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    cuda = checks.cuda
    declared = [field.name for field in dataclasses.fields(cuda) if getattr(cuda, field.name) is not None]
    gpu_only = ("available", "min_devices", "matmul")
    if not gpu:
        for name in declared:
            if name in gpu_only:
                no_gpu(f"cuda {name}", f"cuda.{name}")
        declared = [name for name in declared if name not in gpu_only]
    if torch.get("error") or not torch:
        reason = torch.get("error", "not probed")
        for name in declared:
            add(f"cuda {name}", "fail", f"cuda.{name}: torch does not import: {reason}")
        return
    build = f"torch {torch['version']}"
    if cuda.torch_cuda is not None:
        built = torch.get("cuda")
        if built is None:
            add("cuda torch_cuda", "fail", f"{build} is built without CUDA, expected CUDA {cuda.torch_cuda}")
        elif str(built).split(".")[: len(cuda.torch_cuda.split("."))] == cuda.torch_cuda.split("."):
            add("cuda torch_cuda", "pass", f"{build} is built with CUDA {built}")
        else:
            add("cuda torch_cuda", "fail", f"{build} is built with CUDA {built}, expected {cuda.torch_cuda}")
    if cuda.cudnn is not None:
        number = torch.get("cudnn")
        if not number:
            add("cuda cudnn", "fail", f"{build} has no cuDNN, expected {cuda.cudnn}")
        else:
            text = cudnn_version_text(int(number))
            ok = SpecifierSet(cuda.cudnn).contains(Version(text), prereleases=True)
            verb = "satisfies" if ok else "does not satisfy"
            add("cuda cudnn", "pass" if ok else "fail", f"cuDNN {text} {verb} {cuda.cudnn}")
    if cuda.arch_list is not None:
        compiled = list(torch.get("arch_flags") or [])
        missing = [arch for arch in cuda.arch_list if arch not in compiled]
        absent = " ".join(missing)
        if not missing:
            add("cuda arch_list", "pass", f"{build} is compiled for {' '.join(cuda.arch_list)}")
        elif not compiled:
            add(
                "cuda arch_list", "fail", f"CUDA architectures {absent} missing: {build} has none compiled in"
            )
        else:
            compiled_text = " ".join(compiled)
            add(
                "cuda arch_list",
                "fail",
                f"CUDA architectures {absent} missing from {build} ({compiled_text})",
            )
    if cuda.nccl is not None:
        ok = bool(torch.get("nccl")) == cuda.nccl
        state = "available" if torch.get("nccl") else "not available"
        add("cuda nccl", "pass" if ok else "fail", f"NCCL is {state} in {build}")
    if not gpu:
        return
    if cuda.available is not None:
        ok = bool(torch.get("cuda_available")) == cuda.available
        state = "available" if torch.get("cuda_available") else "not available"
        reason = f" ({torch['cuda_error']})" if torch.get("cuda_error") else ""
        add("cuda available", "pass" if ok else "fail", f"CUDA is {state} to {build}{reason}")
    if cuda.min_devices is not None:
        count = int(torch.get("device_count") or 0)
        ok = count >= cuda.min_devices
        add(
            "cuda min_devices",
            "pass" if ok else "fail",
            f"{build} sees {count} CUDA device{'s' if count != 1 else ''}"
            + ("" if ok else f", expected at least {cuda.min_devices}"),
        )
    if cuda.matmul:
        matmul = torch.get("matmul") or {"ok": False, "error": "not run"}
        if matmul.get("error"):
            add("cuda matmul", "fail", f"GPU matmul failed: {matmul['error']}")
        else:
            verb = "equals" if matmul["ok"] else "differs from"
            detail = f"max abs diff {matmul['max_abs_diff']:.3g}"
            add(
                "cuda matmul",
                "pass" if matmul["ok"] else "fail",
                f"GPU matmul {verb} the CPU result ({detail})",
            )

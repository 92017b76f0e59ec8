"""Judge an image: its config, labels, size, files and the probe's observations against its checks.

The probe reports one observation per step (`import torch`, `command torchrun-help`, ...) and how
it ended: complete, timed out while a step ran, or crashed in one. A check whose step was never
observed fails and says why (`import of skboom timed out after 5 s`), never passes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from imagecascade.core.checks import SmokeChecks
from imagecascade.smoke.cuda import evaluate_cuda
from imagecascade.smoke.files import FileFact, RunsAs, judge_files
from imagecascade.smoke.probe import OUTPUT_CAP
from imagecascade.smoke.results import NO_GPU, CheckResult, Status, without_escapes

_Add = Callable[[str, Status, str], None]
GB = 1000**3  # decimal, as `docker images` shows sizes


def evaluate(
    image: str,
    checks: SmokeChecks,
    *,
    config: Mapping[str, Any],
    labels: Mapping[str, str],
    observations: Mapping[str, Any] | None,
    probe_failure: str | None = None,
    files: Mapping[str, FileFact] | None = None,
    size: int | None = None,
    gpu: bool = False,
    no_gpu_detail: str = "the engine offers none",
    require_gpu: bool = False,
) -> list[CheckResult]:
    """Turn what was seen into one result per check.

    `observations` is the probe's report (None when no probe ran or it failed, then
    `probe_failure` says why); `files` maps each declared path to what the engine saw there;
    `size` is the image's size in bytes.
    """
    results: list[CheckResult] = []

    def add(check: str, status: Status, message: str) -> None:
        results.append(CheckResult(image, check, status, f"{image}: {message}"))

    def no_gpu(check: str, what: str) -> None:
        if require_gpu:
            add(check, "fail", f"{what} needs a GPU, but {no_gpu_detail} (--require-gpu)")
        else:
            add(check, "skip", NO_GPU)

    if checks.max_size_gb is not None and size is not None:
        shown = f"image is {size / GB:.2f} GB"
        if size > checks.max_size_gb * GB:
            add("size", "fail", f"{shown}, larger than max_size_gb {checks.max_size_gb:g}")
        else:
            add("size", "pass", f"{shown}, within max_size_gb {checks.max_size_gb:g}")
    _evaluate_host(checks, config, labels, add)
    steps = Steps(observations, probe_failure)
    if checks.files:
        user = steps.get("user")
        runs_as = (
            RunsAs(int(user["uid"]), steps.get("access") or {})
            if user is not None
            else _root_by_config(config)
        )
        unknown_user = "" if runs_as is not None else steps.why_not("user")
        judge_files(checks, files or {}, runs_as, unknown_user, add)
    if observations is None and probe_failure is None:
        return results
    for module in checks.imports:
        _evaluate_import(module, steps, add)
    _evaluate_versions(checks, steps, add)
    if checks.pip_check:
        _evaluate_pip_check(steps, add)
    for command in checks.commands:
        if command.gpu and not gpu:
            no_gpu(f"command {command.name}", f"command {command.name}")
            continue
        _evaluate_command(command.name, command.output, command.timeout_seconds, steps, add)
    for name, pattern in checks.env.items():
        env = steps.get("env")
        if env is None:
            add(f"env {name}", "fail", f"env {name}: {steps.why_not('env')}")
        else:
            _expect_match(f"env {name}", env.get(name), pattern, add)
    if checks.config.non_root is not None:
        _evaluate_non_root(checks.config.non_root, steps, add)
    if checks.cuda.declared:
        evaluate_cuda(checks, steps.get("torch"), steps.why_not("torch"), add, no_gpu, gpu)
    return results


class Steps:
    """The probe's observations by step, and why a step has none."""

    def __init__(self, report: Mapping[str, Any] | None, failure: str | None) -> None:
        self.observed: Mapping[str, Any] = (report or {}).get("steps") or {}
        self.outcome: Mapping[str, Any] = (report or {}).get("outcome") or {"kind": "complete"}
        self.budget = float((report or {}).get("budget") or 0)
        self.worker_error = (report or {}).get("worker_error")
        self.failure = failure

    def get(self, step: str) -> Any:
        return self.observed.get(step)

    def has(self, step: str) -> bool:
        return step in self.observed

    def why_not(self, step: str) -> str:
        """Why `step` has no observation, as the end of a message."""
        if self.failure is not None:
            return f"not observed: {self.failure}"
        kind, during = self.outcome.get("kind"), self.outcome.get("step")
        if kind == "timed_out":
            if during == step:
                return _timed_out_text(step, self.outcome, self.budget)
            return f"not run: timeout_seconds ({self.budget:g} s) ran out during {_step_text(during)}"
        if kind == "crashed":
            how = self.outcome.get("signal") or f"exit status {self.outcome.get('exit_code')}"
            if self.worker_error:
                how += f": {self.worker_error}"
            if during == step:
                return f"{_step_text(step)} crashed the probe ({how})"
            return f"not run: the probe crashed ({how}) during {_step_text(during)}"
        return "not observed by the probe"


def _step_text(step: str | None) -> str:
    if step is None:
        return "the probe's start"
    if step.startswith("import "):
        return f"import of {step.removeprefix('import ')}"
    if step == "torch":
        return "importing torch for the CUDA checks"
    return step


def _timed_out_text(step: str, outcome: Mapping[str, Any], budget: float) -> str:
    """`import of skboom timed out after 5 s`; when earlier steps took a second or more of the
    image's `timeout_seconds`, how long this one had and where the rest went."""
    started = float(outcome.get("at") or 0)
    if started < 1:
        return f"{_step_text(step)} timed out after {budget:g} s"
    ran = max(budget - started, 0)
    return (
        f"{_step_text(step)} timed out after {ran:.1f} s (timeout_seconds is {budget:g} s for all "
        f"in-container checks; {started:.1f} s went to the checks before it)"
    )


def _root_by_config(config: Mapping[str, Any]) -> RunsAs | None:
    """uid 0 when the image config says so without a probe (no USER, or root / 0)."""
    user = str(config.get("User") or "").split(":")[0]
    return RunsAs(0) if user in ("", "root", "0") else None


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


def _evaluate_import(module: str, steps: Steps, add: _Add) -> None:
    check = f"import {module}"
    if not steps.has(check):
        add(check, "fail", steps.why_not(check))
    elif steps.get(check) is None:
        add(check, "pass", f"module {module} imports")
    else:
        add(check, "fail", f"module {module} does not import: {steps.get(check)}")


def _evaluate_versions(checks: SmokeChecks, steps: Steps, add: _Add) -> None:
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    for distribution, specifier in checks.versions.items():
        check = f"version {distribution}"
        installed = steps.get(check)
        if not steps.has(check):
            add(check, "fail", steps.why_not(check))
            continue
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


def _evaluate_pip_check(steps: Steps, add: _Add) -> None:
    result = steps.get("pip check")
    if result is None:
        add("pip check", "fail", steps.why_not("pip check"))
        return
    output = str(result.get("head", "")).strip()
    if result.get("returncode") == 0:
        add("pip check", "pass", "pip check is clean")
    elif "No module named pip" in output:
        add("pip check", "fail", "pip check: pip is not installed")
    elif result.get("error"):
        add("pip check", "fail", f"pip check: {result['error']}")
    else:
        add("pip check", "fail", f"pip check found problems: {'; '.join(output.splitlines()[:5])}")


def _evaluate_command(name: str, pattern: str | None, own_limit: int | None, steps: Steps, add: _Add) -> None:
    check = f"command {name}"
    result = steps.get(check)
    if result is None:
        add(check, "fail", steps.why_not(check))
    elif result.get("error"):
        add(check, "fail", f"command {name}: {result['error']}")
    elif result.get("timed_out"):
        last = result.get("last_line") or ""
        add(
            check,
            "fail",
            f"command {name} timed out after {own_limit} s (its timeout_seconds)"
            + (f"; last output: {last}" if last else ""),
        )
    elif result.get("returncode") != 0:
        last = result.get("last_line") or ""
        add(check, "fail", f"command {name} exited {result['returncode']}" + (f": {last}" if last else ""))
    elif pattern is not None and result.get("pattern_error"):
        add(
            check,
            "fail",
            f"command {name}: the image's Python rejects {pattern!r}: {result['pattern_error']}",
        )
    elif pattern is not None and result.get("match") is None:
        total, searched = int(result.get("bytes") or 0), int(result.get("searched") or 0)
        where = f" in the first {OUTPUT_CAP // 2**20} MB" if total > searched else ""
        add(check, "fail", f"command {name} output does not match {pattern!r}{where}; {_printed(result)}")
    else:
        add(check, "pass", f"command {name} exited 0")


def _printed(result: Mapping[str, Any]) -> str:
    """What a command printed, in a few words: its size and the start and end of it."""
    total = int(result.get("bytes") or 0)
    if not total:
        return "it printed nothing"
    # repr() shows line breaks and control characters as escapes, so the excerpt stays one line.
    head = without_escapes(str(result.get("head", "")))
    tail = without_escapes(str(result.get("tail", "")))
    if total <= 200 and len(head) <= 200:
        return f"it printed {head!r}"
    return f"it printed {total:,} bytes, starting {head[:100]!r} and ending {tail[-100:]!r}"


def _evaluate_non_root(non_root: bool, steps: Steps, add: _Add) -> None:
    user = steps.get("user")
    if user is None:
        add("config non_root", "fail", f"config non_root: {steps.why_not('user')}")
        return
    uid = user["uid"]
    runs_as = f"uid {uid}" + (f" ({user['name']})" if user.get("name") else "")
    if (uid != 0) == non_root:
        add("config non_root", "pass", f"runs as {runs_as}")
    else:
        add(
            "config non_root",
            "fail",
            f"runs as {runs_as}, expected {'a non-root user' if non_root else 'root'}",
        )

"""Smoke checks: run the probe in a container of each built image and judge what it saw.

`nox -s smoke` runs `python -m imagecascade.smoke`; `main` is that edge (arguments, table,
JUnit file, exit code). Everything above it returns values and reports progress through a
callback; the engine is only reached through the verbs in `SmokeEngine`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from imagecascade import probe
from imagecascade.checks import SmokeChecks, effective_checks
from imagecascade.errors import CascadeError, ConfigError, NotBuilt

if TYPE_CHECKING:
    from imagecascade.engine import ContainerRun, ImageInfo
    from imagecascade.settings import Settings

Status = Literal["pass", "fail", "skip"]
JUNIT_PATH = Path("reports") / "smoke-junit.xml"
NO_GPU = "skipped: no GPU"
# Room after the commands' budget for the imports, torch and the JSON, inside the container limit.
_PROBE_OVERHEAD_SECONDS = 10


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """One check of one image; `message` is the line a person reads (`image: what happened`)."""

    image: str
    check: str
    status: Status
    message: str


@dataclasses.dataclass(frozen=True)
class ImageReport:
    image: str
    reference: str
    results: tuple[CheckResult, ...]
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return any(result.status == "fail" for result in self.results)

    def count(self, status: Status) -> int:
        return sum(1 for result in self.results if result.status == status)


@dataclasses.dataclass(frozen=True)
class SmokeTarget:
    """An image to check: its name, the exact reference to run, and its effective checks."""

    name: str
    reference: str
    checks: SmokeChecks


@dataclasses.dataclass(frozen=True)
class SmokeEvent:
    kind: Literal["started", "finished"]
    target: SmokeTarget
    report: ImageReport | None = None


class SmokeEngine(Protocol):
    def inspect_image(self, reference: str) -> ImageInfo | None: ...

    def run_container(
        self,
        reference: str,
        *,
        entrypoint: Sequence[str],
        command: Sequence[str],
        timeout_seconds: float,
        gpus: bool = False,
    ) -> ContainerRun: ...

    def gpu_available(self) -> bool: ...


def probe_spec(checks: SmokeChecks, *, gpu: bool) -> dict[str, Any]:
    """What the probe must observe; GPU-only commands are left out where there is no GPU."""
    return {
        "imports": list(checks.imports),
        "versions": sorted(checks.versions),
        "pip_check": bool(checks.pip_check),
        "commands": [
            {"name": command.name, "run": list(command.run)}
            for command in checks.commands
            if gpu or not command.gpu
        ],
        "command_budget_seconds": max(1, checks.timeout - _PROBE_OVERHEAD_SECONDS),
        "files": [file.path for file in checks.files],
        "env": sorted(checks.env),
        # GPU-only CUDA checks are skipped without a GPU: no need to pay for importing torch.
        "torch": checks.cuda.declared and (gpu or checks.cuda.declared_without_gpu),
        "gpu": gpu,
        "matmul": bool(checks.cuda.matmul),
    }


def needs_probe(checks: SmokeChecks) -> bool:
    spec = probe_spec(checks, gpu=True)
    in_container = ("imports", "versions", "pip_check", "commands", "files", "env", "torch")
    return any(spec[key] for key in in_container) or checks.config.non_root is not None


def smoke_image(
    engine: SmokeEngine, target: SmokeTarget, *, gpu: bool, require_gpu: bool = False
) -> ImageReport:
    """Run the probe in one container of `target` (if any check needs it) and judge everything."""
    started = time.monotonic()
    info = engine.inspect_image(target.reference)
    if info is None:
        raise NotBuilt(f"{target.name}: {target.reference} is not in the engine; run `invoke cascade` first")
    checks = target.checks
    observations: dict[str, Any] | None = None
    probe_failure: str | None = None
    if needs_probe(checks):
        gpus = gpu and (checks.cuda.needs_gpu or any(command.gpu for command in checks.commands))
        run = engine.run_container(
            target.reference,
            entrypoint=[checks.interpreter],
            command=["-c", probe.source(), json.dumps(probe_spec(checks, gpu=gpu))],
            timeout_seconds=checks.timeout,
            gpus=gpus,
        )
        observations, probe_failure = _read_probe(run, checks)
    results = evaluate(
        target.name,
        checks,
        config=info.config,
        labels=info.labels,
        observations=observations,
        probe_failure=probe_failure,
        gpu=gpu,
        require_gpu=require_gpu,
    )
    return ImageReport(
        image=target.name,
        reference=target.reference,
        results=tuple(results),
        seconds=round(time.monotonic() - started, 3),
    )


def run_smoke(
    engine: SmokeEngine,
    targets: Sequence[SmokeTarget],
    *,
    require_gpu: bool = False,
    on_event: Callable[[SmokeEvent], None] | None = None,
) -> list[ImageReport]:
    """Check every target in order; one image's failures never stop the others."""
    gpu = engine.gpu_available()
    reports: list[ImageReport] = []
    for target in targets:
        if on_event:
            on_event(SmokeEvent("started", target))
        report = smoke_image(engine, target, gpu=gpu, require_gpu=require_gpu)
        reports.append(report)
        if on_event:
            on_event(SmokeEvent("finished", target, report))
    return reports


def _read_probe(run: ContainerRun, checks: SmokeChecks) -> tuple[dict[str, Any] | None, str | None]:
    if run.error is not None:
        return None, f"cannot start the probe with {checks.interpreter!r}: {run.error}"
    if run.timed_out:
        return None, f"timed out after {checks.timeout}s"
    try:
        observations = probe.parse_report(run.stdout)
    except ValueError as error:
        return None, f"probe printed an unreadable report: {error}"
    if observations is None:
        tail = run.stderr.strip().splitlines()[-1:] or ["no output"]
        return None, f"probe exited {run.exit_code} without a report: {tail[0]}"
    return observations, None


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


def find_targets(
    settings: Settings,
    engine: SmokeEngine,
    names: Sequence[str] = (),
    *,
    pull: Callable[[str], ImageInfo | None] | None = None,
) -> list[SmokeTarget]:
    """Each named image (default: all) at its current hash tag; NotBuilt names every one missing.

    With a registry, an image missing from the engine is pulled from that registry.
    """
    from imagecascade.plan import compute_plan, image_reference

    plan = compute_plan(settings)
    specs = {planned.name: planned.spec for planned in plan.images}
    unknown = [name for name in names if name not in specs]
    if unknown:
        plural = "s" if len(unknown) > 1 else ""
        raise ConfigError(f"unknown image{plural} {', '.join(unknown)} (known: {', '.join(specs)})")
    targets: list[SmokeTarget] = []
    missing: list[str] = []
    for planned in plan.images:
        if names and planned.name not in names:
            continue
        reference = image_reference(planned.name, planned.tag, settings.registry)
        found = engine.inspect_image(reference) is not None
        if not found and settings.registry and pull is not None:
            found = pull(reference) is not None
        if found:
            targets.append(SmokeTarget(planned.name, reference, effective_checks(specs, planned.name)))
        else:
            missing.append(reference)
    if missing:
        where = f"in {settings.registry}" if settings.registry else "in the local engine"
        raise NotBuilt(
            f"not built {where}: {', '.join(missing)}; run `invoke cascade` first"
            + (f" (with --registry {settings.registry})" if settings.registry else "")
        )
    return targets


def main(argv: Sequence[str] | None = None) -> int:
    """`nox -s smoke -- [--registry REF] [--require-gpu] [IMAGE ...]`."""
    parser = argparse.ArgumentParser(
        prog="nox -s smoke --", description="Verify built images inside containers."
    )
    parser.add_argument("images", nargs="*", metavar="IMAGE", help="images to check (default: all)")
    parser.add_argument(
        "--registry", help="check REGISTRY/name:tag (pulled from there when not in the engine)"
    )
    parser.add_argument("--require-gpu", action="store_true", help="fail GPU checks instead of skipping them")
    parser.add_argument(
        "--junit", type=Path, help=f"JUnit XML path (default: {JUNIT_PATH} under the repository)"
    )
    args = parser.parse_args(argv)

    from rich.console import Console
    from rich.text import Text

    from imagecascade.engine import Engine
    from imagecascade.junit import write_junit
    from imagecascade.settings import find_root, load_settings

    # CI logs are not terminals: give the table room instead of rich's default 80 columns.
    console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
    try:
        root = find_root(Path.cwd())
        settings = load_settings(root).with_overrides(registry=args.registry)
        engine = Engine.from_environment()
        try:
            targets = find_targets(settings, engine, args.images, pull=engine.pull_image)

            def on_event(event: SmokeEvent) -> None:
                if event.kind == "started":
                    console.print(f"smoke {event.target.name} [dim]({event.target.reference})[/dim]")

            reports = run_smoke(engine, targets, require_gpu=args.require_gpu, on_event=on_event)
        finally:
            engine.close()
    except CascadeError as error:
        console.print(Text.assemble(("error: ", "red"), str(error)), highlight=False, soft_wrap=True)
        return error.exit_code
    junit_path = args.junit or root / JUNIT_PATH
    write_junit(reports, junit_path)
    _render(console, reports)
    console.print(f"JUnit report: {junit_path}")
    return 1 if any(report.failed for report in reports) else 0


def _render(console: Any, reports: Sequence[ImageReport]) -> None:
    from rich.table import Table
    from rich.text import Text

    table = Table(title="smoke checks")
    for column in ("image", "check", "result", "message"):
        table.add_column(column)
    styles = {"pass": "green", "fail": "bold red", "skip": "yellow"}
    for report in reports:
        for index, result in enumerate(report.results):
            message = result.message.removeprefix(f"{result.image}: ")
            status = Text(result.status, style=styles[result.status])
            last = index == len(report.results) - 1
            image = result.image if index == 0 else ""
            table.add_row(image, result.check, status, Text(message), end_section=last)
    console.print(table)
    # One unwrapped line per failure as well: what CI logs and grep need.
    for report in reports:
        for result in report.results:
            if result.status == "fail":
                console.print(Text(result.message), soft_wrap=True)
    passed, failed, skipped = (
        sum(report.count(status) for report in reports) for status in ("pass", "fail", "skip")
    )
    console.print(f"{passed} passed, {failed} failed, {skipped} skipped in {len(reports)} images")


if __name__ == "__main__":
    raise SystemExit(main())

"""Smoke checks: look at each built image through the engine and the probe, and judge what was seen.

`nox -s smoke` runs `python -m imagecascade.smoke` (`smoke/__main__.py`, the edge). Everything
here returns values and reports progress through a callback; the engine is only reached through
the verbs in `SmokeEngine`.

One container per image, labelled (`smoke/session.py`) and always removed: created, its files
read by the engine before it starts, then started with the probe when an in-container check
needs one. Time: `timeout_seconds` is what the probe's checks have together, counted from the
probe's start; the probe stops itself when it runs out. The host waits that long plus
STARTUP_ALLOWANCE_SECONDS (the container's and interpreter's start, the report) and then stops
the container itself, in case the probe could not.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol

from imagecascade.core.checks import SmokeChecks, effective_checks
from imagecascade.engines.gpu import GpuAccess, TrialEngine, gpu_access
from imagecascade.errors import ConfigError, NotBuilt
from imagecascade.smoke import probe
from imagecascade.smoke.evaluate import evaluate
from imagecascade.smoke.files import FileEngine, FileFact, observe_files
from imagecascade.smoke.results import CheckResult, ImageReport
from imagecascade.smoke.session import ContainerEngine, SmokeSession, remove_leftovers

if TYPE_CHECKING:
    from imagecascade.core.settings import Settings
    from imagecascade.engines.containers import ImageInfo

STARTUP_ALLOWANCE_SECONDS = 30
# Reading many files through the engine, a slow engine: time a live run may need beyond its limits.
LEFTOVER_GRACE_SECONDS = 600
# The probe's report is small (excerpts, not whole outputs); more than this is not read.
REPORT_LIMIT_BYTES = 8 * 1024 * 1024
STDERR_TAIL_BYTES = 64 * 1024
NO_CHECKS = "no checks"


@dataclasses.dataclass(frozen=True)
class SmokeTarget:
    """An image to check: its name, the exact reference to run, and its effective checks."""

    name: str
    reference: str
    checks: SmokeChecks


@dataclasses.dataclass(frozen=True)
class SmokeEvent:
    """Progress: an image `started` or `finished`, or `leftovers` removed (their ids in `removed`)."""

    kind: Literal["started", "finished", "leftovers"]
    target: SmokeTarget | None = None
    report: ImageReport | None = None
    removed: tuple[str, ...] = ()


class SmokeEngine(TrialEngine, FileEngine, ContainerEngine, Protocol):
    """The engine verbs a smoke run uses (`engines/engine.py` has them all)."""

    def inspect_image(self, reference: str) -> ImageInfo | None: ...

    def wait_container(self, container_id: str, timeout_seconds: float) -> int | None: ...

    def container_output(
        self, container_id: str, *, stdout_limit: int, stderr_limit: int
    ) -> tuple[str, str]: ...


def probe_spec(checks: SmokeChecks, *, gpu: bool) -> dict[str, Any]:
    """What the probe must observe; GPU-only commands are left out where there is no GPU."""
    return {
        "budget_seconds": checks.timeout,
        "imports": list(checks.imports),
        "versions": sorted(checks.versions),
        "pip_check": bool(checks.pip_check),
        "commands": [
            {
                "name": command.name,
                "run": list(command.run),
                "output": command.output,
                "timeout": command.timeout_seconds,
            }
            for command in checks.commands
            if gpu or not command.gpu
        ],
        "env": sorted(checks.env),
        # Executable by the image's user: asked of the kernel as that user (smoke/files.py).
        "access": [file.path for file in checks.files if file.executable is not None],
        # GPU-only CUDA checks are skipped without a GPU: no need to pay for importing torch.
        "torch": checks.cuda.declared and (gpu or checks.cuda.declared_without_gpu),
        "gpu": gpu,
        "matmul": bool(checks.cuda.matmul),
    }


def needs_probe(checks: SmokeChecks) -> bool:
    """Whether any check needs a process in the container (files need one only to know the user)."""
    spec = probe_spec(checks, gpu=True)
    in_container = ("imports", "versions", "pip_check", "commands", "env", "torch")
    return (
        any(spec[key] for key in in_container)
        or checks.config.non_root is not None
        or any(file.executable is not None for file in checks.files)
    )


def needs_gpu(checks: SmokeChecks) -> bool:
    return checks.cuda.needs_gpu or any(command.gpu for command in checks.commands)


def smoke_image(
    engine: SmokeEngine,
    target: SmokeTarget,
    session: SmokeSession,
    *,
    gpu: GpuAccess | None = None,
    require_gpu: bool = False,
    strict: bool = False,
) -> ImageReport:
    """Check one image: host-side checks, files through the engine, the probe in a container.

    `gpu` is how the engine offers GPUs (None or unavailable: GPU checks are skipped, or fail
    with `require_gpu`). An image without any check gets one skipped result (failed if `strict`).
    """
    started = time.monotonic()
    info = engine.inspect_image(target.reference)
    if info is None:
        raise NotBuilt(f"{target.name}: {target.reference} is not in the engine; run `invoke cascade` first")
    checks = target.checks
    if checks.declares_nothing:
        results = [_no_checks(target.name, strict)]
    else:
        have_gpu = gpu is not None and gpu.available
        observations: dict[str, Any] | None = None
        failure: str | None = None
        files: dict[str, FileFact] = {}
        if checks.files or needs_probe(checks):
            run_probe = needs_probe(checks)
            # When another run of this checkout may take it for a leftover: well after this run's own limit.
            deadline = time.time() + checks.timeout + STARTUP_ALLOWANCE_SECONDS + LEFTOVER_GRACE_SECONDS
            container = engine.create_container(
                target.reference,
                entrypoint=[checks.interpreter],
                command=["-c", probe.source(), json.dumps(probe_spec(checks, gpu=have_gpu))],
                labels=session.labels(deadline),
                gpus=gpu if have_gpu and run_probe and needs_gpu(checks) else None,
            )
            try:
                files = observe_files(engine, container, checks)
                if run_probe:
                    observations, failure = _run_probe(engine, container, checks)
            finally:
                engine.remove_container(container)
        results = evaluate(
            target.name,
            checks,
            config=info.config,
            labels=info.labels,
            observations=observations,
            probe_failure=failure,
            files=files,
            size=info.size,
            gpu=have_gpu,
            no_gpu_detail=f"the engine offers none ({gpu.detail})"
            if gpu is not None
            else "the engine offers none",
            require_gpu=require_gpu,
        )
    return ImageReport(
        image=target.name,
        reference=target.reference,
        results=tuple(results),
        seconds=round(time.monotonic() - started, 3),
        size=info.size,
    )


def _no_checks(image: str, strict: bool) -> CheckResult:
    where = f"add checks to [smoke] in images/{image}/image.toml"
    if strict:
        return CheckResult(image, NO_CHECKS, "fail", f"{image}: declares no smoke checks (--strict); {where}")
    return CheckResult(
        image, NO_CHECKS, "skip", f"{image}: declares no smoke checks: nothing was verified; {where}"
    )


def run_smoke(
    engine: SmokeEngine,
    targets: Sequence[SmokeTarget],
    session: SmokeSession,
    *,
    require_gpu: bool = False,
    strict: bool = False,
    on_event: Callable[[SmokeEvent], None] | None = None,
) -> list[ImageReport]:
    """Remove this repository's leftover containers, then check every target in order.

    One image's failures never stop the others. The engine's GPUs are looked for once, and only
    when a target has a check that needs one.
    """
    emit = on_event or (lambda event: None)
    removed = remove_leftovers(engine, session)
    if removed:
        emit(SmokeEvent("leftovers", removed=tuple(removed)))
    gpu: GpuAccess | None = None
    reports: list[ImageReport] = []
    for target in targets:
        if gpu is None and needs_gpu(target.checks) and not target.checks.declares_nothing:
            labels = session.labels(time.time() + STARTUP_ALLOWANCE_SECONDS)
            gpu = gpu_access(engine, target.reference, labels)
        emit(SmokeEvent("started", target))
        report = smoke_image(engine, target, session, gpu=gpu, require_gpu=require_gpu, strict=strict)
        reports.append(report)
        emit(SmokeEvent("finished", target, report))
    return reports


def _run_probe(
    engine: SmokeEngine, container: str, checks: SmokeChecks
) -> tuple[dict[str, Any] | None, str | None]:
    """Start the created container, wait for the probe, read its report (or say why there is none)."""
    error = engine.start_container(container)
    if error is not None:
        return None, f"cannot start the probe with {checks.interpreter!r}: {error}"
    limit = checks.timeout + STARTUP_ALLOWANCE_SECONDS
    exit_code = engine.wait_container(container, limit)
    if exit_code is None:
        return None, (
            f"the probe did not end within timeout_seconds ({checks.timeout} s) "
            f"+ {STARTUP_ALLOWANCE_SECONDS} s to start and report; the container was stopped"
        )
    stdout, stderr = engine.container_output(
        container, stdout_limit=REPORT_LIMIT_BYTES, stderr_limit=STDERR_TAIL_BYTES
    )
    try:
        observations = probe.parse_report(stdout)
    except ValueError as error:
        return None, f"probe printed an unreadable report: {error}"
    if observations is None:
        tail = [line for line in stderr.strip().splitlines() if line.strip()][-1:] or ["no output"]
        return None, f"probe exited {exit_code} without a report: {tail[0]}"
    return observations, None


def find_targets(
    settings: Settings,
    engine: SmokeEngine,
    names: Sequence[str] = (),
    *,
    pull: Callable[[str], ImageInfo | None] | None = None,
) -> list[SmokeTarget]:
    """Each named image (default: all) at its current hash tag; NotBuilt names every one missing.

    With a registry, an image missing from the engine is pulled from that registry. Checks come
    with `{name}` already replaced by each image's name.
    """
    from imagecascade.core.plan import compute_plan, image_reference

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
            checks = effective_checks(specs, planned.name).for_image(planned.name)
            targets.append(SmokeTarget(planned.name, reference, checks))
        else:
            missing.append(reference)
    if missing:
        where = f"in {settings.registry}" if settings.registry else "in the local engine"
        raise NotBuilt(
            f"not built {where}: {', '.join(missing)}; run `invoke cascade` first, with the same "
            "registry (cascade.toml's, or the same --registry)"
            if settings.registry
            else f"not built {where}: {', '.join(missing)}; run `invoke cascade` first"
        )
    return targets

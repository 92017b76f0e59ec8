"""Smoke checks: run the probe in a container of each built image and judge what it saw.

`nox -s smoke` runs `python -m imagecascade.smoke` (`smoke/__main__.py`, the edge). Everything
here returns values and reports progress through a callback; the engine is only reached through
the verbs in `SmokeEngine`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from imagecascade.core.checks import SmokeChecks, effective_checks
from imagecascade.errors import ConfigError, NotBuilt
from imagecascade.smoke import probe
from imagecascade.smoke.evaluate import evaluate
from imagecascade.smoke.results import ImageReport

if TYPE_CHECKING:
    from imagecascade.core.settings import Settings
    from imagecascade.engines.engine import ContainerRun, ImageInfo

JUNIT_PATH = Path("reports") / "smoke-junit.xml"
# Room after the commands' budget for the imports, torch and the JSON, inside the container limit.
_PROBE_OVERHEAD_SECONDS = 10


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

"""The cascade: decide what is stale in the target, then build it parents first, lineages in parallel.

Pure scheduling: the target is an ImageStore, the builds go to a Backend, and everything a user
sees is reported through `on_event`. An image counts as built if and only if its hash tag exists
in the target; a store or backend error stops the run and is never taken as "missing".
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from imagecascade.core.backend import Backend, BuildError, BuildEvent, ImageStore
from imagecascade.core.build_log import log_path
from imagecascade.core.build_request import (
    Provenance,
    build_request,
    now_rfc3339,
    read_provenance,
)
from imagecascade.core.decisions import FORCED, Action, CascadeOptions, Decision, decide, dependency_label
from imagecascade.core.graph import edges
from imagecascade.core.plan import Plan
from imagecascade.errors import INTERRUPTED, BackendError, BuildFailed, CascadeError, ConfigError, NotBuilt
from imagecascade.signals import interrupt_name

Outcome = Literal["built", "present", "failed", "refused", "blocked", "cancelled", "would build"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ImageResult:
    name: str
    outcome: Outcome
    reason: str
    reference: str
    duration: float = 0.0
    digest: str | None = None
    log_tail: tuple[str, ...] = ()
    fixes: tuple[str, ...] = ()  # refused: what makes it buildable
    log_path: Path | None = None  # the complete build log, when a build was attempted
    latest_moved: bool = False  # present, and `:latest` was moved back to it


@dataclasses.dataclass(frozen=True, kw_only=True)
class CascadeResult:
    target: str
    results: tuple[ImageResult, ...]
    cancelled: bool = False
    backend_error: str = ""  # set when the engine or registry failed mid-run
    interrupted_by: str = ""  # SIGINT, SIGTERM or SIGHUP when a signal stopped the run
    dry_run: bool = False  # nothing was built: outcomes say what a real run would do

    @property
    def ok(self) -> bool:
        return (
            not self.cancelled
            and not self.backend_error
            and all(result.outcome in ("built", "present", "would build") for result in self.results)
        )

    def outcome_of(self, name: str) -> Outcome:
        for result in self.results:
            if result.name == name:
                return result.outcome
        raise KeyError(name)

    def names(self, outcome: Outcome) -> list[str]:
        return [result.name for result in self.results if result.outcome == outcome]

    def verdict(self) -> tuple[int, str]:
        """(exit code, one line for the user): 0 all built or present, 3 the engine, a registry or a
        cloud service failed, 130 interrupted, 1 a build failed, 2 only refusals (cannot build).

        A dry run answers as the real run would for what it can know: 2 when an image would be
        refused, else 0."""
        if self.backend_error:
            return BackendError.exit_code, f"error: stopped: {self.backend_error}"
        if self.cancelled:
            by = f" by {self.interrupted_by}" if self.interrupted_by else ""
            built, stopped = self.names("built"), self.names("cancelled")
            done = f"built {', '.join(built)}" if built else "nothing was built"
            stopped_names = ", ".join(stopped) or "none"
            return INTERRUPTED, (
                f"interrupted{by}: {done}; stopped: {stopped_names}, left untagged (see above); "
                "rerun to build what is missing"
            )
        if self.ok:
            return 0, ""
        failed, blocked, refused = self.names("failed"), self.names("blocked"), self.names("refused")
        listed = f"; blocked: {', '.join(blocked)}" if blocked else ""
        if failed:
            refusals = f"; refused: {', '.join(refused)}" if refused else ""
            return BuildFailed.exit_code, (
                f"error: failed: {', '.join(failed)}{listed}{refusals}. "
                "Fix and rerun: only what is still missing is built."
            )
        rest = "the rest would be built (dry run)" if self.dry_run else "everything else was built"
        return ConfigError.exit_code, (
            f"error: cannot build: {', '.join(refused)}{listed}; {rest}. "
            "Apply the fixes above (declarations, settings, builder or secrets) and rerun."
        )

    def unlocked_builds(self, plan: Plan) -> list[str]:
        """Images this run built whose hash images.lock.json does not record."""
        return [name for name in self.names("built") if not plan.get(name).locked]


def run_cascade(
    plan: Plan,
    store: ImageStore,
    backend: Backend,
    options: CascadeOptions,
    on_event: Callable[[BuildEvent], None] | None = None,
    cancelled: threading.Event | None = None,
) -> CascadeResult:
    """Build what is missing (or forced) in dependency order, at most `options.jobs` at once.

    A failed build blocks its descendants only. Ctrl-C (or `cancelled` set by the caller) stops
    the running builds and starts no new ones. Raises NotBuilt when a selected image's parent or
    input is missing and not selected, BackendError when the target cannot be asked; in both cases
    nothing was built.
    """
    if options.jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, not {options.jobs}")
    lock = threading.Lock()

    def emit(event: BuildEvent) -> None:
        if on_event is not None:
            with lock:
                on_event(event)

    decisions = decide(plan, store, options)
    blocked = [decision for decision in decisions if decision.action == "parent missing"]
    if blocked:
        first = blocked[0]
        raise NotBuilt(
            f"{first.name}: {first.reason}; build it first or add --with-parents"
            + (f" ({len(blocked) - 1} more like this)" if len(blocked) > 1 else "")
        )
    for decision in decisions:
        would = "would build: " if decision.action == "build" else "would move :latest: "
        message = would if options.dry_run and (decision.action == "build" or decision.move_latest) else ""
        emit(BuildEvent(image=decision.name, kind="state", message=message + decision.reason))
    if options.dry_run:
        return CascadeResult(
            target=store.description,
            results=tuple(
                ImageResult(
                    name=decision.name,
                    outcome=_DRY_RUN_OUTCOMES[decision.action],
                    reason=decision.reason,
                    reference=decision.reference,
                    fixes=decision.fixes,
                )
                for decision in decisions
            ),
            dry_run=True,
        )
    scheduler = _Scheduler(plan, backend, decisions, options.jobs, emit, cancelled or threading.Event())
    return scheduler.run(store)


_NOT_BUILT: frozenset[Outcome] = frozenset({"failed", "refused", "blocked", "cancelled"})
_DRY_RUN_OUTCOMES: dict[Action, Outcome] = {
    "build": "would build",
    "present": "present",
    "refused": "refused",
    "blocked": "blocked",
}


class _Scheduler:
    def __init__(
        self,
        plan: Plan,
        backend: Backend,
        decisions: list[Decision],
        jobs: int,
        emit: Callable[[BuildEvent], None],
        cancelled: threading.Event,
    ) -> None:
        self.plan = plan
        self.backend = backend
        self.decisions = {decision.name: decision for decision in decisions}
        self.order = [decision.name for decision in decisions]
        self.jobs = jobs
        self.emit = emit
        self.cancelled = cancelled
        self.results: dict[str, ImageResult] = {}
        self.backend_error = ""
        self._provenance: Provenance | None = None

    def run(self, store: ImageStore) -> CascadeResult:
        target = store.description
        pending = [name for name in self.order if self.decisions[name].action == "build"]
        for name in self.order:
            decision = self.decisions[name]
            if decision.action in ("refused", "blocked"):
                self.results[name] = ImageResult(
                    name=name,
                    outcome="refused" if decision.action == "refused" else "blocked",
                    reason=decision.reason,
                    reference=decision.reference,
                    fixes=decision.fixes,
                )
                message = f"{decision.action}: {decision.reason}"
                self.emit(BuildEvent(image=name, kind="finished", message=message))
        interrupted = ""
        try:
            self._keep_present(store)
        except KeyboardInterrupt as interrupt:
            interrupted = interrupt_name(interrupt)
            self.cancelled.set()
        if pending:
            self._provenance = read_provenance(self.plan.settings.root)
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="build")
        running: dict[concurrent.futures.Future[ImageResult], str] = {}
        try:
            try:
                while pending or running:
                    if not self.cancelled.is_set():
                        self._launch(pending, running, pool)
                    elif pending:
                        for name in pending:
                            self._finish_unstarted(name, "cancelled", "not started: the run was stopped")
                        pending.clear()
                    if not running:
                        continue
                    done, _ = concurrent.futures.wait(
                        running, timeout=0.2, return_when=concurrent.futures.FIRST_COMPLETED
                    )
                    for future in done:
                        self._collect(running.pop(future), future)
            except KeyboardInterrupt as interrupt:
                interrupted = interrupt_name(interrupt)
                self.cancelled.set()
                for name in pending:
                    self._finish_unstarted(name, "cancelled", "not started: interrupted")
                pending.clear()
                # Running builds see `cancelled` and stop within seconds; wait for them so no tag
                # lands afterwards and the summary says what was built. A second Ctrl-C cannot make
                # the threads stop sooner, so it only keeps us waiting for them.
                self._drain(running)
        finally:
            pool.shutdown(wait=True)
        results = tuple(self.results[name] for name in self.order if name in self.results)
        return CascadeResult(
            target=target,
            results=results,
            cancelled=bool(interrupted) or (self.cancelled.is_set() and not self.backend_error),
            backend_error=self.backend_error,
            interrupted_by=interrupted,
        )

    def _keep_present(self, store: ImageStore) -> None:
        """Record the present images; move `:latest` back to those whose `:latest` is elsewhere."""
        present = [self.decisions[name] for name in self.order if self.decisions[name].action == "present"]
        for decision in present:
            self.results[decision.name] = ImageResult(
                name=decision.name,
                outcome="present",
                reason=decision.reason.split(";")[0],
                reference=decision.reference,
            )
        for decision in present:
            if not decision.move_latest or self.cancelled.is_set():
                continue
            name, tag = decision.name, self.plan.get(decision.name).tag
            try:
                store.move_latest(name, tag)
            except BackendError as error:
                self.backend_error = self.backend_error or f"{name}: cannot move :latest: {error}"
                self.cancelled.set()
                self.results[name] = ImageResult(
                    name=name, outcome="failed", reason=str(error), reference=decision.reference
                )
                self.emit(BuildEvent(image=name, kind="finished", message=f"failed: {error}"))
                continue
            kept = self.results[name]
            self.results[name] = dataclasses.replace(
                kept, reason=f"{kept.reason}; :latest moved here", latest_moved=True
            )
            self.emit(BuildEvent(image=name, kind="state", message=f"present; moved :latest to {tag}"))

    def _drain(self, running: dict[concurrent.futures.Future[ImageResult], str]) -> None:
        while running:
            try:
                done, _ = concurrent.futures.wait(running, timeout=0.2)
                for future in done:
                    self._collect(running[future], future)  # collected twice at worst, never lost
                    del running[future]
            except KeyboardInterrupt:
                continue

    def _launch(
        self,
        pending: list[str],
        running: dict[concurrent.futures.Future[ImageResult], str],
        pool: concurrent.futures.ThreadPoolExecutor,
    ) -> None:
        in_flight = set(running.values())
        for name in list(pending):
            dependencies = edges(self.plan.get(name).spec)
            unbuilt = [
                (dependency, how, self.results[dependency].outcome)
                for dependency, how in dependencies
                if dependency in self.results and self.results[dependency].outcome in _NOT_BUILT
            ]
            if unbuilt:
                pending.remove(name)
                dependency, how, outcome = unbuilt[0]
                verb = "failed" if outcome == "failed" else "was not built"
                self._finish_unstarted(name, "blocked", f"{dependency_label(dependency, how)} {verb}")
                continue
            if any(dependency in pending or dependency in in_flight for dependency, _ in dependencies):
                continue  # waits for its parent and its inputs
            if len(running) >= self.jobs:
                continue  # keep walking: descendants of failures still get marked blocked
            pending.remove(name)
            running[pool.submit(self._build, name)] = name
            in_flight.add(name)

    def _finish_unstarted(self, name: str, outcome: Outcome, reason: str) -> None:
        decision = self.decisions[name]
        self.results[name] = ImageResult(
            name=name, outcome=outcome, reason=reason, reference=decision.reference
        )
        self.emit(BuildEvent(image=name, kind="finished", message=f"{outcome}: {reason}"))

    def _build(self, name: str) -> ImageResult:
        image = self.plan.get(name)
        decision = self.decisions[name]
        assert self._provenance is not None
        fresh = decision.reason == FORCED
        request = build_request(self.plan, image, self._provenance, now_rfc3339(), fresh=fresh)
        logged = request.log_path
        started = time.monotonic()
        self.emit(BuildEvent(image=name, kind="started", message=f"building ({decision.reason})"))
        try:
            outcome = self.backend.build(request, self.emit, self.cancelled)
        except BuildError as error:
            stopped = self.cancelled.is_set()
            return ImageResult(
                name=name,
                outcome="cancelled" if stopped else "failed",
                reason=str(error),
                reference=decision.reference,
                duration=time.monotonic() - started,
                log_tail=error.log_tail,
                log_path=logged if logged is not None and logged.exists() else None,
            )
        return ImageResult(
            name=name,
            outcome="built",
            reason=decision.reason,
            reference=decision.reference,
            duration=time.monotonic() - started,
            digest=outcome.digest,
            log_tail=outcome.log_tail,
            log_path=logged if logged is not None and logged.exists() else None,
        )

    def _collect(self, name: str, future: concurrent.futures.Future[ImageResult]) -> None:
        decision = self.decisions[name]
        try:
            result = future.result()
        except BackendError as error:
            # The engine or registry failed: stop everything rather than guess.
            if not self.backend_error:
                self.backend_error = f"{name}: {error}"
            self.cancelled.set()
            logged = log_path(self.plan.settings.root, name, self.plan.get(name).tag)
            result = ImageResult(
                name=name,
                outcome="failed",
                reason=str(error),
                reference=decision.reference,
                log_path=logged if logged.exists() else None,
            )
        except CascadeError as error:  # this image's own bad input, e.g. a file changed after hashing
            result = ImageResult(name=name, outcome="failed", reason=str(error), reference=decision.reference)
        except Exception as error:  # a bug or an unexpected failure of this one image
            result = ImageResult(
                name=name,
                outcome="failed",
                reason=f"{type(error).__name__}: {error}",
                reference=decision.reference,
            )
        self.results[name] = result
        if result.outcome == "built":
            message = f"built in {result.duration:.1f} s"
        elif result.outcome == "cancelled":
            message = "cancelled"
        else:
            message = f"failed: {result.reason}"
        self.emit(BuildEvent(image=name, kind="finished", message=message))

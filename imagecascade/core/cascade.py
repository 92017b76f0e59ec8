"""The cascade: decide what is stale in the target, then build it parents first, lineages in parallel.

Pure scheduling: the target is an ImageStore, the builds go to a Backend, and everything a user
sees is reported through `on_event`. An image counts as built if and only if its hash tag exists
in the target; a store or backend error stops the run and is never taken as "missing".
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

from imagecascade.core.backend import Backend, BuildError, BuildEvent, BuildRequest, ImageStore
from imagecascade.core.build_log import log_path
from imagecascade.core.graph import ancestors, edges
from imagecascade.core.plan import Plan, PlannedImage, image_reference
from imagecascade.core.refusals import describe
from imagecascade.errors import INTERRUPTED, BackendError, BuildFailed, ConfigError, NotBuilt
from imagecascade.signals import interrupt_name

# "parent missing": a selected image's parent or input is outside the selection and not in the target.
Action = Literal["present", "build", "refused", "blocked", "parent missing"]
Outcome = Literal["built", "present", "failed", "refused", "blocked", "cancelled", "would build"]
FORCED = "forced (--force): no layer cache, external bases pulled again"
LOOKUP_THREADS = 8

LABEL_REVISION = "org.opencontainers.image.revision"
LABEL_CREATED = "org.opencontainers.image.created"
LABEL_SOURCE = "org.opencontainers.image.source"
LABEL_TITLE = "org.opencontainers.image.title"
LABEL_DESCRIPTION = "org.opencontainers.image.description"
LABEL_HASH = "io.imagecascade.freshness-hash"
LABEL_PARENT_HASH = "io.imagecascade.parent-hash"


@dataclasses.dataclass(frozen=True, kw_only=True)
class CascadeOptions:
    only: tuple[str, ...] = ()  # empty: every image of the plan
    with_parents: bool = False  # with `only`: also build missing ancestors (parents and inputs)
    force: bool = False  # rebuild the selected images even when their tag exists
    jobs: int = 2
    dry_run: bool = False


@dataclasses.dataclass(frozen=True, kw_only=True)
class Decision:
    name: str
    action: Action
    reason: str
    reference: str  # where the image lives: `<repo>:<hash tag>`
    base_reference: str  # what BASE_IMAGE will be
    fixes: tuple[str, ...] = ()  # refused: what makes it buildable
    move_latest: bool = False  # present, but `:latest` points elsewhere or is missing


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
        cloud service failed, 130 interrupted, 1 a build failed, 2 only refusals (cannot build)."""
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
        return ConfigError.exit_code, (
            f"error: cannot build: {', '.join(refused)}{listed}; everything else was built. "
            "Fix the declarations (see above) and rerun."
        )

    def unlocked_builds(self, plan: Plan) -> list[str]:
        """Images this run built whose hash images.lock.json does not record."""
        return [name for name in self.names("built") if not plan.get(name).locked]


@dataclasses.dataclass(frozen=True)
class Provenance:
    revision: str  # commit, `-dirty` when the tree has changes; "unknown" outside git
    source: str  # the origin remote without credentials, or ""


def base_reference(plan: Plan, image: PlannedImage) -> str:
    """BASE_IMAGE: the parent's exact hash tag in the target, or the base as declared."""
    if image.spec.parent is None:
        assert image.spec.base is not None
        return image.spec.base
    parent = plan.get(image.spec.parent)
    return image_reference(parent.name, parent.tag, plan.settings.registry)


def selection(plan: Plan, options: CascadeOptions) -> list[str]:
    """The names a run is about, in dependency order."""
    names = [image.name for image in plan.images]
    if not options.only:
        return names
    unknown = sorted(set(options.only) - set(names))
    if unknown:
        raise ConfigError(f"no such image: {', '.join(unknown)} (images/ has: {', '.join(names)})")
    chosen = set(options.only)
    if options.with_parents:
        for name in options.only:
            chosen.update(ancestors(plan.specs, name))
    return [name for name in names if name in chosen]


def input_references(plan: Plan, image: PlannedImage) -> dict[str, str]:
    """Each input's build arg -> that image's exact hash reference in the target (never :latest)."""
    return {
        arg: image_reference(name, plan.get(name).tag, plan.settings.registry)
        for arg, name in image.spec.inputs.items()
    }


def _dependency_label(name: str, how: str) -> str:
    return f"parent {name}" if how == "parent" else f"{how} {name}"


def decide(plan: Plan, store: ImageStore, options: CascadeOptions) -> list[Decision]:
    """What to do with each selected image, and why. Store errors propagate (BackendError)."""
    names = selection(plan, options)
    chosen = set(names)
    # Parents and inputs outside the selection must be present for an image to build on them.
    outside = {
        dependency
        for name in names
        for dependency, _ in edges(plan.get(name).spec)
        if dependency not in chosen
    }
    # --force applies to the named images; ancestors added by --with-parents build only when missing.
    forced = {name for name in names if options.force and (not options.only or name in options.only)}
    lookups = [name for name in names if name not in forced] + sorted(outside)
    present = _look_up(plan, store, lookups)
    # A present image whose `:latest` is elsewhere (an earlier `:latest` push failed, or another
    # tree built it last) gets `:latest` moved back: no rebuild.
    keep = [name for name in names if name not in forced and present[name]]
    latest = _latest_current(plan, store, keep)
    target = store.description
    decisions: list[Decision] = []
    building: set[str] = set()
    unbuildable: set[str] = set()  # refused or blocked in this run
    for name in names:
        image = plan.get(name)
        reference = image_reference(name, image.tag, plan.settings.registry)
        base = base_reference(plan, image)
        dependencies = edges(image.spec)
        missing = [
            (dependency, how)
            for dependency, how in dependencies
            if dependency not in chosen and not present[dependency]
        ]
        wanted = name in forced or not present[name]
        if missing and wanted:
            dependency, how = missing[0]
            decisions.append(
                Decision(
                    name=name,
                    action="parent missing",
                    reason=f"{_dependency_label(f'{dependency}:{plan.get(dependency).tag}', how)} "
                    f"is missing in {target}",
                    reference=reference,
                    base_reference=base,
                )
            )
            continue
        rebuilt = [(dependency, how) for dependency, how in dependencies if dependency in building]
        action: Action
        fixes: tuple[str, ...] = ()
        if wanted and image.cannot_build:
            action, reason = "refused", describe(image.cannot_build)
            fixes = tuple(refusal.fix for refusal in image.cannot_build)
        elif wanted and any(dependency in unbuildable for dependency, _ in dependencies):
            dependency, how = next(item for item in dependencies if item[0] in unbuildable)
            action, reason = "blocked", f"{_dependency_label(dependency, how)} cannot be built"
        elif name in forced:
            action, reason = "build", FORCED
        elif present[name]:
            action, reason = "present", f"present in {target}"
        elif rebuilt:
            because = ", ".join(_dependency_label(dependency, how) for dependency, how in rebuilt)
            verb = "is" if len(rebuilt) == 1 else "are"
            action, reason = "build", f"missing in {target} ({because} {verb} rebuilt)"
        else:
            action, reason = "build", f"missing in {target}"
        if action == "build":
            building.add(name)
        elif action in ("refused", "blocked"):
            unbuildable.add(name)
        move_latest = action == "present" and not latest.get(name, True)
        if move_latest:
            reason += "; :latest points elsewhere or is missing"
        decisions.append(
            Decision(
                name=name,
                action=action,
                reason=reason,
                reference=reference,
                base_reference=base,
                fixes=fixes,
                move_latest=move_latest,
            )
        )
    return decisions


def _look_up(plan: Plan, store: ImageStore, names: Sequence[str]) -> dict[str, bool]:
    return _ask_each(names, lambda name: store.has(name, plan.get(name).tag))


def _latest_current(plan: Plan, store: ImageStore, names: Sequence[str]) -> dict[str, bool]:
    return _ask_each(names, lambda name: store.latest_is(name, plan.get(name).tag))


def _ask_each(names: Sequence[str], question: Callable[[str], bool]) -> dict[str, bool]:
    if not names:
        return {}
    workers = min(LOOKUP_THREADS, len(names))
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lookup") as pool:
        return dict(zip(names, pool.map(question, names), strict=True))


def read_provenance(root: Path) -> Provenance:
    """The git commit (dirty-marked) and origin remote of `root`; "unknown" outside git."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return Provenance(revision="unknown", source="")
    status = git("status", "--porcelain")
    revision = commit + ("-dirty" if status else "")
    return Provenance(
        revision=revision, source=_without_credentials(git("remote", "get-url", "origin") or "")
    )


def _without_credentials(url: str) -> str:
    if "://" not in url:
        return url
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_request(
    plan: Plan, image: PlannedImage, provenance: Provenance, created: str, *, fresh: bool = False
) -> BuildRequest:
    """Everything the backend needs for one image: BASE_IMAGE, labels, both references, the log.

    `fresh` (--force) asks for no layer cache and freshly pulled external bases.
    """
    registry = plan.settings.registry
    sources = plan.settings.secrets
    base = base_reference(plan, image)
    labels = {
        LABEL_REVISION: provenance.revision,
        LABEL_CREATED: created,
        LABEL_SOURCE: provenance.source,
        LABEL_TITLE: image.name,
        LABEL_DESCRIPTION: image.spec.description,
        LABEL_HASH: image.hash,
        LABEL_PARENT_HASH: image.parent_hash if image.parent_hash is not None else base,
    }
    return BuildRequest(
        image=image,
        base_reference=base,
        build_args={**image.spec.build_args, **input_references(plan, image), "BASE_IMAGE": base},
        labels=labels,
        references=(
            image_reference(image.name, image.tag, registry),
            image_reference(image.name, "latest", registry),
        ),
        registry=registry,
        secrets={key: sources[key] for key in image.spec.secrets if key in sources},
        log_path=log_path(plan.settings.root, image.name, image.tag),
        fresh=fresh,
    )


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
                self._finish_unstarted(name, "blocked", f"{_dependency_label(dependency, how)} {verb}")
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

"""What a cascade run does with each selected image, and why: present, build, refused, blocked.

Decided before anything is built, from the plan and what the target (an ImageStore) holds; a store
error propagates (BackendError) and is never taken as "missing".
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
from collections.abc import Callable, Sequence
from typing import Literal

from imagecascade.core.backend import ImageStore
from imagecascade.core.build_request import base_reference
from imagecascade.core.graph import ancestors, edges
from imagecascade.core.plan import Plan, image_reference
from imagecascade.core.refusals import describe
from imagecascade.errors import ConfigError

# "parent missing": a selected image's parent or input is outside the selection and not in the target.
Action = Literal["present", "build", "refused", "blocked", "parent missing"]
FORCED = "forced (--force): no layer cache, external bases pulled again"
LOOKUP_THREADS = 8


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


def dependency_label(name: str, how: str) -> str:
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
                    reason=f"{dependency_label(f'{dependency}:{plan.get(dependency).tag}', how)} "
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
            action, reason = "blocked", f"{dependency_label(dependency, how)} cannot be built"
        elif name in forced:
            action, reason = "build", FORCED
        elif present[name]:
            action, reason = "present", f"present in {target}"
        elif rebuilt:
            because = ", ".join(dependency_label(dependency, how) for dependency, how in rebuilt)
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

"""The plan: every image's freshness hash, tag and lock state, in dependency order."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from imagecascade.core.declaration import ImageSpec, load_images
from imagecascade.core.digest_cache import DigestCache
from imagecascade.core.freshness import ImageInputs, collect_inputs, freshness_hash, short_hash
from imagecascade.core.lock import LockEntry, entry_for, explain, read_lock
from imagecascade.core.refusals import Refusal, declaration_refusals, describe
from imagecascade.core.settings import BUILD_LOG_DIR, SMOKE_JUNIT_FILE, Settings
from imagecascade.errors import ConfigError

FIX_COMMAND = "invoke hashes --write"
# The build-state detail of a present image whose `:latest` tag is not on it.
LATEST_ELSEWHERE = ":latest points elsewhere or is missing; `invoke cascade` moves it"


@dataclasses.dataclass(frozen=True, kw_only=True)
class PlannedImage:
    spec: ImageSpec
    inputs: ImageInputs
    hash: str
    parent_hash: str | None
    lock_hash: str | None
    input_hashes: Mapping[str, str] = dataclasses.field(default_factory=dict)  # build arg -> hash
    reasons: tuple[str, ...]  # why the hash differs from the lock; empty when current
    cannot_build: tuple[Refusal, ...] = ()  # why it cannot be built as it stands; empty when it can

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def tag(self) -> str:
        return short_hash(self.hash)

    @property
    def locked(self) -> bool:
        return self.lock_hash == self.hash

    def lock_entry(self) -> LockEntry:
        return entry_for(self.inputs, self.hash, self.parent_hash, self.input_hashes)


@dataclasses.dataclass(frozen=True)
class Plan:
    settings: Settings
    images: tuple[PlannedImage, ...]
    removed: tuple[str, ...]  # names the lock records but images/ no longer has
    warnings: tuple[str, ...] = ()  # one line each, for the entry point to show (e.g. a cache discarded)

    @property
    def specs(self) -> dict[str, ImageSpec]:
        return {image.name: image.spec for image in self.images}

    def get(self, name: str) -> PlannedImage:
        for image in self.images:
            if image.name == name:
                return image
        raise KeyError(name)

    @property
    def lock_is_current(self) -> bool:
        return not self.removed and all(image.locked for image in self.images)

    def lock_entries(self) -> dict[str, LockEntry]:
        return {image.name: image.lock_entry() for image in self.images}

    def with_refusals(self, refusals: Mapping[str, Sequence[Refusal]]) -> Plan:
        """This plan with more reasons images cannot be built (known at run time: backend, secrets).

        `refusals` maps image names to what to add; unknown names raise KeyError.
        """
        for name in refusals:
            self.get(name)
        images = tuple(
            dataclasses.replace(image, cannot_build=(*image.cannot_build, *refusals.get(image.name, ())))
            for image in self.images
        )
        return dataclasses.replace(self, images=images)


def image_reference(name: str, tag: str, registry: str) -> str:
    """Where an image lives: `name:tag` in the engine's store, or `registry/name:tag`."""
    return f"{registry}/{name}:{tag}" if registry else f"{name}:{tag}"


def compute_plan(settings: Settings, *, use_cache: bool = True, ignore_broken_lock: bool = False) -> Plan:
    """Hash every image and compare with the lock file.

    Raises ConfigError for bad declarations and for a broken lock file, unless
    `ignore_broken_lock` (for `invoke hashes --write`, which rewrites it): then the broken lock
    counts as empty and `warnings` says so.
    """
    specs = load_images(settings)
    warnings: list[str] = []
    try:
        lock = read_lock(settings.lock_path)
    except ConfigError as error:
        if not ignore_broken_lock:
            raise
        lock = {}
        warnings.append(f"{str(error).split('; run `')[0]}; rewriting it from the images")
    cache = DigestCache(settings.cache_dir / "digests.json" if use_cache else None)
    if cache.warning:
        warnings.append(cache.warning)
    # Never sent, whatever the context: this tool's cache, lock, build logs and smoke report, and
    # git's own folder, which change on every run or commit and would make a repository-root
    # context never settle.
    own = (
        settings.cache_dir,
        settings.lock_path,
        settings.root / BUILD_LOG_DIR,
        settings.root / SMOKE_JUNIT_FILE,
    )
    skip = frozenset(str(path.resolve()) for path in (*own, settings.root / ".git"))
    hashes: dict[str, str] = {}
    planned: list[PlannedImage] = []
    for name, spec in specs.items():
        inputs = collect_inputs(spec, cache, skip)
        parent_hash = hashes[spec.parent] if spec.parent is not None else None
        input_hashes = {arg: hashes[image] for arg, image in spec.inputs.items()}
        image_hash = freshness_hash(inputs, parent_hash, input_hashes)
        hashes[name] = image_hash
        old = lock.get(name)
        if old is None or old.hash == image_hash:
            reasons = explain(old, None)
        else:  # the per-file record is only worth building when there is a change to explain
            reasons = explain(old, entry_for(inputs, image_hash, parent_hash, input_hashes))
        planned.append(
            PlannedImage(
                spec=spec,
                inputs=inputs,
                hash=image_hash,
                parent_hash=parent_hash,
                input_hashes=input_hashes,
                lock_hash=old.hash if old else None,
                reasons=tuple(reasons),
                cannot_build=declaration_refusals(
                    spec, settings.root, specs[spec.parent] if spec.parent is not None else None
                ),
            )
        )
    cache.save()
    removed = tuple(sorted(set(lock) - set(specs)))
    return Plan(settings=settings, images=tuple(planned), removed=removed, warnings=tuple(warnings))


def cannot_build_line(image: PlannedImage) -> str:
    """`cannot build: ...` for an image that has refusals, else ""."""
    return describe(image.cannot_build) if image.cannot_build else ""


def stale_lines(plan: Plan) -> list[str]:
    """One line per image whose recorded hash is stale: name, old → new, and why."""
    lines = []
    for image in plan.images:
        if image.locked:
            continue
        old = short_hash(image.lock_hash) if image.lock_hash else "(none)"
        lines.append(f"{image.name}: {old} → {image.tag}: {'; '.join(image.reasons)}")
    for name in plan.removed:
        lines.append(f"{name}: recorded in the lock file but images/{name} is gone")
    return lines


def plan_document(
    plan: Plan, build_states: Mapping[str, tuple[str, str]] | None = None, backend: str = "local"
) -> dict[str, Any]:
    """The `invoke plan --json` document, in dependency order.

    `builds_on` says where the image is built when it is missing (`local` or `cloudbuild`, for
    the run's `backend`); `cannot_build` lists why it cannot be, with the fix.
    """
    from imagecascade.core.placement import builds_on

    images = []
    for image in plan.images:
        item: dict[str, Any] = {
            "name": image.name,
            "parent": image.spec.parent,
            "base": image.spec.base,
            "inputs": dict(image.spec.inputs),
            "input_references": {
                arg: image_reference(name, short_hash(image.input_hashes[arg]), plan.settings.registry)
                for arg, name in image.spec.inputs.items()
            },
            "base_pinned": image.spec.base_is_pinned if image.spec.base else None,
            "unpinned": image.spec.unpinned,
            "artifacts": [
                {
                    "name": artifact.name,
                    "url": artifact.render(image.spec.build_args),
                    "sha256_build_arg": artifact.sha256_build_arg,
                    "sha256": artifact.sha256(image.spec.build_args) or None,
                }
                for artifact in image.spec.artifacts
            ],
            "hash": image.hash,
            "tag": image.tag,
            "reference": image_reference(image.name, image.tag, plan.settings.registry),
            "locked": image.locked,
            "lock_hash": image.lock_hash,
            "reasons": list(image.reasons),
            "builds_on": builds_on(image.spec, backend),
            "cannot_build": [
                {"reason": refusal.reason, "fix": refusal.fix} for refusal in image.cannot_build
            ],
        }
        if build_states is not None:
            state, detail = build_states.get(image.name, ("unknown", "not looked up"))
            item["build_state"] = state
            item["build_state_detail"] = detail
            # "current" / "elsewhere" (missing or on another image) for present images, else null.
            latest = "elsewhere" if detail == LATEST_ELSEWHERE else "current"
            item["latest"] = latest if state == "present" else None
        images.append(item)
    return {"images": images, "removed_from_images": list(plan.removed)}

"""`invoke prune`: remove this repository's superseded images from the local engine.

ML images are many gigabytes and every change leaves one behind; but one engine is often shared by
several checkouts of the repository (git worktrees, second clones), and another checkout's current
image must survive (rebuilding PyTorch takes hours). For each image of the plan, the local images
tagged in its repository (`REGISTRY/name` or `name`) that carry this tool's labels
(`io.imagecascade.freshness-hash`, and `org.opencontainers.image.title` equal to the name) are
decided, newest first, by the first rule that applies:

1. `current`: its hash is this checkout's current hash;
2. kept: its hash is current in another checkout of this repository on this machine (a git
   worktree, or a clone that has built here), computed now from its files (core.checkouts);
3. kept: its hash is recorded in another checkout's images.lock.json (on disk), or in the
   images.lock.json at the tip of a local or remote-tracking branch;
4. kept: its revision label names the HEAD commit of another checkout whose declarations cannot
   be read now (so its current hashes are unknown);
5. kept: its revision label names a commit this repository does not have (another clone built it);
6. kept: it was created after this checkout's current image of that name (another checkout's
   later work, on this machine or not, or a change undone since; the next build here makes it
   prunable);
7. kept: it is one of the `keep` newest of those left;
8. removed: it is superseded.

Untagged images with the labels of one of the plan's images and this repository's source label
(what failed, stopped and repeated builds leave) are removed too, unless created within
UNTAGGED_GRACE_SECONDS (a running build may be about to tag one). Removing an image means
removing its tags in that repository; with its last tag the engine removes it. Images without
those labels, tags in other repositories, registries and containers are never touched; an image a
container still uses is kept and reported.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
from collections.abc import Mapping
from typing import Literal

from imagecascade.core.build_request import (
    LABEL_HASH,
    LABEL_REVISION,
    LABEL_SOURCE,
    LABEL_TITLE,
    read_provenance,
)
from imagecascade.core.checkouts import Checkouts, missing_commits, read_checkouts, revision_commit
from imagecascade.core.freshness import short_hash
from imagecascade.core.plan import Plan
from imagecascade.engines.containers import LocalImage
from imagecascade.engines.engine import Engine

Verdict = Literal["current", "kept", "remove"]
UNTAGGED_GRACE_SECONDS = 600

RULES = (
    "keep the current image, images current in or recorded by another checkout (worktree or clone "
    "on this machine) or a branch tip, images built from a commit this repository lacks or after the "
    "current one, and the --keep newest others; remove the rest, and untagged ones older than "
    f"{UNTAGGED_GRACE_SECONDS // 60} minutes"
)


@dataclasses.dataclass(frozen=True)
class PruneCandidate:
    """One local image of one of this repository's images, and what prune does with it and why."""

    name: str
    image_id: str
    tags: tuple[str, ...]  # its tags in this repository's namespace: what prune removes; () untagged
    hash: str
    created: str
    size: int
    verdict: Verdict
    reason: str  # the rule that decided: `current`, `recorded in ... of worktree /p`, `superseded`

    def describe(self) -> str:
        shown = (
            ", ".join(self.tags) or f"untagged {self.name} image {self.image_id.removeprefix('sha256:')[:12]}"
        )
        return f"{shown} (hash {short_hash(self.hash)}, created {self.created[:19]}, {size_text(self.size)})"


def prune_candidates(
    plan: Plan,
    engine: Engine,
    keep: int,
    *,
    checkouts: Checkouts | None = None,
    environ: Mapping[str, str] | None = None,
    untagged_grace_seconds: float = UNTAGGED_GRACE_SECONDS,
    now: datetime.datetime | None = None,
) -> list[PruneCandidate]:
    """What prune would do with every labelled local image of the plan's images (newest first per
    image), then with their untagged ones. `checkouts` defaults to what git and the list of
    checkouts in `environ`'s cache folder say (core.checkouts.read_checkouts)."""
    if checkouts is None:
        checkouts = read_checkouts(plan.settings.root, os.environ if environ is None else environ)
    found: dict[str, list[LocalImage]] = {}
    for image in plan.images:
        repository = f"{plan.settings.registry}/{image.name}" if plan.settings.registry else image.name
        found[image.name] = [
            local
            for local in engine.list_images(repository, label=LABEL_HASH)
            # Not another tool's or project's image, nor one listed only by a digest in the repository.
            if local.labels.get(LABEL_TITLE) == image.name
            and any(tag.rpartition(":")[0] == repository for tag in local.tags)
        ]
    names = {image.name for image in plan.images}
    untagged = [local for local in engine.list_untagged(LABEL_HASH) if local.labels.get(LABEL_TITLE) in names]
    everything = [*untagged, *(local for images in found.values() for local in images)]
    commits = {revision_commit(local.labels.get(LABEL_REVISION, "")) for local in everything} - {""}
    foreign = missing_commits(plan.settings.root, commits) if checkouts.in_git else set()
    unreadable = {other.head: other for other in checkouts.others if other.problem and other.head}
    candidates: list[PruneCandidate] = []
    for image in plan.images:
        repository = f"{plan.settings.registry}/{image.name}" if plan.settings.registry else image.name
        current = [local.created for local in found[image.name] if local.labels.get(LABEL_HASH) == image.hash]
        current_created = max(current) if current else None
        kept = 0
        for local in found[image.name]:
            full_hash = local.labels.get(LABEL_HASH, "")
            commit = revision_commit(local.labels.get(LABEL_REVISION, ""))
            verdict: Verdict = "kept"
            using = next((other for other in checkouts.others if full_hash in other.current), None)
            if full_hash == image.hash:
                verdict, reason = "current", "current"
            elif using is not None:
                reason = f"current in {using}"
            elif full_hash in checkouts.recorded:
                reason = f"recorded in the images.lock.json of {checkouts.recorded[full_hash]}"
            elif commit in unreadable:
                other = unreadable[commit]
                reason = f"built from the HEAD of {other}, whose images cannot be read now ({other.problem})"
            elif commit in foreign:
                reason = (
                    f"built from commit {commit[:12]}, which this repository does not have (another clone's)"
                )
            elif current_created is not None and local.created > current_created:
                reason = (
                    "built after this checkout's current image (another checkout's, or a change undone since)"
                )
            elif kept < keep:
                kept += 1
                reason = f"one of the {keep} newest earlier images (--keep {keep})"
            else:
                verdict, reason = "remove", "superseded: no checkout, branch or later build here uses it"
            candidates.append(
                PruneCandidate(
                    name=image.name,
                    image_id=local.id,
                    tags=tuple(tag for tag in local.tags if tag.rpartition(":")[0] == repository),
                    hash=full_hash,
                    created=local.created,
                    size=local.size,
                    verdict=verdict,
                    reason=reason,
                )
            )
    now = now or datetime.datetime.now(datetime.UTC)
    source = read_provenance(plan.settings.root).source
    ours = [
        local
        for local in untagged
        if local.labels.get(LABEL_SOURCE, "") == source
        and revision_commit(local.labels.get(LABEL_REVISION, "")) not in foreign
    ]
    return candidates + _untagged(ours, untagged_grace_seconds, now)


def _untagged(images: list[LocalImage], grace: float, now: datetime.datetime) -> list[PruneCandidate]:
    """Untagged images of this repository: removed, unless younger than `grace` seconds."""
    candidates = []
    for local in images:
        name = local.labels.get(LABEL_TITLE, "")
        created = datetime.datetime.fromisoformat(local.created.replace("Z", "+00:00"))
        age = (now - created).total_seconds()
        verdict: Verdict = "remove"
        reason = "untagged: left by a failed, stopped or repeated build"
        if age < grace:
            verdict = "kept"
            reason = f"untagged, but created {max(0, int(age))} s ago: a running build may be about to tag it"
        candidates.append(
            PruneCandidate(
                name=name,
                image_id=local.id,
                tags=(),
                hash=local.labels.get(LABEL_HASH, ""),
                created=local.created,
                size=local.size,
                verdict=verdict,
                reason=reason,
            )
        )
    return candidates


def remove(engine: Engine, candidate: PruneCandidate) -> str:
    """Untag `candidate` in this repository (an untagged one: remove it, unless it got a tag
    meanwhile); "" when done, else why it stays (used by a container, tagged since)."""
    if not candidate.tags:
        now = engine.inspect_image(candidate.image_id)
        if now is None:
            return ""
        if now.tags:
            return f"tagged since as {', '.join(now.tags)}"
        return engine.untag_image(candidate.image_id)
    for tag in candidate.tags:
        problem = engine.untag_image(tag)
        if problem:
            return problem
    return ""


def size_text(size: int) -> str:
    """Bytes in decimal units, as docker prints sizes: `734 B`, `1.2 GB`."""
    if size < 1000:
        return f"{size} B"
    value = float(size)
    for unit in ("kB", "MB", "GB"):
        value /= 1000
        if value < 1000 or unit == "GB":
            break
    return f"{value:.1f} {unit}"

"""`invoke prune`: remove this repository's superseded images from the local engine.

ML images are many gigabytes and every change leaves one behind. For each image of the plan, the
local images tagged in its repository (`REGISTRY/name` or `name`) that carry this tool's labels
(`io.imagecascade.freshness-hash`, and `org.opencontainers.image.title` equal to the name) are
considered: the one at the current hash stays, and so do the `keep` newest others; the rest lose
their tags in that repository, and with their last tag the engine removes them. Images without
those labels, tags in other repositories, registries and containers are never touched; an image a
container still uses is kept and reported.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from imagecascade.core.build_request import LABEL_HASH, LABEL_TITLE
from imagecascade.core.freshness import short_hash
from imagecascade.core.plan import Plan
from imagecascade.engines.engine import Engine

Verdict = Literal["current", "kept", "remove"]


@dataclasses.dataclass(frozen=True)
class PruneCandidate:
    """One local image of one of this repository's images, and what prune does with it."""

    name: str
    image_id: str
    tags: tuple[str, ...]  # its tags in this repository's namespace: what prune removes
    hash: str
    created: str
    size: int
    verdict: Verdict

    def describe(self) -> str:
        shown = ", ".join(self.tags) or self.image_id[:19]
        return f"{shown} (hash {short_hash(self.hash)}, created {self.created[:19]}, {size_text(self.size)})"


def prune_candidates(plan: Plan, engine: Engine, keep: int) -> list[PruneCandidate]:
    """What prune would do with every labelled local image of the plan's images, newest first."""
    candidates: list[PruneCandidate] = []
    for image in plan.images:
        repository = f"{plan.settings.registry}/{image.name}" if plan.settings.registry else image.name
        kept = 0
        for local in engine.list_images(repository, label=LABEL_HASH):
            if local.labels.get(LABEL_TITLE) != image.name:
                continue  # another tool's or another project's image under the same name
            verdict: Verdict
            if local.labels.get(LABEL_HASH) == image.hash:
                verdict = "current"
            elif kept < keep:
                verdict, kept = "kept", kept + 1
            else:
                verdict = "remove"
            ours = tuple(tag for tag in local.tags if tag.rpartition(":")[0] == repository)
            candidates.append(
                PruneCandidate(
                    name=image.name,
                    image_id=local.id,
                    tags=ours,
                    hash=local.labels.get(LABEL_HASH, ""),
                    created=local.created,
                    size=local.size,
                    verdict=verdict,
                )
            )
    return candidates


def remove(engine: Engine, candidate: PruneCandidate) -> str:
    """Untag `candidate` in this repository; "" when done, else why it stays (used by a container)."""
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

"""Image repositories for the smoke tests, built on the real engine at their plan's hash tags.

Image names carry a per-run suffix, so runs of these tests by several people on one engine never
build, check or remove each other's images.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SUFFIX = uuid.uuid4().hex[:8]


def unique(name: str) -> str:
    return f"{name}-{SUFFIX}"


def write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


@contextmanager
def built(engine: Any, root: Path) -> Iterator[Path]:
    """Build every image of the repository at `root` (parents first), remove them afterwards."""
    from imagecascade.core.plan import compute_plan, image_reference
    from imagecascade.core.settings import load_settings

    plan = compute_plan(load_settings(root))
    references: list[str] = []
    try:
        for planned in plan.images:
            spec = planned.spec
            parent = image_reference(spec.parent, plan.get(spec.parent).tag, "") if spec.parent else spec.base
            reference = image_reference(planned.name, planned.tag, "")
            engine.client.images.build(
                path=str(spec.context),
                dockerfile=str(spec.dockerfile),
                tag=reference,
                buildargs={"BASE_IMAGE": str(parent)},
                network_mode="host",
                rm=True,
                forcerm=True,
            )
            references.append(reference)
        yield root
    finally:
        for reference in reversed(references):
            engine.remove_image(reference, force=True)

"""Where each image is built: the backend of the run, or Cloud Build for an image that requires it.

An image may declare `[cloudbuild] required = true` (a PyTorch compile needs 32 cores and hours).
With the local backend it is then built on Cloud Build and everything else on the local engine,
children pulling it from the registry. That needs a registry and a Cloud Build project: without
them the image cannot be built, and `placement_refusals` says why and what to configure, as a
refusal the cascade and `invoke plan` show like any other (`core/refusals.py`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal

from imagecascade.core.declaration import ImageSpec
from imagecascade.core.refusals import Refusal
from imagecascade.core.settings import Settings

if TYPE_CHECKING:
    from imagecascade.core.plan import Plan

BuildsOn = Literal["local", "cloudbuild"]
_FIXES = {
    "registry": "[registry] url in cascade.toml or --registry",
    "Cloud Build project": "[cloudbuild] project in cascade.toml or --project",
}


def builds_on(spec: ImageSpec, backend: str) -> BuildsOn:
    """Where a missing `spec` is built when the run uses `backend` ("local" or "cloudbuild")."""
    return "cloudbuild" if backend == "cloudbuild" or spec.cloudbuild.required else "local"


def placement_refusal(spec: ImageSpec, settings: Settings, backend: str) -> Refusal | None:
    """Why `spec` cannot be built when it must go to Cloud Build but this run has nowhere to send it."""
    if backend != "local" or not spec.cloudbuild.required:
        return None
    missing = [
        what
        for what, value in (
            ("registry", settings.registry),
            ("Cloud Build project", settings.cloudbuild_project),
        )
        if not value
    ]
    if not missing:
        return None
    return Refusal(
        reason=(
            "it must be built on Cloud Build ([cloudbuild] required = true) "
            f"but no {' and no '.join(missing)} is set"
        ),
        fix="set " + " and ".join(_FIXES[what] for what in missing),
    )


def placement_refusals(plan: Plan, backend: str) -> Mapping[str, tuple[Refusal, ...]]:
    """The refusals to add to `plan` (`Plan.with_refusals`) for a run with `backend`."""
    refusals = {image.name: placement_refusal(image.spec, plan.settings, backend) for image in plan.images}
    return {name: (refusal,) for name, refusal in refusals.items() if refusal is not None}

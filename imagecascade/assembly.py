"""Assembling a run from the layers: which backend builds, which store decides "already built",
and what stops each image where it would be built.

The entry points (tasks.py) call these; the cascade scheduler only ever sees the Backend and
ImageStore they return. Heavy imports (docker, google) happen only for the backend chosen.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from imagecascade.core.backend import Backend, ImageStore
from imagecascade.core.plan import Plan, PlannedImage
from imagecascade.core.refusals import Refusal
from imagecascade.core.settings import Settings
from imagecascade.errors import BackendError, ConfigError

if TYPE_CHECKING:
    from imagecascade.core.cascade import CascadeResult
    from imagecascade.core.secrets import SecretSource
    from imagecascade.engines.credentials import CredentialResolver

BACKENDS = ("local", "cloudbuild")


class RefusingBackend(Protocol):
    def refusal(self, image: PlannedImage, settings: Settings) -> tuple[Refusal, ...]: ...


class RunBackend(Backend, RefusingBackend, Protocol):
    """A backend that also says, before anything is built, what it cannot build here."""


def check_backend(name: str) -> None:
    """Raise ConfigError unless `name` is one of BACKENDS."""
    if name not in BACKENDS:
        raise ConfigError(
            f"--backend: unknown or unavailable backend {name!r} (available: {', '.join(BACKENDS)})"
        )


def placed(plan: Plan, backend: str) -> Plan:
    """The plan with each image refused that must go to Cloud Build where this run cannot send it."""
    from imagecascade.core.placement import placement_refusals

    return plan.with_refusals(placement_refusals(plan, backend))


def choose_backend(
    name: str,
    settings: Settings,
    plan: Plan,
    cloud: Mapping[str, Any] | None = None,
    credentials: CredentialResolver | None = None,
) -> RunBackend:
    """The backend of the run. `cloudbuild`: everything on Cloud Build; `local`: the local builder
    (`[build] builder`), with images that declare `[cloudbuild] required = true` sent to Cloud Build.

    `cloud` holds CloudBuildFlags fields from the command line. Raises ConfigError for a bad
    backend name or cloud flag, and whatever the chosen backend raises when it cannot start.
    """
    check_backend(name)
    from imagecascade.core.build_options import CloudBuildFlags

    flags = CloudBuildFlags(**(cloud or {}))
    flags.check()

    def cloudbuild() -> RunBackend:
        from imagecascade.cloud.cloudbuild import CloudBuildBackend

        return CloudBuildBackend(settings, flags)

    if name == "cloudbuild":
        return cloudbuild()
    from imagecascade.engines.buildkit import choose_local_builder

    local: RunBackend = choose_local_builder(settings, credentials=credentials)
    if not any(image.spec.cloudbuild.required for image in plan.images):
        return local
    from imagecascade.cloud.placement import PlacedBackend

    return PlacedBackend(settings, local, cloudbuild)


def target_store(backend: str, settings: Settings, credentials: CredentialResolver | None) -> ImageStore:
    """Where "already built" is decided; both backends ask the registry with the same credentials."""
    if backend == "cloudbuild":
        from imagecascade.cloud.registry_store import cloudbuild_store

        return cloudbuild_store(settings)
    from imagecascade.engines.store import open_store

    return open_store(settings.registry, credentials)


def with_refusals(plan: Plan, backend: RefusingBackend, settings: Settings) -> Plan:
    """The plan with what `backend` cannot build here (Dockerfile syntax, secrets): refused up front."""
    return plan.with_refusals({image.name: backend.refusal(image, settings) for image in plan.images})


def plan_refusals(plan: Plan, backend: str, settings: Settings) -> Plan:
    """For `invoke plan`: what stops each image where it would be built (the local builder's
    Dockerfile and secret reasons, or Cloud Build's missing Secret Manager versions), connecting
    to neither the engine nor Cloud Build."""
    from imagecascade.cloud.submission import secret_refusals
    from imagecascade.core.placement import builds_on
    from imagecascade.engines.buildkit import choose_local_builder

    local = {image.name for image in plan.images if builds_on(image.spec, backend) == "local"}
    builder = choose_local_builder(settings) if local else None
    return plan.with_refusals(
        {
            image.name: builder.refusal(image, settings)
            if builder and image.name in local
            else secret_refusals(image, settings)
            for image in plan.images
        }
    )


def check_secret_ids(plan: Plan, sources: Mapping[str, SecretSource]) -> None:
    """A secret given for an id no image declares is a typo: ConfigError instead of ignoring it."""
    declared = {key for image in plan.images for key in image.spec.secrets}
    unknown = sorted(set(sources) - declared)
    if unknown:
        raise ConfigError(
            f"secret {unknown[0]} ({sources[unknown[0]].origin}): no image declares it "
            f"(declared: {', '.join(sorted(declared)) or 'none'})"
        )


def why_missing(plan: Plan, store: Any, result: CascadeResult) -> dict[str, str]:
    """For a dry run: image name -> what the target holds instead of it, and what changed since.

    `store` is the run's ImageStore; one that cannot tell says so per image instead of failing.
    """
    from imagecascade.core.why import why_missing as explain

    missing = [item.name for item in result.results if item.reason.startswith("missing")]
    try:
        return explain(plan, store.newest_hash, missing, store.description)
    except BackendError as error:
        return {name: f"cannot tell why: {error}" for name in missing}

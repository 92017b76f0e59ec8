"""A backend that sends each image where it belongs: Cloud Build for images that require it, the
local engine for the rest. The registry is the store both share: what Cloud Build pushes, the
local builds of the children pull.

The cascade scheduler sees one backend and never learns which one ran.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from imagecascade.cloud.submission import secret_refusals
from imagecascade.core.backend import Backend, BuildError, BuildEvent, BuildOutcome, BuildRequest
from imagecascade.core.placement import builds_on, placement_refusal
from imagecascade.core.plan import PlannedImage
from imagecascade.core.refusals import Refusal
from imagecascade.core.settings import Settings
from imagecascade.errors import ConfigError


class PlacedBackend:
    name = "local"

    def __init__(self, settings: Settings, local: Backend, cloud: Callable[[], Backend]) -> None:
        """`cloud()` makes the Cloud Build backend; called once, when an image first needs it."""
        self._settings = settings
        self._local = local
        self._make_cloud = cloud
        self._cloud: Backend | None = None
        self._cloud_error: ConfigError | None = None
        self._lock = threading.Lock()
        self.description = getattr(local, "description", "")

    def refusal(self, image: PlannedImage, settings: Settings) -> tuple[Refusal, ...]:
        """What stops `image` where it would be built: the local builder's reasons, or Cloud Build's."""
        if builds_on(image.spec, "local") == "local":
            local_refusal = getattr(self._local, "refusal", None)
            return tuple(local_refusal(image, settings)) if local_refusal else ()
        return secret_refusals(image, settings)

    def build(
        self, request: BuildRequest, on_event: Callable[[BuildEvent], None], cancelled: threading.Event
    ) -> BuildOutcome:
        spec = request.image.spec
        if builds_on(spec, "local") == "local":
            return self._local.build(request, on_event, cancelled)
        refusal = placement_refusal(spec, self._settings, "local")
        if refusal is not None:  # the cascade refuses it up front; a caller that did not is told here
            raise BuildError(f"{spec.name}: cannot build: {refusal.reason}; {refusal.fix}")
        on_event(
            BuildEvent(image=spec.name, kind="state", message="on Cloud Build ([cloudbuild] required = true)")
        )
        return self._cloud_backend(spec.name).build(request, on_event, cancelled)

    def _cloud_backend(self, name: str) -> Backend:
        with self._lock:
            if self._cloud is None and self._cloud_error is None:
                try:
                    self._cloud = self._make_cloud()
                except ConfigError as error:
                    self._cloud_error = error
            if self._cloud_error is not None:
                raise BuildError(f"{name}: cannot build on Cloud Build: {self._cloud_error}")
            assert self._cloud is not None
            return self._cloud

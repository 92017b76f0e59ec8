"""The local backend: builds on the Docker Engine that DOCKER_HOST (or the default socket) names.

The context sent is a tar of exactly the entries that were hashed. The build has no tag; the
finished image is tagged (and pushed) afterwards, so a stopped or failed build leaves no tag.
"""

from __future__ import annotations

import collections
import re
import tempfile
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from imagecascade.core.backend import BuildError, BuildEvent, BuildOutcome, BuildRequest
from imagecascade.core.context import write_context_tar
from imagecascade.errors import BackendError

if TYPE_CHECKING:
    from imagecascade.engines.engine import Engine

LOG_TAIL_LINES = 30
_STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)$")
_BUILT = re.compile(r"^Successfully built ([0-9a-f]{12,64})$")
# Push errors that mean the registry is down or unreachable, not that this image was refused.
_UNREACHABLE = ("connection refused", "no such host", "i/o timeout", "dial tcp", "connection reset", "eof")


class LocalBackend:
    name = "local"

    def __init__(self, engine: Engine | None = None) -> None:
        # Without an engine, connect on the first build: a run with nothing to build needs none.
        self._given = engine
        self._lock = threading.Lock()

    @property
    def _engine(self) -> Engine:
        with self._lock:
            if self._given is None:
                from imagecascade.engines.engine import Engine

                self._given = Engine.from_environment()
            return self._given

    def build(
        self,
        request: BuildRequest,
        on_event: Callable[[BuildEvent], None],
        cancelled: threading.Event,
    ) -> BuildOutcome:
        image = request.image
        spec = image.spec
        name = image.name
        tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
        image_id: str | None = None
        with tempfile.TemporaryFile(prefix="imagecascade-context-") as context:
            dockerfile = write_context_tar(spec.context, spec.dockerfile, list(image.inputs.files), context)
            context.seek(0)
            stream = self._engine.build_stream(
                context,
                dockerfile=dockerfile,
                build_args=dict(request.build_args),
                labels=dict(request.labels),
                platform=spec.platform,
                target=spec.target,
                cancelled=cancelled,
            )
            for chunk in stream:
                if "error" in chunk:
                    detail = (chunk.get("errorDetail") or {}).get("message") or chunk["error"]
                    tail.append(str(detail).rstrip())
                    if cancelled.is_set():
                        raise BuildError(f"{name}: build stopped", tuple(tail))
                    raise BuildError(f"{name}: build failed: {str(detail).strip()}", tuple(tail))
                aux = chunk.get("aux") or {}
                if isinstance(aux, dict) and aux.get("ID"):
                    image_id = str(aux["ID"])
                text = chunk.get("stream")
                if not isinstance(text, str):
                    continue
                for line in text.splitlines():
                    line = line.rstrip()
                    if not line:
                        continue
                    tail.append(line)
                    step = _STEP.match(line)
                    if step:
                        on_event(
                            BuildEvent(
                                image=name,
                                kind="step",
                                message=step.group(3),
                                step=int(step.group(1)),
                                steps=int(step.group(2)),
                            )
                        )
                    else:
                        on_event(BuildEvent(image=name, kind="log", message=line))
                        built = _BUILT.match(line)
                        if built and image_id is None:
                            image_id = built.group(1)
        if cancelled.is_set():
            if image_id is not None:
                self._engine.remove_image(image_id)
            raise BuildError(f"{name}: build stopped", tuple(tail))
        if image_id is None:
            raise BuildError(f"{name}: the engine reported no image id (the stream ended early)", tuple(tail))
        for reference in request.references:
            self._engine.tag_image(image_id, reference)
        if not request.registry:
            return BuildOutcome(log_tail=tuple(tail))
        digest: str | None = None
        for reference in request.references:
            on_event(BuildEvent(image=name, kind="state", message=f"pushing {reference}"))
            pushed, error = self._engine.push_image(reference)
            if error is not None:
                tail.append(f"push {reference}: {error}")
                if any(marker in error.lower() for marker in _UNREACHABLE):
                    raise BackendError(f"registry: cannot push {reference}: {error}")
                raise BuildError(f"{name}: push of {reference} refused: {error}", tuple(tail))
            if digest is None:
                digest = pushed
            on_event(BuildEvent(image=name, kind="pushed", message=f"{reference} {pushed or ''}".rstrip()))
        return BuildOutcome(digest=digest, log_tail=tuple(tail))

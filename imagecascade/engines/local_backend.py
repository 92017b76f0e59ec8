"""The local backend: builds on the Docker Engine that DOCKER_HOST (or the default socket) names.

The context sent is a tar of exactly the entries that were hashed. The build has no tag; the
finished image is tagged (and pushed) afterwards, so a stopped or failed build leaves no tag.
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Literal

from imagecascade.core.backend import BuildError, BuildEvent, BuildOutcome, BuildRequest
from imagecascade.core.build_checks import builder_refusal
from imagecascade.core.build_log import BuildLog, shorten
from imagecascade.core.buildkit_syntax import FrontendSupport
from imagecascade.core.checkouts import register_checkout
from imagecascade.core.context_tar import write_context_tar
from imagecascade.core.plan import PlannedImage
from imagecascade.core.refusals import Refusal
from imagecascade.core.secrets import how_to_provide
from imagecascade.core.settings import DEFAULT_PUSH_TIMEOUT, Settings
from imagecascade.engines.credentials import CredentialResolver
from imagecascade.errors import BackendError

if TYPE_CHECKING:
    from imagecascade.engines.engine import Engine

_STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)$", re.DOTALL)
_BUILT = re.compile(r"^Successfully built ([0-9a-f]{12,64})\s*$")
# The classic builder's own lines between steps (not a step's output).
_BUILDER_LINE = re.compile(r"^(?: ---> |Removing intermediate container |Successfully (?:built|tagged) )")
# The classic builder wraps each write of a RUN's stderr in red (moby's streamformatter).
_STDERR_START = "\x1b[91m"
_RUN_FAILED = re.compile(r"^The command .* returned a non-zero code: (\d+)\s*$", re.DOTALL)
# Push errors that mean the registry is down or unreachable, not that this image was refused.
_UNREACHABLE = ("connection refused", "no such host", "i/o timeout", "dial tcp", "connection reset", "eof")


CLASSIC = FrontendSupport(
    builder="classic",
    frontend=None,
    describe='the classic builder was chosen (--builder classic or [build] builder = "classic")',
    remedy="build with --builder buildkit",
)


def secrets_refusals(image: PlannedImage, settings: Settings, environ: Mapping[str, str]) -> list[Refusal]:
    """The image's secrets that stop it on this machine: a required one without a source, or a
    configured source that cannot be read. Each names the id and how to provide it."""
    spec = image.spec
    refusals = [
        Refusal(f"required secret {secret_id!r} has no source", how_to_provide(secret_id))
        for secret_id in spec.required_secrets
        if secret_id not in settings.secrets
    ]
    for secret_id in spec.secrets:
        source = settings.secrets.get(secret_id)
        problem = source.problem(environ) if source is not None else None
        if source is not None and problem is not None:
            refusals.append(
                Refusal(f"secret {secret_id!r}: {problem}", f"fix the source given by {source.origin}")
            )
    return refusals


class LocalBackend:
    """The classic builder, through the engine's API (docker SDK)."""

    name = "local"
    where = "on the local engine"
    builder: Literal["classic", "buildkit"] = "classic"

    def __init__(
        self,
        engine: Engine | None = None,
        support: FrontendSupport = CLASSIC,
        *,
        credentials: CredentialResolver | None = None,
        push_timeout: float | None = DEFAULT_PUSH_TIMEOUT,
    ) -> None:
        """`credentials` for pushes and pulls (default: the docker CLI's, read when first asked);
        `push_timeout`: seconds a push may go without progress before it is given up (None: never)."""
        # Without an engine, connect on the first build: a run with nothing to build needs none.
        self._given = engine
        self.credentials = credentials or CredentialResolver()
        self._push_timeout = push_timeout
        self._lock = threading.Lock()
        self._support = support
        self._environ: Mapping[str, str] = os.environ
        self.description = f"classic (engine API; {support.describe})"

    def refusal(self, image: PlannedImage, settings: Settings) -> tuple[Refusal, ...]:
        """Why this builder cannot build `image` here: its Dockerfile, its secrets (empty: it can)."""
        found = builder_refusal(image, self._support)
        return (*((found,) if found else ()), *secrets_refusals(image, settings, self._environ))

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
        title = f"{image.name}:{image.tag} {self.where}"
        with BuildLog(image.name, request.log_path, on_event, title=title) as log:
            image_id = self._build(request, log, cancelled)
            self._check_platform(request, image_id, log)
            if request.checkout is not None:  # so that prune elsewhere knows what this one uses
                register_checkout(request.checkout, self._environ)
            for reference in request.references:
                self._engine.tag_image(image_id, reference)
            if not request.registry:
                return BuildOutcome(log_tail=log.failure_tail())
            return BuildOutcome(digest=self._push(request, log, cancelled), log_tail=log.failure_tail())

    def _build(self, request: BuildRequest, log: BuildLog, cancelled: threading.Event) -> str:
        """Run the build, logging everything; the image id, or BuildError / BackendError."""
        image = request.image
        spec = image.spec
        name = image.name
        image_id: str | None = None
        if request.fresh:
            self._pull_external(request, log)
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
                no_cache=request.fresh,
            )
            after_header = False
            for chunk in stream:
                if "error" in chunk:
                    message = str((chunk.get("errorDetail") or {}).get("message") or chunk["error"])
                    log.note(f"error: {message}", live=False)  # the engine's words, in the file only
                    if cancelled.is_set():
                        raise BuildError(f"{name}: build stopped", log.failure_tail())
                    raise BuildError(f"{name}: {log.failure_reason(_detail(message))}", log.failure_tail())
                aux = chunk.get("aux") or {}
                if isinstance(aux, dict) and aux.get("ID"):
                    image_id = str(aux["ID"])
                text = chunk.get("stream")
                if not isinstance(text, str):
                    continue
                if after_header and text == "\n":
                    after_header = False
                    continue  # the builder ends each step header with a chunk of its own
                after_header = False
                if text.startswith(_STDERR_START):
                    log.output(text, "stderr")
                    continue
                step = _STEP.match(text)
                if step:
                    log.step(int(step.group(1)), int(step.group(2)), step.group(3).rstrip())
                    after_header = not text.endswith("\n")
                elif _BUILDER_LINE.match(text):
                    log.flush()
                    log.note(text)
                    built = _BUILT.match(text)
                    if built and image_id is None:
                        image_id = built.group(1)
                else:
                    log.output(text)
        if cancelled.is_set():
            if image_id is not None:
                self._engine.remove_image(image_id)
            raise BuildError(f"{name}: build stopped", log.failure_tail())
        if image_id is None:
            raise BuildError(
                f"{name}: the engine reported no image id (the stream ended early)", log.failure_tail()
            )
        return image_id

    def _check_platform(self, request: BuildRequest, image_id: str, log: BuildLog) -> None:
        """BuildError, before any tag, when the image is not of its declared platform (see
        engines.platform_check); the untagged image is removed."""
        from imagecascade.engines.platform_check import platform_problem
        from imagecascade.engines.registry import RegistryClient

        problem = platform_problem(
            self._engine,
            image_id,
            request.image.spec.platform,
            request.base_reference,
            builder=self.builder,
            registry=RegistryClient(credentials=self.credentials),
        )
        if not problem:
            return
        log.note(f"error: {problem}", live=False)
        built = self._engine.inspect_image(image_id)
        if built is not None and not built.tags:  # another tag means the engine reused an image
            self._engine.remove_image(image_id)
        raise BuildError(f"{request.image.name}: {problem}")

    def _pull_external(self, request: BuildRequest, log: BuildLog) -> None:
        """--force: pull the external references again (the base, pinned builder images), of the
        image's platform."""
        spec = request.image.spec
        references = [spec.base] if spec.base is not None else []
        references += [spec.build_args[key] for key in spec.upstream_build_args]
        for reference in references:
            log.note(f"pulling {reference} (--force)")
            if self._engine.pull_image(reference, self.credentials, platform=spec.platform) is None:
                raise BuildError(f"{request.image.name}: --force: {reference} is not in its registry")

    def _push(self, request: BuildRequest, log: BuildLog, cancelled: threading.Event) -> str | None:
        name = request.image.name
        digest: str | None = None
        for reference in request.references:
            log.note(f"pushing {reference}", live=False)
            log.event(BuildEvent(image=name, kind="state", message=f"pushing {reference}"))
            pushed, error = self._push_one(request, reference, cancelled)
            if error is not None:
                log.note(f"push {reference}: {error}")
                if any(marker in error.lower() for marker in _UNREACHABLE):
                    raise BackendError(f"registry: cannot push {reference}: {error}")
                raise BuildError(
                    f"{name}: push of {reference} refused: {error}", (f"push {reference}: {error}",)
                )
            if digest is None:
                digest = pushed
            log.note(f"pushed {reference} {pushed or ''}".rstrip(), live=False)
            log.event(BuildEvent(image=name, kind="pushed", message=f"{reference} {pushed or ''}".rstrip()))
        return digest

    def _push_one(
        self, request: BuildRequest, reference: str, cancelled: threading.Event
    ) -> tuple[str | None, str | None]:
        """Push one reference with the resolver's credentials, bounded by push_timeout and Ctrl-C."""
        from imagecascade.engines.containers import PushStalled, PushStopped
        from imagecascade.engines.registry import RepositoryRef

        host = RepositoryRef.parse(reference).host
        try:
            return self._engine.push_image(
                reference,
                auth=self.credentials.engine_auth(host),
                progress_timeout=self._push_timeout,
                cancelled=cancelled,
            )
        except PushStalled as stalled:
            raise BackendError(
                f"registry {host}: pushing {reference} made no progress for {stalled.seconds:g} s "
                "([registry] push_timeout in cascade.toml); the registry is not answering"
            ) from stalled
        except PushStopped as stopped:
            left = self._what_was_left(request, reference)
            raise BuildError(f"{request.image.name}: push of {reference} stopped; {left}") from stopped

    def _what_was_left(self, request: BuildRequest, reference: str) -> str:
        """Whether the registry holds the hash tag after a push was cut off, asked briefly."""
        from imagecascade.engines.registry import ImageRef, RegistryClient

        hash_reference = request.references[0]
        image = ImageRef.parse(hash_reference)
        try:
            there = RegistryClient(timeout=3, credentials=self.credentials, attempts=1).manifest_digest(
                image.repository, image.tag
            )
        except BackendError as error:
            return f"could not ask the registry whether {hash_reference} is there ({error})"
        if there is None:
            return f"{hash_reference} is not in the registry (its manifest was not written): rerun to push it"
        if reference == hash_reference:
            return f"{hash_reference} is in the registry, :latest was not moved: the next cascade moves it"
        return f"{hash_reference} is in the registry; :latest may not point at it: the next cascade checks"


def _detail(message: str) -> str:
    """The engine's error without the RUN script it pastes in: `exited with code 1`."""
    failed = _RUN_FAILED.match(message)
    if failed:
        return f"exited with code {failed.group(1)}"
    return shorten(message)

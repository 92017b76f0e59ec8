"""What the cascade asks of a build backend (local engine or Cloud Build) and of the store it looks
images up in, and what it gets back.

The cascade logic only sees this interface; it never knows which backend runs.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal, Protocol

from imagecascade.core.plan import PlannedImage
from imagecascade.core.refusals import Refusal
from imagecascade.core.secrets import SecretSource
from imagecascade.core.settings import Settings
from imagecascade.errors import CascadeError

EventKind = Literal["started", "step", "log", "state", "pushed", "finished"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class BuildRequest:
    """One image to build, with everything already decided by the cascade."""

    image: PlannedImage
    base_reference: str  # the exact BASE_IMAGE: parent's `ref:<hash tag>` or the pinned base
    build_args: Mapping[str, str]  # the image's build args, each input's reference, BASE_IMAGE
    labels: Mapping[str, str]  # OCI labels and the freshness labels
    references: tuple[str, ...]  # `<repo>:<hash tag>` first, then `<repo>:latest`
    registry: str  # "" = keep in the engine's store, else push every reference there
    log_path: Path | None = None  # where the complete build log goes (core.build_log.BuildLog)
    fresh: bool = False  # --force: no layer cache, external bases pulled again
    # The image's declared secrets that have a source on this machine (never their values).
    secrets: Mapping[str, SecretSource] = dataclasses.field(default_factory=dict)
    checkout: Path | None = None  # the cascade root it is built from (prune asks it what it uses)


@dataclasses.dataclass(frozen=True, kw_only=True)
class BuildEvent:
    image: str
    kind: EventKind
    message: str = ""
    step: int | None = None  # step n of m, when the backend knows
    steps: int | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class BuildOutcome:
    digest: str | None = None  # the pushed manifest digest, when pushed
    log_tail: tuple[str, ...] = ()


class BuildError(CascadeError):
    """The image's own build failed (its Dockerfile, a step, a push rejected for this image)."""

    def __init__(self, message: str, log_tail: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.log_tail = log_tail


class Backend(Protocol):
    name: str

    def refusal(self, image: PlannedImage, settings: Settings) -> tuple[Refusal, ...]:
        """Why this backend cannot build `image` at all (empty when it can).

        Asked before anything is built (a Dockerfile feature the builder does not know, a
        required secret without a source); the entry point adds them with `Plan.with_refusals`,
        so a refused image stops alone and early.
        """
        ...

    def build(
        self,
        request: BuildRequest,
        on_event: Callable[[BuildEvent], None],
        cancelled: threading.Event,
    ) -> BuildOutcome:
        """Build (and push when a registry is set) or raise BuildError / BackendError.

        Must stop soon after `cancelled` is set, leaving no tag on an unfinished image.
        """
        ...


class ImageStore(Protocol):
    description: str

    def has(self, name: str, tag: str) -> bool:
        """True when `name:tag` exists; raises BackendError when that cannot be known."""
        ...

    def digest(self, name: str, tag: str) -> str | None:
        """The manifest digest of `name:tag` in the target registry, None when missing; raises
        ConfigError for a target without manifest digests (the local engine's store)."""
        ...

    def newest_hash(self, name: str) -> str | None:
        """The freshness-hash label of the newest `name` image there ("" when it has none), None when
        there is no `name` image at all; raises BackendError when that cannot be known."""
        ...

    def latest_is(self, name: str, tag: str) -> bool:
        """True when `name:latest` is the image `name:tag` (which exists); BackendError when unknown."""
        ...

    def move_latest(self, name: str, tag: str) -> None:
        """Point `name:latest` at the existing `name:tag`, without a build, pull or push of layers."""
        ...

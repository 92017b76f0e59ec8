"""Where built images are looked up: the engine's own store, or a registry.

Both implement `imagecascade.core.backend.ImageStore`: an image counts as built if and only if
its hash tag exists there, and `:latest` is repaired there without a rebuild.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from imagecascade.core.backend import ImageStore
from imagecascade.core.build_request import LABEL_HASH
from imagecascade.core.plan import LATEST_ELSEWHERE, Plan, image_reference
from imagecascade.core.why import why_missing
from imagecascade.errors import BackendError, ConfigError, NotBuilt

if TYPE_CHECKING:
    from imagecascade.engines.credentials import CredentialResolver
    from imagecascade.engines.engine import Engine

LATEST = "latest"
LOOKUP_THREADS = 8


class EngineStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.description = "the local engine"

    def has(self, name: str, tag: str) -> bool:
        return self._engine.image_exists(image_reference(name, tag, ""))

    def digest(self, name: str, tag: str) -> str | None:
        raise ConfigError(
            "--digest needs a registry: an image only in the local engine has no manifest digest "
            "(pass --registry REF, or set [registry] url in cascade.toml)"
        )

    def newest_hash(self, name: str) -> str | None:
        """The freshness hash of the newest local `name` image ("" unlabelled, None when none)."""
        images = self._engine.list_images(name)
        return images[0].labels.get(LABEL_HASH, "") if images else None

    def latest_is(self, name: str, tag: str) -> bool:
        tagged = self._engine.inspect_image(image_reference(name, tag, ""))
        latest = self._engine.inspect_image(image_reference(name, LATEST, ""))
        return tagged is not None and latest is not None and tagged.id == latest.id

    def move_latest(self, name: str, tag: str) -> None:
        self._engine.tag_image(image_reference(name, tag, ""), image_reference(name, LATEST, ""))


class RegistryStore:
    """A registry's answers by manifest HEAD; `:latest` moved by a manifest PUT (no pull, no push)."""

    def __init__(self, registry: str, credentials: CredentialResolver | None = None) -> None:
        from imagecascade.engines.registry import RegistryClient

        self._registry = registry
        self._client = RegistryClient(credentials=credentials)
        self._digests: dict[tuple[str, str], str | None] = {}
        self._lock = threading.Lock()
        self.description = registry

    def has(self, name: str, tag: str) -> bool:
        return self._digest(name, tag, fresh=True) is not None

    def digest(self, name: str, tag: str) -> str | None:
        return self._digest(name, tag, fresh=True)

    def latest_is(self, name: str, tag: str) -> bool:
        tagged = self._digest(name, tag, fresh=False)
        return tagged is not None and self._digest(name, LATEST, fresh=True) == tagged

    def move_latest(self, name: str, tag: str) -> None:
        digest = self._client.copy_tag(f"{self._registry}/{name}", tag, LATEST)
        with self._lock:
            self._digests[(name, LATEST)] = digest

    def _digest(self, name: str, tag: str, *, fresh: bool) -> str | None:
        with self._lock:
            if not fresh and (name, tag) in self._digests:
                return self._digests[(name, tag)]
        digest = self._client.manifest_digest(f"{self._registry}/{name}", tag)
        with self._lock:
            self._digests[(name, tag)] = digest
        return digest

    def newest_hash(self, name: str) -> str | None:
        """The freshness hash of `REGISTRY/name:latest` ("" unlabelled, None when there is none)."""
        labels = self._client.image_labels(f"{self._registry}/{name}", "latest")
        return None if labels is None else labels.get(LABEL_HASH, "")


@dataclasses.dataclass(frozen=True)
class BuildStates:
    """Per image `(state, detail)`: `present`; `missing` with why (core.why); `unknown` with the
    reason. `problem` is that reason, said once, when the target could not be asked."""

    states: dict[str, tuple[str, str]]
    problem: str = ""


def look_up_build_states(plan: Plan, open_target: Callable[[], ImageStore]) -> BuildStates:
    """Ask the target about every image of `plan` (a few at once); the first failure is the problem.

    A present image whose `:latest` is elsewhere has the detail LATEST_ELSEWHERE.
    """

    def state(image: Any) -> tuple[str, str]:
        if not store.has(image.name, image.tag):
            return "missing", ""
        return "present", "" if store.latest_is(image.name, image.tag) else LATEST_ELSEWHERE

    try:
        store = open_target()
        workers = max(1, min(LOOKUP_THREADS, len(plan.images)))
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lookup") as pool:
            found = dict(
                zip([image.name for image in plan.images], pool.map(state, plan.images), strict=True)
            )
    except BackendError as error:
        return BuildStates({image.name: ("unknown", str(error)) for image in plan.images}, str(error))
    missing = [name for name, (state_, _) in found.items() if state_ == "missing"]
    try:
        why = why_missing(plan, store.newest_hash, missing, store.description)
    except BackendError as error:
        why = {name: f"cannot tell why: {error}" for name in missing}
    states = {
        name: ("missing", why.get(name, "")) if state_ == "missing" else (state_, detail)
        for name, (state_, detail) in found.items()
    }
    return BuildStates(states)


def open_store(registry: str, credentials: CredentialResolver | None = None) -> ImageStore:
    """The registry when one is configured, else the local engine (connecting to it)."""
    if registry:
        return RegistryStore(registry, credentials)
    from imagecascade.engines.engine import Engine

    return EngineStore(Engine.from_environment())


@dataclasses.dataclass(frozen=True)
class BuiltReference:
    """Where an image at its current hash lives in the target, if it is there."""

    name: str
    reference: str  # `REGISTRY/name:<hash tag>` (or `name:<hash tag>` in the local engine)
    built: bool
    digest: str | None = None  # with --digest: the manifest digest, when built


def built_references(
    plan: Plan, store: ImageStore, names: list[str], *, digest: bool = False
) -> list[BuiltReference]:
    """Each image's reference at its current hash in `store`; with `digest`, its manifest digest."""
    found = []
    for name in names:
        image = plan.get(name)
        reference = image_reference(name, image.tag, plan.settings.registry)
        if digest:
            manifest = store.digest(name, image.tag)
            found.append(BuiltReference(name, reference, manifest is not None, manifest))
        else:
            found.append(BuiltReference(name, reference, store.has(name, image.tag)))
    return found


def pinned(found: BuiltReference) -> str:
    """`REGISTRY/name@sha256:...` when the digest is known, else the tag reference."""
    if found.digest is None:
        return found.reference
    return f"{found.reference.rpartition(':')[0]}@{found.digest}"


def require_built(found: list[BuiltReference], target: str) -> None:
    """Raise NotBuilt (exit 4) naming every reference in `found` that `target` does not hold."""
    missing = [item.reference for item in found if not item.built]
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise NotBuilt(f"{', '.join(missing)} {verb} not built in {target}; run `invoke cascade`")

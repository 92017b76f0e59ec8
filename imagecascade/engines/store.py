"""Where built images are looked up: the engine's own store, or a registry.

Both implement `imagecascade.core.backend.ImageStore`: an image counts as built if and only if
its hash tag exists there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from imagecascade.core.backend import ImageStore
from imagecascade.core.plan import image_reference

if TYPE_CHECKING:
    from imagecascade.engines.engine import Engine


class EngineStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.description = "local engine"

    def has(self, name: str, tag: str) -> bool:
        return self._engine.image_exists(image_reference(name, tag, ""))


class RegistryStore:
    def __init__(self, registry: str) -> None:
        from imagecascade.engines.registry import RegistryClient

        self._registry = registry
        self._client = RegistryClient()
        self.description = registry

    def has(self, name: str, tag: str) -> bool:
        return self._client.manifest_digest(f"{self._registry}/{name}", tag) is not None


def open_store(registry: str) -> ImageStore:
    """The registry when one is configured, else the local engine (connecting to it)."""
    if registry:
        return RegistryStore(registry)
    from imagecascade.engines.engine import Engine

    return EngineStore(Engine.from_environment())

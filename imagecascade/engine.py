"""The Docker Engine, through the docker SDK. The only module that imports `docker`.

Every build and container uses host or no networking (these machines must never touch
private-range addresses), and engine failures raise BackendError, never "missing".
"""

from __future__ import annotations

import dataclasses
from typing import Any

import docker
import docker.errors

from imagecascade.errors import BackendError


@dataclasses.dataclass(frozen=True)
class ImageInfo:
    """What the engine knows about one local image."""

    id: str
    labels: dict[str, str]
    config: dict[str, Any]


class Engine:
    """A small set of verbs over one Docker Engine connection."""

    def __init__(self, client: docker.DockerClient) -> None:
        self._client = client

    @classmethod
    def from_environment(cls) -> Engine:
        """Connect to what DOCKER_HOST (or the default socket) points at."""
        try:
            client = docker.from_env(timeout=600)
            client.ping()
        except docker.errors.DockerException as error:
            raise BackendError(
                f"Docker Engine: cannot connect ({error}); start dockerd or set DOCKER_HOST"
            ) from error
        return cls(client)

    @property
    def client(self) -> docker.DockerClient:
        return self._client

    def inspect_image(self, reference: str) -> ImageInfo | None:
        """The local image named `reference`, or None when the engine has no such image."""
        try:
            image = self._client.images.get(reference)
        except docker.errors.ImageNotFound:
            return None
        except docker.errors.DockerException as error:
            raise BackendError(f"Docker Engine: cannot inspect {reference}: {error}") from error
        config = image.attrs.get("Config") or {}
        return ImageInfo(id=image.id, labels=dict(config.get("Labels") or {}), config=config)

    def image_exists(self, reference: str) -> bool:
        return self.inspect_image(reference) is not None

    def close(self) -> None:
        self._client.close()

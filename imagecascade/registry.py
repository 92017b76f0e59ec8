"""The Docker Registry HTTP API v2: tag lookups by manifest HEAD, without pulling.

The only module that speaks to registries over HTTP.
"""

from __future__ import annotations

import dataclasses
import http.client
import urllib.error
import urllib.request

from imagecascade.errors import BackendError

MANIFEST_TYPES = ", ".join(
    (
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
    )
)


@dataclasses.dataclass(frozen=True)
class RepositoryRef:
    """`host[:port]/path` split into the registry host and the repository path."""

    host: str
    repository: str

    @classmethod
    def parse(cls, reference: str) -> RepositoryRef:
        host, _, repository = reference.partition("/")
        if not repository or ("." not in host and ":" not in host and host != "localhost"):
            # Docker Hub short names: library images live under library/.
            repository = reference if "/" in reference else f"library/{reference}"
            host = "registry-1.docker.io"
        return cls(host=host, repository=repository)

    @property
    def base_url(self) -> str:
        loopback = self.host.startswith(("127.", "localhost", "[::1]"))
        return f"{'http' if loopback else 'https'}://{self.host}"


class RegistryClient:
    """Manifest lookups against one registry."""

    def __init__(self, timeout: float = 30.0) -> None:
        self._timeout = timeout

    def manifest_digest(self, repository: str, tag: str) -> str | None:
        """The digest of `repository:tag`, None when the registry says it does not exist.

        Anything but 200 or 404 (refused connection, 5xx, auth failure) raises BackendError.
        """
        ref = RepositoryRef.parse(repository)
        url = f"{ref.base_url}/v2/{ref.repository}/manifests/{tag}"
        request = urllib.request.Request(url, method="HEAD", headers={"Accept": MANIFEST_TYPES})
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                return str(response.headers.get("Docker-Content-Digest", "")) or "unknown-digest"
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return None
            raise BackendError(f"registry {ref.host}: HEAD {url} answered {error.code} {error.reason}") from error
        except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
            reason = getattr(error, "reason", error)
            raise BackendError(f"registry {ref.host}: cannot reach it ({reason})") from error

"""The Docker Registry HTTP API v2: tag lookups by manifest HEAD, without pulling.

The only module that speaks to registries over HTTP. Token auth follows the registry token
specification: a 401 with `WWW-Authenticate: Bearer realm=...,service=...,scope=...` sends us to
the realm for a token (anonymous, or with the basic credentials `docker login` stored), then the
request is repeated with it. Transient answers (429, 502, 503, 504, reset connections) are retried
a few times; everything else that is not 200 or 404 is a BackendError, never "missing".
"""

from __future__ import annotations

import base64
import dataclasses
import http.client
import json
import os
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import tenacity

from imagecascade.errors import BackendError

MANIFEST_TYPES = ", ".join(
    (
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
    )
)
RETRY_STATUSES = frozenset({429, 502, 503, 504})
DOCKER_HUB = "registry-1.docker.io"
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


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
            host = DOCKER_HUB
        return cls(host=host, repository=repository)

    @property
    def base_url(self) -> str:
        loopback = self.host.startswith(("127.", "localhost", "[::1]"))
        return f"{'http' if loopback else 'https'}://{self.host}"


@dataclasses.dataclass(frozen=True)
class ImageRef:
    """`[host/]path[:tag][@digest]` split into its parts; the tag defaults to `latest`."""

    repository: str  # with the host, as written
    tag: str
    digest: str | None

    @classmethod
    def parse(cls, reference: str) -> ImageRef:
        name, _, digest = reference.partition("@")
        slash = name.rfind("/")
        colon = name.rfind(":")
        if colon > slash:
            repository, tag = name[:colon], name[colon + 1 :]
        else:
            repository, tag = name, "latest"
        return cls(repository=repository, tag=tag, digest=digest or None)

    def pinned(self, digest: str) -> str:
        return f"{self.repository}:{self.tag}@{digest}"


class _Transient(Exception):
    """An answer worth asking again (429, 5xx gateway errors, a reset connection)."""


def load_docker_credentials(environ: Mapping[str, str] | None = None) -> dict[str, tuple[str, str]]:
    """host → (user, password) from the `auths` of the docker CLI's config.json (basic auth only).

    Credential helpers are not consulted: those registries are asked anonymously.
    """
    environ = os.environ if environ is None else environ
    folder = Path(environ["DOCKER_CONFIG"]) if environ.get("DOCKER_CONFIG") else Path.home() / ".docker"
    path = folder / "config.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        raise BackendError(f"{path}: cannot read docker credentials: {error}") from error
    credentials: dict[str, tuple[str, str]] = {}
    for key, entry in (data.get("auths") or {}).items():
        encoded = entry.get("auth") if isinstance(entry, dict) else None
        if not encoded:
            continue
        try:
            user, _, password = base64.b64decode(encoded).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            continue
        host = urllib.parse.urlsplit(key).netloc if "://" in key else key.split("/")[0]
        if host in ("index.docker.io", "docker.io"):
            host = DOCKER_HUB
        credentials[host] = (user, password)
    return credentials


class RegistryClient:
    """Manifest lookups against registries, with token auth and bounded retries."""

    def __init__(
        self,
        timeout: float = 30.0,
        *,
        credentials: Mapping[str, tuple[str, str]] | None = None,
        attempts: int = 4,
        backoff: float = 0.25,
    ) -> None:
        self._timeout = timeout
        self._credentials = credentials
        self._attempts = attempts
        self._backoff = backoff
        self._tokens: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def manifest_digest(self, repository: str, tag: str) -> str | None:
        """The digest of `repository:tag`, None when the registry says it does not exist.

        Anything but 200 or 404 (refused connection, 5xx, auth failure) raises BackendError.
        """
        ref = RepositoryRef.parse(repository)
        url = f"{ref.base_url}/v2/{ref.repository}/manifests/{tag}"
        status, headers, _ = self._send(ref, url)
        if status == 404:
            return None
        return headers.get("docker-content-digest", "") or "unknown-digest"

    def tag_digest(self, reference: str) -> str:
        """The current digest of `reference`'s tag (any pinned digest in it is ignored)."""
        image = ImageRef.parse(reference)
        digest = self.manifest_digest(image.repository, image.tag)
        if digest is None:
            raise BackendError(
                f"registry {RepositoryRef.parse(image.repository).host}: {reference}: no such tag"
            )
        if digest == "unknown-digest":
            raise BackendError(f"registry: {reference}: the answer carried no Docker-Content-Digest")
        return digest

    def image_labels(self, repository: str, tag: str) -> dict[str, str] | None:
        """The labels in the image config of `repository:tag`, None when the tag does not exist.

        From an image index, the linux/amd64 image (else the first). Errors as manifest_digest.
        """
        ref = RepositoryRef.parse(repository)
        manifests = f"{ref.base_url}/v2/{ref.repository}/manifests"
        manifest = self._get_json(ref, f"{manifests}/{tag}", MANIFEST_TYPES)
        if manifest is None:
            return None
        entries = manifest.get("manifests")
        if isinstance(entries, list) and entries:
            chosen = next(
                (
                    entry
                    for entry in entries
                    if (entry.get("platform") or {}).get("os") == "linux"
                    and (entry.get("platform") or {}).get("architecture") == "amd64"
                ),
                entries[0],
            )
            manifest = self._get_json(ref, f"{manifests}/{chosen.get('digest')}", MANIFEST_TYPES)
            if manifest is None:
                raise BackendError(
                    f"registry {ref.host}: {repository}:{tag}: its index names a missing image"
                )
        digest = (manifest.get("config") or {}).get("digest")
        if not isinstance(digest, str):
            raise BackendError(f"registry {ref.host}: {repository}:{tag}: the manifest names no config")
        config = self._get_json(ref, f"{ref.base_url}/v2/{ref.repository}/blobs/{digest}", "*/*")
        labels = ((config or {}).get("config") or {}).get("Labels") or {}
        return {str(key): str(value) for key, value in labels.items()}

    def _get_json(self, ref: RepositoryRef, url: str, accept: str) -> dict[str, Any] | None:
        status, _, body = self._send(ref, url, method="GET", accept=accept)
        if status == 404:
            return None
        try:
            document = json.loads(body)
        except ValueError as error:
            raise BackendError(f"registry {ref.host}: GET {url}: not JSON ({error})") from error
        if not isinstance(document, dict):
            raise BackendError(f"registry {ref.host}: GET {url}: not a JSON object")
        return document

    def _send(
        self, ref: RepositoryRef, url: str, *, method: str = "HEAD", accept: str = MANIFEST_TYPES
    ) -> tuple[int, dict[str, str], bytes]:
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(_Transient),
            stop=tenacity.stop_after_attempt(self._attempts),
            wait=tenacity.wait_exponential(multiplier=self._backoff, max=4.0),
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    return self._send_once(ref, url, method, accept)
        except _Transient as error:
            raise BackendError(
                f"registry {ref.host}: {method} {url}: {error} (still failing after {self._attempts} tries)"
            ) from error
        raise AssertionError("unreachable")

    def _send_once(
        self, ref: RepositoryRef, url: str, method: str, accept: str
    ) -> tuple[int, dict[str, str], bytes]:
        scope_key = (ref.host, ref.repository)
        authorization = self._tokens.get(scope_key)
        for first_pass in (True, False):  # the second pass carries the credentials a 401 asked for
            headers = {"Accept": accept}
            if authorization:
                headers["Authorization"] = authorization
            status, answer, body = self._request(url, method, headers, ref)
            if status == 401 and first_pass:
                authorization = self._authorize(ref, answer.get("www-authenticate", ""), url)
                with self._lock:
                    self._tokens[scope_key] = authorization
                continue
            if status in (200, 404):
                return status, answer, body
            raise BackendError(f"registry {ref.host}: {method} {url} answered {status}{_auth_hint(status)}")
        raise AssertionError("unreachable")

    def _request(
        self, url: str, method: str, headers: Mapping[str, str], ref: RepositoryRef
    ) -> tuple[int, dict[str, str], bytes]:
        """(status, headers, body); transient failures raise _Transient, unreachable hosts BackendError."""
        request = urllib.request.Request(url, method=method, headers=dict(headers))
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                body = response.read() if method == "GET" else b""
                return response.status, _lower(response.headers.items()), body
        except urllib.error.HTTPError as error:
            if error.code in RETRY_STATUSES:
                raise _Transient(f"answered {error.code} {error.reason}") from error
            return error.code, _lower(error.headers.items()), b""
        except (ConnectionResetError, http.client.RemoteDisconnected, http.client.IncompleteRead) as error:
            raise _Transient(f"connection reset ({error})") from error
        except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
            reason = getattr(error, "reason", error)
            if isinstance(reason, ConnectionResetError):
                raise _Transient(f"connection reset ({reason})") from error
            raise BackendError(f"registry {ref.host}: cannot reach it ({reason})") from error

    def _authorize(self, ref: RepositoryRef, challenge: str, url: str) -> str:
        """The Authorization header value a 401 challenge asks for."""
        scheme, _, params_text = challenge.partition(" ")
        params = dict(_CHALLENGE_PARAM.findall(params_text))
        credentials = self._credentials_for(ref.host)
        if scheme.lower() == "basic":
            if credentials is None:
                raise BackendError(
                    f"registry {ref.host}: HEAD {url} needs credentials; run `docker login {ref.host}`"
                )
            return "Basic " + base64.b64encode(":".join(credentials).encode()).decode()
        if scheme.lower() != "bearer" or "realm" not in params:
            raise BackendError(f"registry {ref.host}: HEAD {url} answered 401 with challenge {challenge!r}")
        query = {key: params[key] for key in ("service", "scope") if key in params}
        query.setdefault("scope", f"repository:{ref.repository}:pull")
        token_url = params["realm"] + ("&" if "?" in params["realm"] else "?") + urllib.parse.urlencode(query)
        headers = {}
        if credentials is not None:
            headers["Authorization"] = "Basic " + base64.b64encode(":".join(credentials).encode()).decode()
        realm = RepositoryRef(host=urllib.parse.urlsplit(params["realm"]).netloc, repository="")
        token_request = urllib.request.Request(token_url, headers=headers)
        try:
            with urllib.request.urlopen(token_request, timeout=self._timeout) as response:
                document = json.loads(response.read())
        except urllib.error.HTTPError as error:
            raise BackendError(
                f"registry {ref.host}: the token service {realm.host} answered {error.code} {error.reason}"
                + ("" if credentials else f"; if the repository is private, run `docker login {ref.host}`")
            ) from error
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as error:
            reason = getattr(error, "reason", error)
            raise BackendError(
                f"registry {ref.host}: cannot get a token from {realm.host} ({reason})"
            ) from error
        token = document.get("token") or document.get("access_token")
        if not isinstance(token, str) or not token:
            raise BackendError(f"registry {ref.host}: the token service {realm.host} gave no token")
        return f"Bearer {token}"

    def _credentials_for(self, host: str) -> tuple[str, str] | None:
        if self._credentials is None:
            self._credentials = load_docker_credentials()
        return self._credentials.get(host)


def _lower(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Headers keyed by lower-case name: HTTP header names are case-insensitive."""
    return {key.lower(): value for key, value in items}


def _auth_hint(status: int) -> str:
    if status in (401, 403):
        return " (not authorised: check `docker login` for this registry)"
    return ""

"""The Docker Registry HTTP API v2: tag lookups by manifest HEAD and tag moves, without pulling.

The only module that speaks to registries over HTTP. Credentials come from `CredentialResolver`
(the docker CLI's order). A 401 challenge is answered as the Docker Engine answers it
(distribution `registry/client/auth/session.go`): `Basic` with the user and password;
`Bearer realm=...,service=...,scope=...` with a token from the realm, fetched by GET with basic
credentials (or anonymously), or by POST `grant_type=refresh_token` for an identity token; a
`registrytoken` is sent as the bearer token itself.

"Not there" is believed only from a registry: a 404 counts when it carries
`Docker-Distribution-API-Version` or a distribution error (`MANIFEST_UNKNOWN`, `NAME_UNKNOWN`).
Transient answers (429, 502, 503, 504, reset connections) are retried a few times; anything else
is a BackendError naming the URL. Credentials never follow a redirect to another origin.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import http.client
import json
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import tenacity

from imagecascade.core.platforms import Platform, platform_in
from imagecascade.engines.credentials import CredentialResolver, RegistryCredential
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
REGISTRY_NOT_FOUND_CODES = frozenset({"MANIFEST_UNKNOWN", "NAME_UNKNOWN", "BLOB_UNKNOWN"})
ENGINE_CLIENT_ID = "docker"  # the client_id the Docker Engine sends to token services
MAX_BODY = 4 * 1024 * 1024  # manifests and error documents are small
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')
Access = Literal["pull", "push"]


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

    def manifest_url(self, reference: str) -> str:
        return f"{self.base_url}/v2/{self.repository}/manifests/{reference}"


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


@dataclasses.dataclass(frozen=True)
class _Answer:
    status: int
    headers: dict[str, str]
    body: bytes = b""


class _Transient(Exception):
    """An answer worth asking again (429, 5xx gateway errors, a reset connection)."""


class _CredentialSafeRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects, but drop `Authorization` when one leads to another scheme, host or port.

    urllib copies every header to the redirected request; Go's http.Client, which the Docker
    Engine uses, drops credentials when the host changes. We do the same, stricter on ports.
    """

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        follow = super().redirect_request(req, fp, code, msg, headers, newurl)
        if follow is not None and _origin(newurl) != _origin(req.full_url):
            follow.remove_header("Authorization")
        return follow


def _origin(url: str) -> tuple[str, str]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


class RegistryClient:
    """Manifest lookups and tag moves against registries, with their auth and bounded retries."""

    def __init__(
        self,
        timeout: float = 30.0,
        *,
        credentials: CredentialResolver | None = None,
        attempts: int = 4,
        backoff: float = 0.25,
    ) -> None:
        self._timeout = timeout
        self.credentials = credentials or CredentialResolver()  # reads nothing until first asked
        self._attempts = attempts
        self._backoff = backoff
        self._tokens: dict[tuple[str, str, Access], str] = {}
        self._lock = threading.Lock()
        self._opener = urllib.request.build_opener(_CredentialSafeRedirects)

    def manifest_digest(self, repository: str, tag: str) -> str | None:
        """The digest of `repository:tag`, None when the registry says it does not exist.

        A 404 that does not come from a registry, a refused connection, a 5xx or an auth
        failure raises BackendError: never "missing".
        """
        ref = RepositoryRef.parse(repository)
        url = ref.manifest_url(tag)
        answer = self._call(ref, "HEAD", url, {"Accept": MANIFEST_TYPES}, access="pull")
        if answer.status == 404 and "docker-distribution-api-version" not in answer.headers:
            # A HEAD has no body to show a distribution error code: ask again with GET.
            answer = self._call(ref, "GET", url, {"Accept": MANIFEST_TYPES}, access="pull")
        if answer.status == 404:
            if _is_registry_not_found(answer):
                return None
            raise BackendError(
                f"registry {ref.host}: {url} answered 404 without a registry's marks (no "
                "Docker-Distribution-API-Version header, no MANIFEST_UNKNOWN or NAME_UNKNOWN error): "
                f"is {ref.host} a registry, and is the path right?"
            )
        if answer.status != 200:
            raise self._refusal(ref, "HEAD", url, answer.status)
        digest = answer.headers.get("docker-content-digest", "")
        if not digest and answer.body:
            digest = "sha256:" + hashlib.sha256(answer.body).hexdigest()
        return digest or "unknown-digest"

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
        manifest = self._get_json(ref, ref.manifest_url(tag), MANIFEST_TYPES)
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
            manifest = self._get_json(ref, ref.manifest_url(str(chosen.get("digest"))), MANIFEST_TYPES)
            if manifest is None:
                raise BackendError(
                    f"registry {ref.host}: {repository}:{tag}: its index names a missing image"
                )
        config = self._config(ref, manifest, f"{repository}:{tag}")
        labels = (config.get("config") or {}).get("Labels") or {}
        return {str(key): str(value) for key, value in labels.items()}

    def image_platforms(self, repository: str, reference: str) -> list[Platform] | None:
        """The platforms `repository:reference` (a tag or a digest) offers: each entry of an image
        index, or the one in a single image's config. None when the registry does not have it;
        other errors as manifest_digest."""
        ref = RepositoryRef.parse(repository)
        manifest = self._get_json(ref, ref.manifest_url(reference), MANIFEST_TYPES)
        if manifest is None:
            return None
        entries = manifest.get("manifests")
        if isinstance(entries, list):
            return [platform_in(entry.get("platform") or {}) for entry in entries if isinstance(entry, dict)]
        return [platform_in(self._config(ref, manifest, f"{repository}:{reference}"))]

    def _config(self, ref: RepositoryRef, manifest: dict[str, Any], shown: str) -> dict[str, Any]:
        """The image config blob an image manifest names."""
        digest = (manifest.get("config") or {}).get("digest")
        if not isinstance(digest, str):
            raise BackendError(f"registry {ref.host}: {shown}: the manifest names no config")
        config = self._get_json(ref, f"{ref.base_url}/v2/{ref.repository}/blobs/{digest}", "*/*")
        if config is None:
            raise BackendError(f"registry {ref.host}: {shown}: its config blob {digest} is missing")
        return config

    def _get_json(self, ref: RepositoryRef, url: str, accept: str) -> dict[str, Any] | None:
        """A JSON document by GET; None on a registry's 404, BackendError on anything else."""
        answer = self._call(ref, "GET", url, {"Accept": accept}, access="pull")
        if answer.status == 404 and _is_registry_not_found(answer):
            return None
        if answer.status != 200:
            raise self._refusal(ref, "GET", url, answer.status)
        try:
            document = json.loads(answer.body)
        except ValueError as error:
            raise BackendError(f"registry {ref.host}: GET {url}: not JSON ({error})") from error
        if not isinstance(document, dict):
            raise BackendError(f"registry {ref.host}: GET {url}: not a JSON object")
        return document

    def copy_tag(self, repository: str, source: str, target: str) -> str:
        """Point `repository:target` at the manifest of `repository:source`; return its digest.

        What `crane tag` does: GET the manifest as stored, PUT the same bytes under the new tag.
        No layer moves. Raises BackendError when either step is refused.
        """
        ref = RepositoryRef.parse(repository)
        source_url = ref.manifest_url(source)
        found = self._call(ref, "GET", source_url, {"Accept": MANIFEST_TYPES}, access="pull")
        if found.status != 200:
            raise self._refusal(ref, "GET", source_url, found.status)
        media_type = found.headers.get("content-type", "").split(";")[0].strip()
        if not media_type:
            raise BackendError(f"registry {ref.host}: GET {source_url} gave a manifest without a media type")
        target_url = ref.manifest_url(target)
        stored = self._call(
            ref, "PUT", target_url, {"Content-Type": media_type}, access="push", body=found.body
        )
        if stored.status not in (200, 201, 202):
            raise self._refusal(ref, "PUT", target_url, stored.status)
        return stored.headers.get("docker-content-digest") or (
            "sha256:" + hashlib.sha256(found.body).hexdigest()
        )

    def _refusal(self, ref: RepositoryRef, method: str, url: str, status: int) -> BackendError:
        hint = ""
        if status in (401, 403):
            credential = self.credentials.resolve(ref.host)
            used = f"with the {credential.source}" if credential else "anonymously"
            hint = f" (asked {used}; {self.credentials.login_hint(ref.host)})"
        return BackendError(f"registry {ref.host}: {method} {url} answered {status}{hint}")

    def _call(
        self,
        ref: RepositoryRef,
        method: str,
        url: str,
        headers: Mapping[str, str],
        *,
        access: Access,
        body: bytes | None = None,
    ) -> _Answer:
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(_Transient),
            stop=tenacity.stop_after_attempt(self._attempts),
            wait=tenacity.wait_exponential(multiplier=self._backoff, max=4.0),
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    return self._call_once(ref, method, url, headers, access, body)
        except _Transient as error:
            raise BackendError(
                f"registry {ref.host}: {method} {url}: {error} (still failing after {self._attempts} tries)"
            ) from error
        raise AssertionError("unreachable")

    def _call_once(
        self,
        ref: RepositoryRef,
        method: str,
        url: str,
        headers: Mapping[str, str],
        access: Access,
        body: bytes | None,
    ) -> _Answer:
        scope_key = (ref.host, ref.repository, access)
        with self._lock:
            authorization = self._tokens.get(scope_key)
        for first_pass in (True, False):  # the second pass carries the credentials a 401 asked for
            sent = dict(headers)
            if authorization:
                sent["Authorization"] = authorization
            answer = self._send(url, method, sent, ref, body)
            if answer.status == 401 and first_pass:
                authorization = self._authorize(ref, answer.headers.get("www-authenticate", ""), access, url)
                with self._lock:
                    self._tokens[scope_key] = authorization
                continue
            return answer
        raise AssertionError("unreachable")

    def _send(
        self, url: str, method: str, headers: Mapping[str, str], ref: RepositoryRef, body: bytes | None = None
    ) -> _Answer:
        """One request; transient failures raise _Transient, unreachable hosts BackendError."""
        request = urllib.request.Request(url, data=body, method=method, headers=dict(headers))
        try:
            with self._opener.open(request, timeout=self._timeout) as response:
                content = response.read(MAX_BODY) if method != "HEAD" else b""
                return _Answer(response.status, _lower(response.headers.items()), content)
        except urllib.error.HTTPError as error:
            if error.code in RETRY_STATUSES:
                raise _Transient(f"answered {error.code} {error.reason}") from error
            try:
                content = error.read(MAX_BODY) if method != "HEAD" else b""
            except (OSError, http.client.HTTPException):
                content = b""
            return _Answer(error.code, _lower(error.headers.items()), content)
        except (ConnectionResetError, http.client.RemoteDisconnected, http.client.IncompleteRead) as error:
            raise _Transient(f"connection reset ({error})") from error
        except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
            reason = getattr(error, "reason", error)
            if isinstance(reason, ConnectionResetError):
                raise _Transient(f"connection reset ({reason})") from error
            raise BackendError(f"registry {ref.host}: cannot reach it ({reason})") from error

    def _authorize(self, ref: RepositoryRef, challenge: str, access: Access, url: str) -> str:
        """The Authorization header value a 401 challenge asks for."""
        scheme, _, params_text = challenge.strip().partition(" ")
        params = dict(_CHALLENGE_PARAM.findall(params_text))
        credential = self.credentials.resolve(ref.host)
        if scheme.lower() == "basic":
            if credential is None or credential.kind != "basic":
                what = "none is configured"
                if credential is not None:
                    what = f"the {credential.source} holds a token"
                raise BackendError(
                    f"registry {ref.host}: {url} asks for a user name and password, and {what}; "
                    f"{self.credentials.login_hint(ref.host)}"
                )
            return _basic(credential)
        if scheme.lower() != "bearer" or "realm" not in params:
            raise BackendError(f"registry {ref.host}: {url} answered 401 with challenge {challenge!r}")
        if credential is not None and credential.kind == "registry_token":
            return f"Bearer {credential.secret}"
        actions = "pull" if access == "pull" else "pull,push"
        scope = params.get("scope") or f"repository:{ref.repository}:{actions}"
        document = self._fetch_token(ref, params["realm"], params.get("service", ""), scope, credential)
        token = document.get("token") or document.get("access_token")
        if not isinstance(token, str) or not token:
            realm_host = urllib.parse.urlsplit(params["realm"]).netloc
            raise BackendError(f"registry {ref.host}: the token service {realm_host} gave no token")
        return f"Bearer {token}"

    def _fetch_token(
        self,
        ref: RepositoryRef,
        realm: str,
        service: str,
        scope: str,
        credential: RegistryCredential | None,
    ) -> dict[str, Any]:
        """Ask the token realm, as the Docker Engine does: POST for refresh tokens, else GET."""
        realm_host = urllib.parse.urlsplit(realm).netloc
        headers: dict[str, str] = {}
        if credential is not None and credential.kind == "identity_token":
            form = {
                "grant_type": "refresh_token",
                "refresh_token": credential.secret,
                "service": service,
                "scope": scope,
                "client_id": ENGINE_CLIENT_ID,
            }
            request = urllib.request.Request(
                realm,
                data=urllib.parse.urlencode(form).encode(),
                method="POST",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
        else:
            query = [("service", service)] if service else []
            query += [("scope", part) for part in scope.split(" ") if part]
            if credential is not None:
                query.append(("account", credential.username))
                headers["Authorization"] = _basic(credential)
            separator = "&" if "?" in realm else "?"
            token_url = realm + separator + urllib.parse.urlencode(query)
            request = urllib.request.Request(token_url, headers=headers)
        try:
            with self._opener.open(request, timeout=self._timeout) as response:
                document = json.loads(response.read(MAX_BODY))
        except urllib.error.HTTPError as error:
            if credential is None:
                hint = f"; if the repository is private, {self.credentials.login_hint(ref.host)}"
            else:
                hint = f" (credentials from the {credential.source}; {self.credentials.login_hint(ref.host)})"
            answered = f"the token service {realm_host} answered {error.code} {error.reason}"
            raise BackendError(f"registry {ref.host}: {answered}{hint}") from error
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as error:
            reason = getattr(error, "reason", error)
            raise BackendError(
                f"registry {ref.host}: cannot get a token from {realm_host} ({reason})"
            ) from error
        if not isinstance(document, dict):
            raise BackendError(f"registry {ref.host}: the token service {realm_host} gave no token")
        return document


def _basic(credential: RegistryCredential) -> str:
    pair = f"{credential.username}:{credential.secret}".encode()
    return "Basic " + base64.b64encode(pair).decode()


def _is_registry_not_found(answer: _Answer) -> bool:
    """A 404 from a registry: its API version header, or a distribution error document."""
    if "docker-distribution-api-version" in answer.headers:
        return True
    try:
        document = json.loads(answer.body)
    except ValueError:
        return False
    errors = document.get("errors") if isinstance(document, dict) else None
    return isinstance(errors, list) and any(
        isinstance(error, dict) and error.get("code") in REGISTRY_NOT_FOUND_CODES for error in errors
    )


def _lower(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Headers keyed by lower-case name: HTTP header names are case-insensitive."""
    return {key.lower(): value for key, value in items}

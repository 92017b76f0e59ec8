"""Whether an image is already in the target registry, for `--backend cloudbuild`.

Google's registries take Application Default Credentials; other registries use docker's config.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import google.auth.credentials
import google.auth.exceptions
import google.auth.transport.requests

from imagecascade.cloud.cloudbuild_api import application_default_credentials
from imagecascade.cloud.retry import LOGIN_FIX
from imagecascade.core.settings import Settings
from imagecascade.engines.store import RegistryStore
from imagecascade.errors import BackendError, ConfigError


class _RegistryCredentials(Mapping[str, tuple[str, str]]):
    """Registry credentials: ADC access tokens for Google's registries, docker's config for others.

    Artifact Registry and gcr.io take `oauth2accesstoken:<token>` at their token service (the
    flow `gcloud auth configure-docker` sets up), so a manifest HEAD there gets a Bearer token
    from Application Default Credentials. Tokens are refreshed when they expire.
    """

    def __init__(
        self,
        fallback: Mapping[str, tuple[str, str]],
        token: Callable[[], str],
        is_google_host: Callable[[str], bool],
    ) -> None:
        self._fallback = fallback
        self._token = token
        self._is_google_host = is_google_host

    def __getitem__(self, host: str) -> tuple[str, str]:
        if self._is_google_host(host):
            return ("oauth2accesstoken", self._token())
        return self._fallback[host]

    def __iter__(self) -> Iterator[str]:
        return iter(self._fallback)

    def __len__(self) -> int:
        return len(self._fallback)

    def get(self, host: str, default: Any = None) -> Any:
        try:
            return self[host]
        except KeyError:
            return default


def is_google_registry(host: str) -> bool:
    name = host.partition(":")[0]
    return name.endswith((".pkg.dev", ".gcr.io")) or name == "gcr.io"


def adc_token_provider(credentials: google.auth.credentials.Credentials | None = None) -> Callable[[], str]:
    """A function returning a valid access token from ADC, refreshing it when needed."""
    lock = threading.Lock()
    state: dict[str, Any] = {"credentials": credentials}

    def token() -> str:
        with lock:
            if state["credentials"] is None:
                state["credentials"] = application_default_credentials()
            current = state["credentials"]
            if not current.valid:
                try:
                    current.refresh(google.auth.transport.requests.Request())
                except google.auth.exceptions.GoogleAuthError as error:
                    raise BackendError(
                        f"Google Cloud: cannot refresh the access token ({error}); {LOGIN_FIX}"
                    ) from error
            return str(current.token)

    return token


class CloudRegistryStore(RegistryStore):
    """ "Already built" on Artifact Registry (or any registry): a manifest HEAD, never gcloud."""

    def __init__(
        self,
        registry: str,
        token: Callable[[], str],
        *,
        is_google_host: Callable[[str], bool] = is_google_registry,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        from imagecascade.engines.registry import RegistryClient, load_docker_credentials

        credentials = _RegistryCredentials(load_docker_credentials(environ), token, is_google_host)
        super().__init__(registry, RegistryClient(credentials=credentials))


def cloudbuild_store(
    settings: Settings,
    *,
    token: Callable[[], str] | None = None,
    is_google_host: Callable[[str], bool] = is_google_registry,
    environ: Mapping[str, str] | None = None,
) -> CloudRegistryStore:
    """The store `--backend cloudbuild` decides "already built" with: the target registry."""
    if not settings.registry:
        raise ConfigError(
            "Cloud Build pushes what it builds: pass --registry (e.g. us-docker.pkg.dev/PROJECT/REPO) "
            "or set [registry] url in cascade.toml"
        )
    return CloudRegistryStore(
        settings.registry, token or adc_token_provider(), is_google_host=is_google_host, environ=environ
    )

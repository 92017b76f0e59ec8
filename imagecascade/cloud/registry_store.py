"""Whether an image is already in the target registry, for `--backend cloudbuild`.

The same store and the same credential resolver as the local backend: credential helpers,
`credsStore` and `auths` as the docker CLI reads them, then Application Default Credentials for
Google's registries. Never gcloud.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from imagecascade.core.settings import Settings
from imagecascade.engines.credentials import CredentialResolver, is_google_registry
from imagecascade.engines.store import RegistryStore
from imagecascade.errors import ConfigError


def cloudbuild_store(
    settings: Settings,
    *,
    token: Callable[[], str | None] | None = None,
    is_google_host: Callable[[str], bool] = is_google_registry,
    environ: Mapping[str, str] | None = None,
) -> RegistryStore:
    """The store `--backend cloudbuild` decides "already built" with: the target registry.

    `token` replaces the ADC access token provider and `is_google_host` the test for hosts that
    take it (both for tests against loopback servers).
    """
    if not settings.registry:
        raise ConfigError(
            "Cloud Build pushes what it builds: pass --registry (e.g. us-docker.pkg.dev/PROJECT/REPO) "
            "or set [registry] url in cascade.toml"
        )
    resolver = CredentialResolver(environ, adc_token=token, adc_hosts=is_google_host)
    return RegistryStore(settings.registry, resolver)

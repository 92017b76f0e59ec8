"""Registry credentials, found exactly where the docker CLI finds them, for every backend.

One resolver for every registry request this package makes (manifest lookups, tag moves, the
engine's pushes, the Cloud Build backend's "already built?"). A port of the docker CLI's lookup
(docker/cli v28: `cli/config/configfile/file.go` GetAuthConfig, GetCredentialsStore and
getConfiguredCredentialStore; `cli/config/credentials/native_store.go` and `file_store.go`;
`cli/config/types/authconfig.go`), checked against the CLI itself in tests/test_credentials.py.
The docker SDK's kept credential-store client (`docker.credentials.Store`, docker-py 7.x) runs
the helpers.

1. `credHelpers[host]` (the exact key; Docker Hub's is `https://index.docker.io/v1/`), else
   `credsStore`: `docker-credential-<name> get` is asked for the host. Its answer is the
   credential, the user name `<token>` marking an identity token; "not found" means anonymous,
   as in the CLI (the `auths` entry is not used then; the SDK differs here). A helper that is
   missing or fails is an error, as in the CLI.
2. Without a helper, `auths`: the entry whose key is the host or names it as `https://host`,
   `http://host/v1/` and the like (keys compared by hostname; `docker.io`, `index.docker.io` and
   `registry-1.docker.io` are one). `auth` (base64 of `user:password`) or `username`/`password`;
   `identitytoken`, an OAuth2 refresh token exchanged at the token realm.
   A `registrytoken` in the entry, a bearer token sent as it is, wins over everything (the
   engine prefers it, and the CLI keeps it even when a helper answers).
3. Google's registries (`*-docker.pkg.dev`, `gcr.io`, `*.gcr.io`) when nothing above covers them:
   Application Default Credentials, as `oauth2accesstoken` and an access token (what
   `docker-credential-gcloud` hands out). No ADC: anonymous.

Secrets never appear in a repr, a message or a log: `RegistryCredential.source` says where a
credential came from instead.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import os
import shutil
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from imagecascade.errors import BackendError, ConfigError

CredentialKind = Literal["basic", "identity_token", "registry_token"]
DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
DOCKER_HUB_KEY = "https://index.docker.io/v1/"  # the CLI's key for Docker Hub in helpers and auths
TOKEN_USERNAME = "<token>"  # a helper's user name for identity tokens
ADC_USERNAME = "oauth2accesstoken"
ADC_SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
ADC_FIX = "run `gcloud auth application-default login` or `gcloud auth configure-docker {host}`"
# Helper answers are asked again after this long: gcloud's access tokens live an hour.
HELPER_TTL_SECONDS = 300.0


@dataclasses.dataclass(frozen=True)
class RegistryCredential:
    """What to present to one registry; `secret` is a password or token and is never shown."""

    kind: CredentialKind
    source: str  # e.g. "credential helper docker-credential-gcloud": safe to print
    username: str = ""
    secret: str = dataclasses.field(default="", repr=False)

    def engine_auth(self, server: str) -> dict[str, str]:
        """The X-Registry-Auth document the Docker Engine takes for a push or pull to `server`."""
        if self.kind == "identity_token":
            return {"identitytoken": self.secret, "serveraddress": server}
        if self.kind == "registry_token":
            return {"registrytoken": self.secret, "serveraddress": server}
        return {"username": self.username, "password": self.secret, "serveraddress": server}


def is_google_registry(host: str) -> bool:
    """Artifact Registry (`*-docker.pkg.dev`) and Container Registry (`gcr.io`, `*.gcr.io`)."""
    name = host.partition(":")[0].lower()
    return name.endswith(("-docker.pkg.dev", ".gcr.io")) or name == "gcr.io"


def hostname_of(key: str) -> str:
    """A config key (`https://host/v1/`, `host`, `http://host:5000`) as the CLI compares it."""
    text = key.strip()
    if "://" in text:
        text = text.split("://", 1)[1]
    host = text.split("/", 1)[0].lower()
    return "docker.io" if host in DOCKER_HUB_ALIASES else host


def docker_config_path(environ: Mapping[str, str]) -> Path:
    """`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`, as the docker CLI reads it."""
    folder = environ.get("DOCKER_CONFIG")
    if folder:
        return Path(folder) / "config.json"
    home = environ.get("HOME")
    return (Path(home) if home else Path.home()) / ".docker" / "config.json"


class CredentialResolver:
    """Credentials per registry host from the docker CLI's config, helpers and (for Google) ADC.

    `environ` is the environment to read (DOCKER_CONFIG, HOME, PATH for the helpers); `adc_token`
    returns an access token (default: Application Default Credentials through google-auth, loaded
    on first use, or None when there are none); `adc_hosts` says which hosts take ADC.
    Thread-safe. Raises ConfigError for an unreadable config.json and BackendError for a helper
    that fails.
    """

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        *,
        adc_token: Callable[[], str | None] | None = None,
        adc_hosts: Callable[[str], bool] = is_google_registry,
    ) -> None:
        self._environ = dict(os.environ if environ is None else environ)
        self._adc_token = adc_token
        self._adc_hosts = adc_hosts
        self._config: dict[str, Any] | None = None
        self._cache: dict[str, tuple[float, RegistryCredential | None]] = {}
        self._lock = threading.Lock()

    @property
    def config_path(self) -> Path:
        return docker_config_path(self._environ)

    def resolve(self, host: str) -> RegistryCredential | None:
        """The credential for registry `host` (`name[:port]`), None to go anonymous."""
        key = hostname_of(host)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and time.monotonic() - cached[0] < HELPER_TTL_SECONDS:
                return cached[1]
        entry = self._auths_entry(key)
        if entry is not None and entry[1].get("registrytoken"):
            found: RegistryCredential | None = RegistryCredential(
                "registry_token", entry[2], secret=entry[1]["registrytoken"]
            )
        else:
            helper = self._helper_for(host)
            if helper is not None:
                found = self._from_helper(host, *helper)
            else:
                found = None if entry is None else self._from_entry(*entry)
            if found is None and self._adc_hosts(key):
                return self._from_adc()  # never cached: the provider refreshes its own token
        with self._lock:
            self._cache[key] = (time.monotonic(), found)
        return found

    def engine_auth(self, host: str) -> dict[str, str]:
        """The engine's auth document for `host`; empty (anonymous) when nothing covers it."""
        credential = self.resolve(host)
        if credential is None:
            return {}
        return credential.engine_auth(DOCKER_HUB_KEY if hostname_of(host) == "docker.io" else host)

    def login_hint(self, host: str) -> str:
        """What a user runs to give this host credentials."""
        if self._adc_hosts(hostname_of(host)):
            return ADC_FIX.format(host=host)
        return f"run `docker login {host}`"

    def _read_config(self) -> dict[str, Any]:
        with self._lock:
            if self._config is not None:
                return self._config
            path = self.config_path
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except FileNotFoundError:
                data = {}
            except (OSError, UnicodeDecodeError) as error:
                raise ConfigError(f"{path}: cannot read the docker config: {error}") from error
            except ValueError as error:
                raise ConfigError(f"{path}: invalid JSON in the docker config ({error})") from error
            if not isinstance(data, dict):
                raise ConfigError(f"{path}: the docker config is not a JSON object")
            for section in ("auths", "credHelpers"):
                if data.get(section) is not None and not isinstance(data[section], dict):
                    raise ConfigError(f"{path}: `{section}` must be an object")
            if data.get("credsStore") is not None and not isinstance(data["credsStore"], str):
                raise ConfigError(f"{path}: `credsStore` must be a string")
            self._config = data
            return data

    def _helper_for(self, host: str) -> tuple[str, str] | None:
        """(helper name, where it is configured) for `host`, or None: credHelpers, then credsStore."""
        config = self._read_config()
        asked = DOCKER_HUB_KEY if hostname_of(host) == "docker.io" else host
        helpers = config.get("credHelpers") or {}
        if helpers.get(asked):
            return self._helper_name(helpers[asked], f"credHelpers.{asked}"), "credHelpers"
        if config.get("credsStore"):
            return self._helper_name(config["credsStore"], "credsStore"), "credsStore"
        return None

    def _helper_name(self, name: Any, where: str) -> str:
        if not isinstance(name, str):
            raise ConfigError(f"{self.config_path}: {where} must be a string")
        return name

    def _from_helper(self, host: str, name: str, where: str) -> RegistryCredential | None:
        import docker.credentials

        server = DOCKER_HUB_KEY if hostname_of(host) == "docker.io" else host
        program = f"docker-credential-{name}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the Store warns when the helper is missing; we raise
            store = docker.credentials.Store(name, environment=self._environ)
        # The SDK finds the helper on this process's PATH; the environment we were given decides.
        store.exe = shutil.which(program, path=self._environ.get("PATH", os.defpath))
        try:
            answer = store.get(server)
        except docker.credentials.CredentialsNotFound:
            return None
        except (docker.credentials.StoreError, ValueError, KeyError, TypeError) as error:
            detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise BackendError(
                f"registry {host}: credential helper {program} ({where} in {self.config_path}) failed: "
                f"{detail[:300]}"
            ) from error
        source = f"credential helper {program}"
        username, secret = str(answer.get("Username", "")), str(answer.get("Secret", ""))
        if username == TOKEN_USERNAME:
            return RegistryCredential("identity_token", source, secret=secret)
        return RegistryCredential("basic", source, username=username, secret=secret)

    def _auths_entry(self, host: str) -> tuple[str, dict[str, str], str] | None:
        """(key, entry, source) of the `auths` entry naming `host`, its fields checked."""
        auths: dict[str, Any] = self._read_config().get("auths") or {}
        entry_key = host if host in auths else next((key for key in auths if hostname_of(key) == host), None)
        if entry_key is None:
            return None
        entry = auths[entry_key]
        if not isinstance(entry, dict):
            raise ConfigError(f"{self.config_path}: auths.{entry_key} must be an object")
        for field in ("auth", "username", "password", "identitytoken", "registrytoken"):
            if not isinstance(entry.get(field) or "", str):
                raise ConfigError(f"{self.config_path}: auths.{entry_key}.{field} must be a string")
        return entry_key, entry, f"`auths` entry {entry_key!r} in {self.config_path}"

    def _from_entry(self, entry_key: str, entry: dict[str, str], source: str) -> RegistryCredential | None:
        if entry.get("identitytoken"):
            return RegistryCredential("identity_token", source, secret=entry["identitytoken"])
        username, password = entry.get("username") or "", entry.get("password") or ""
        if entry.get("auth"):
            try:
                decoded = base64.b64decode(entry["auth"], validate=True).decode("utf-8")
            except (binascii.Error, ValueError) as error:
                raise ConfigError(
                    f"{self.config_path}: auths.{entry_key}.auth is not base64 of user:password"
                ) from error
            if ":" not in decoded:
                raise ConfigError(f"{self.config_path}: auths.{entry_key}.auth holds no user:password")
            username, password = decoded.split(":", 1)
        if not username and not password:
            return None  # `{}`: the CLI's marker for "a helper holds it"
        return RegistryCredential("basic", source, username=username, secret=password)

    def _from_adc(self) -> RegistryCredential | None:
        if self._adc_token is None:
            self._adc_token = adc_token_provider()
        token = self._adc_token()
        if token is None:
            return None
        return RegistryCredential(
            "basic", "Application Default Credentials", username=ADC_USERNAME, secret=token
        )


def adc_token_provider(credentials: Any = None) -> Callable[[], str | None]:
    """A function returning a valid ADC access token (refreshed when expired), None without ADC.

    google-auth is imported on first use only. A refresh that fails raises BackendError.
    """
    lock = threading.Lock()
    state: dict[str, Any] = {"credentials": credentials, "looked": credentials is not None}

    def token() -> str | None:
        import google.auth
        import google.auth.exceptions
        import google.auth.transport.requests

        with lock:
            if not state["looked"]:
                state["looked"] = True
                try:
                    state["credentials"], _ = google.auth.default(scopes=list(ADC_SCOPES))
                except google.auth.exceptions.DefaultCredentialsError:
                    state["credentials"] = None
            current = state["credentials"]
            if current is None:
                return None
            if not current.valid:
                try:
                    current.refresh(google.auth.transport.requests.Request())
                except google.auth.exceptions.GoogleAuthError as error:
                    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                    raise BackendError(
                        "Google Cloud: cannot refresh the Application Default Credentials' access token "
                        f"({first[:200]}); run `gcloud auth application-default login`"
                    ) from error
            return str(current.token)

    return token

"""Registry credentials as the docker CLI finds them: config files, a fake helper, the CLI as oracle, ADC."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from registry_auth import helper_calls, write_credential_helper
from registry_double import DIGEST, REGISTRY, Answer, ScriptedServer, Seen

from imagecascade.engines.credentials import CredentialResolver, RegistryCredential, is_google_registry
from imagecascade.engines.registry import RegistryClient
from imagecascade.errors import BackendError, ConfigError

HOST = "127.0.0.1:5999"
HUB_KEY = "https://index.docker.io/v1/"


def encoded(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def resolver(tmp_path: Path, config: dict[str, Any] | str, **kwargs: Any) -> CredentialResolver:
    folder = tmp_path / "docker"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    helpers = tmp_path / "helpers"
    write_credential_helper(helpers, "fake", {HOST: ("helper-user", "helper-pw"), HUB_KEY: ("hub", "hub-pw")})
    write_credential_helper(helpers, "tokens", {HOST: ("<token>", "refresh-from-helper")})
    write_credential_helper(helpers, "broken", {}, broken=True)
    environ = {"DOCKER_CONFIG": str(folder), "PATH": f"{helpers}:/usr/bin:/bin"}
    kwargs.setdefault("adc_hosts", lambda host: False)
    return CredentialResolver(environ, **kwargs)


BASIC_AUTH = {"auth": encoded("auth-user", "auth-pw")}
# (case, config, host asked, expected (kind, username, secret, source fragment) or None for anonymous)
CASES: list[tuple[str, dict[str, Any], str, tuple[str, str, str, str] | None]] = [
    ("auths auth", {"auths": {HOST: BASIC_AUTH}}, HOST, ("basic", "auth-user", "auth-pw", "`auths` entry")),
    (
        "auths username and password",
        {"auths": {HOST: {"username": "plain", "password": "plain-pw"}}},
        HOST,
        ("basic", "plain", "plain-pw", "`auths` entry"),
    ),
    (
        "auths https key",
        {"auths": {f"https://{HOST}": BASIC_AUTH}},
        HOST,
        ("basic", "auth-user", "auth-pw", ""),
    ),
    (
        "auths /v1/ key",
        {"auths": {f"http://{HOST}/v1/": BASIC_AUTH}},
        HOST,
        ("basic", "auth-user", "auth-pw", ""),
    ),
    (
        "auths identity token",
        {"auths": {HOST: {"identitytoken": "refresh-me", **BASIC_AUTH}}},
        HOST,
        ("identity_token", "", "refresh-me", "`auths` entry"),
    ),
    (
        "auths registry token wins over a helper",
        {"credsStore": "fake", "auths": {HOST: {"registrytoken": "bearer-me"}}},
        HOST,
        ("registry_token", "", "bearer-me", "`auths` entry"),
    ),
    ("empty entry", {"auths": {HOST: {}}}, HOST, None),
    ("no entry", {"auths": {"127.0.0.1:1": BASIC_AUTH}}, HOST, None),
    ("no config", {}, HOST, None),
    (
        "credHelpers",
        {"credHelpers": {HOST: "fake"}, "auths": {HOST: BASIC_AUTH}},
        HOST,
        ("basic", "helper-user", "helper-pw", "credential helper docker-credential-fake"),
    ),
    (
        "credHelpers before credsStore",
        {"credHelpers": {HOST: "fake"}, "credsStore": "broken"},
        HOST,
        ("basic", "helper-user", "helper-pw", "docker-credential-fake"),
    ),
    (
        "credsStore",
        {"credsStore": "fake", "auths": {HOST: {}}},
        HOST,
        ("basic", "helper-user", "helper-pw", "docker-credential-fake"),
    ),
    # The CLI goes anonymous when the helper does not know the host: `auths` is not consulted.
    (
        "credsStore without the host",
        {"credsStore": "fake", "auths": {"127.0.0.1:7": BASIC_AUTH}},
        "127.0.0.1:7",
        None,
    ),
    (
        "credHelpers key must be exact",
        {"credHelpers": {f"https://{HOST}": "broken"}, "auths": {HOST: BASIC_AUTH}},
        HOST,
        ("basic", "auth-user", "auth-pw", "`auths` entry"),
    ),
    (
        "helper identity token",
        {"credHelpers": {HOST: "tokens"}},
        HOST,
        ("identity_token", "", "refresh-from-helper", "docker-credential-tokens"),
    ),
    ("Docker Hub via helper", {"credsStore": "fake"}, "registry-1.docker.io", ("basic", "hub", "hub-pw", "")),
    (
        "Docker Hub auths key",
        {"auths": {HUB_KEY: BASIC_AUTH}},
        "registry-1.docker.io",
        ("basic", "auth-user", "auth-pw", ""),
    ),
    (
        "Docker Hub alias",
        {"auths": {"docker.io": BASIC_AUTH}},
        "index.docker.io",
        ("basic", "auth-user", "", ""),
    ),
]


@pytest.mark.parametrize(("case", "config", "host", "expected"), CASES, ids=[case[0] for case in CASES])
def test_resolution_order(
    tmp_path: Path, case: str, config: dict[str, Any], host: str, expected: tuple[str, str, str, str] | None
) -> None:
    found = resolver(tmp_path, config).resolve(host)
    if expected is None:
        assert found is None
        return
    assert found is not None
    kind, username, secret, source = expected
    assert (found.kind, found.username) == (kind, username)
    assert not secret or found.secret == secret
    assert source in found.source
    assert found.secret not in repr(found) and found.secret not in found.source


def test_helpers_are_asked_with_the_host_and_docker_hubs_key(tmp_path: Path) -> None:
    resolve = resolver(tmp_path, {"credsStore": "fake"})
    resolve.resolve(HOST)
    resolve.resolve("registry-1.docker.io")
    resolve.resolve(HOST)  # answered from memory for a while: helpers can be slow
    assert helper_calls(tmp_path / "helpers", "fake") == [f"get {HOST}", f"get {HUB_KEY}"]


@pytest.mark.parametrize(
    ("config", "error", "message"),
    [
        ("{not json", ConfigError, r"config.json: invalid JSON in the docker config"),
        ('{"auths": []}', ConfigError, r"config.json: `auths` must be an object"),
        (json.dumps({"auths": {HOST: {"auth": "***"}}}), ConfigError, rf"auths.{HOST}.auth is not base64"),
        (json.dumps({"auths": {HOST: {"auth": "bm9jb2xvbg=="}}}), ConfigError, "holds no user:password"),
        (json.dumps({"credHelpers": {HOST: 7}}), ConfigError, rf"credHelpers.{HOST} must be a string"),
        (json.dumps({"credHelpers": {HOST: "broken"}}), BackendError, r"docker-credential-broken .*locked"),
        (json.dumps({"credsStore": "absent"}), BackendError, r"docker-credential-absent .*not installed"),
    ],
    ids=[
        "invalid-json",
        "auths-list",
        "auth-not-base64",
        "auth-truncated",
        "helper-name",
        "helper-fails",
        "no-helper",
    ],
)
def test_a_broken_config_or_helper_is_one_clear_error(
    tmp_path: Path, config: str, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message) as raised:
        resolver(tmp_path, config).resolve(HOST)
    assert "\n" not in str(raised.value) and str(tmp_path) in str(raised.value)


def test_engine_auth_documents(tmp_path: Path) -> None:
    config = {
        "auths": {
            HOST: BASIC_AUTH,
            "127.0.0.1:2": {"identitytoken": "refresh-me"},
            "127.0.0.1:3": {"registrytoken": "bearer-me"},
        }
    }
    resolve = resolver(tmp_path, config)
    assert resolve.engine_auth(HOST) == {
        "username": "auth-user",
        "password": "auth-pw",
        "serveraddress": HOST,
    }
    assert resolve.engine_auth("127.0.0.1:2") == {
        "identitytoken": "refresh-me",
        "serveraddress": "127.0.0.1:2",
    }
    assert resolve.engine_auth("127.0.0.1:3") == {
        "registrytoken": "bearer-me",
        "serveraddress": "127.0.0.1:3",
    }
    assert resolve.engine_auth("127.0.0.1:4") == {}  # anonymous: the SDK must not look again


@pytest.mark.parametrize(
    ("host", "google"),
    [
        ("us-docker.pkg.dev", True),
        ("europe-west4-docker.pkg.dev", True),
        ("gcr.io", True),
        ("eu.gcr.io", True),
        ("us-python.pkg.dev", False),
        ("ghcr.io", False),
        ("127.0.0.1:5000", False),
    ],
)
def test_google_registry_hosts(host: str, google: bool) -> None:
    assert is_google_registry(host) is google


def test_google_hosts_fall_back_to_adc_only_when_nothing_else_covers_them(tmp_path: Path) -> None:
    tokens = iter(["access-1", "access-2"])
    config = {"credHelpers": {"127.0.0.1:2": "fake"}, "auths": {"127.0.0.1:3": BASIC_AUTH}}
    resolve = resolver(tmp_path, config, adc_token=lambda: next(tokens), adc_hosts=lambda host: True)
    adc = resolve.resolve(HOST)
    assert adc == RegistryCredential(
        "basic", "Application Default Credentials", "oauth2accesstoken", "access-1"
    )
    assert resolve.resolve(HOST).secret == "access-2"  # asked each time: the provider refreshes
    assert resolve.resolve("127.0.0.1:3").source.startswith("`auths` entry")
    without = resolver(tmp_path, {}, adc_token=lambda: None, adc_hosts=lambda host: True)
    assert without.resolve(HOST) is None  # no ADC: anonymous, as the CLI would be


def test_adc_through_google_auth_and_a_token_endpoint_on_loopback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real google-auth flow: a service-account key, its JWT grant at token_uri, the token used."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    def oauth(seen: Seen) -> Answer:
        form = urllib.parse.parse_qs(seen.body.decode())
        if form.get("grant_type") != ["urn:ietf:params:oauth:grant-type:jwt-bearer"]:
            return Answer(400)
        document = {"access_token": "adc-access-token", "expires_in": 3600, "token_type": "Bearer"}
        return Answer(200, {"Content-Type": "application/json"}, json.dumps(document).encode())

    def registry_gate(seen: Seen) -> Answer:
        if seen.headers.get("Authorization") == f"Basic {encoded('oauth2accesstoken', 'adc-access-token')}":
            return Answer(200, {"Docker-Content-Digest": DIGEST, **REGISTRY})
        return Answer(401, {"WWW-Authenticate": 'Basic realm="gar"', **REGISTRY})

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    with ScriptedServer(respond=oauth) as token_uri, ScriptedServer(respond=registry_gate) as registry:
        account = {
            "type": "service_account",
            "project_id": "p",
            "private_key_id": "k",
            "private_key": pem,
            "client_email": "builder@p.iam.gserviceaccount.com",
            "client_id": "1",
            "token_uri": f"http://{token_uri.address}/token",
        }
        (tmp_path / "adc.json").write_text(json.dumps(account))
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "adc.json"))
        resolve = resolver(tmp_path, {}, adc_hosts=lambda host: host == registry.address)
        lookup = RegistryClient(timeout=5, credentials=resolve)
        assert lookup.manifest_digest(f"{registry.address}/p/arr/app", "v1") == DIGEST
        assert lookup.manifest_digest(f"{registry.address}/p/arr/app", "v2") == DIGEST
    assert len(token_uri.seen) == 1  # the access token is kept until it expires


# The docker CLI as the oracle: what it sends (through the engine) for a config, against what we send.


class AuthEcho:
    """A registry with a Bearer challenge and its own token realm, recording the credentials shown.

    Observations: ("basic", user:password) on a token GET, ("refresh", token) on a token POST,
    ("bearer", token) when a registry token reaches the registry itself, ("anonymous", "").
    """

    def __init__(self) -> None:
        self.observed: set[tuple[str, str]] = set()
        self._server = ScriptedServer(respond=self._answer)
        self.address = self._server.address

    def __enter__(self) -> AuthEcho:
        self._server.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.__exit__(*exc_info)

    def _answer(self, seen: Seen) -> Answer:
        authorization = seen.headers.get("Authorization", "")
        if seen.path.startswith("/token"):
            if seen.method == "POST":
                form = urllib.parse.parse_qs(seen.body.decode())
                self.observed.add(("refresh", form.get("refresh_token", [""])[0]))
                document = {"access_token": "issued"}
            else:
                if authorization.startswith("Basic "):
                    self.observed.add(("basic", base64.b64decode(authorization[6:]).decode()))
                else:
                    self.observed.add(("anonymous", ""))
                document = {"token": "issued"}
            return Answer(200, {"Content-Type": "application/json"}, json.dumps(document).encode())
        if authorization.startswith("Bearer ") and authorization != "Bearer issued":
            self.observed.add(("bearer", authorization[7:]))
        if authorization.startswith("Bearer "):
            return Answer(200 if seen.path == "/v2/" else 404, REGISTRY)
        challenge = f'Bearer realm="http://{self.address}/token",service="echo"'
        return Answer(401, {"WWW-Authenticate": challenge, **REGISTRY})


DIFFERENTIAL = [
    ("auths-auth", {"auths": {"{host}": {"auth": encoded("auth-user", "auth-pw")}}}),
    ("auths-https-v1-key", {"auths": {"http://{host}/v1/": {"username": "plain", "password": "plain-pw"}}}),
    ("auths-identitytoken", {"auths": {"{host}": {"identitytoken": "refresh-me"}}}),
    ("auths-registrytoken", {"auths": {"{host}": {"registrytoken": "bearer-me"}}}),
    ("credHelpers", {"credHelpers": {"{host}": "echo"}, "auths": {"{host}": {"auth": encoded("a", "b")}}}),
    ("credHelpers-token", {"credHelpers": {"{host}": "echotoken"}}),
    (
        "credHelpers-inexact-key",
        {"credHelpers": {"https://{host}": "echo"}, "auths": {"{host}": {"username": "u", "password": "p"}}},
    ),
    ("credsStore", {"credsStore": "echo"}),
    ("credsStore-without-host", {"credsStore": "nothing", "auths": {"{host}": {"auth": encoded("a", "b")}}}),
    ("nothing", {}),
]


@pytest.mark.engine
@pytest.mark.parametrize(("case", "template"), DIFFERENTIAL, ids=[case for case, _ in DIFFERENTIAL])
def test_credentials_match_the_docker_cli(
    tmp_path: Path, engine: Any, case: str, template: dict[str, Any]
) -> None:
    cli = shutil.which("docker")
    if cli is None:
        pytest.fail("the docker CLI is not on PATH (scripts/provision installs docker.io)")
    with AuthEcho() as echo:
        config = json.loads(json.dumps(template).replace("{host}", echo.address))
        folder = tmp_path / "docker"
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(config))
        helpers = tmp_path / "helpers"
        write_credential_helper(helpers, "echo", {echo.address: ("helper-user", "helper-pw")})
        write_credential_helper(helpers, "echotoken", {echo.address: ("<token>", "helper-refresh")})
        write_credential_helper(helpers, "nothing", {})
        environ = {**os.environ, "DOCKER_CONFIG": str(folder), "PATH": f"{helpers}:{os.environ['PATH']}"}
        pulled = subprocess.run(
            [cli, "pull", "-q", f"{echo.address}/team/app:v1"],
            env=environ,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert echo.observed, pulled.stderr  # the pull reached the registry
        by_docker = set(echo.observed)
        echo.observed.clear()
        ours = RegistryClient(
            timeout=5, credentials=CredentialResolver(environ, adc_hosts=lambda host: False)
        )
        assert ours.manifest_digest(f"{echo.address}/team/app", "v1") is None
        assert echo.observed == by_docker, case


def test_a_credential_never_shows_its_secret() -> None:
    credential = RegistryCredential("basic", "credential helper docker-credential-x", "u", "p@ss")
    assert "p@ss" not in repr(credential) and "p@ss" not in str(credential)

"""The registry client against scripted HTTP servers on loopback, and real docker-registry servers."""

from __future__ import annotations

import base64
import hashlib
import json
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from conftest import RegistryServer
from registry_auth import TokenService, htpasswd_auth
from registry_double import DIGEST, REGISTRY, TOKEN, Answer, ScriptedServer, Seen, token_registry

from imagecascade.engines.credentials import CredentialResolver
from imagecascade.engines.registry import ImageRef, RegistryClient, RepositoryRef
from imagecascade.errors import BackendError

OK = Answer(200, {"Docker-Content-Digest": DIGEST, **REGISTRY})
MISSING = Answer(404, REGISTRY)
UNKNOWN_MANIFEST = json.dumps({"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]})
UNKNOWN_NAME = json.dumps({"errors": [{"code": "NAME_UNKNOWN", "message": "repository name not known"}]})

# (case, scripted answers, expected digest or error fragment, requests made)
LOOKUPS = [
    ("present", [OK], DIGEST, 1),
    ("missing", [MISSING], None, 1),
    ("missing, error body only", [Answer(404), Answer(404, body=UNKNOWN_MANIFEST.encode())], None, 2),
    ("unknown name, error body only", [Answer(404), Answer(404, body=UNKNOWN_NAME.encode())], None, 2),
    (
        "404 from a web server",
        [Answer(404, {"Content-Type": "text/html"}, b"<h1>Nope</h1>")],
        "a registry",
        2,
    ),
    (
        "404 with another error",
        [Answer(404, body=b'{"errors": [{"code": "DENIED"}]}')],
        "without a registry",
        2,
    ),
    ("server error", [Answer(500)], "answered 500", 1),
    ("forbidden", [Answer(403)], "answered 403 .*anonymously; run `docker login", 1),
    ("retried 503", [Answer(503), Answer(503), OK], DIGEST, 3),
    ("retried 429", [Answer(429), OK], DIGEST, 2),
    ("retried reset", [Answer(0, reset=True), OK], DIGEST, 2),
    ("503 for good", [Answer(503)], "still failing after 3 tries", 3),
    ("401 without challenge", [Answer(401)], "challenge", 1),
]


def client(config: Path | None = None, **kwargs: object) -> RegistryClient:
    """A client reading the docker config in `config` (none: an empty folder)."""
    folder = config if config is not None else Path("/nonexistent-imagecascade-docker-config")
    resolver = CredentialResolver({"DOCKER_CONFIG": str(folder), "PATH": ""}, adc_hosts=lambda host: False)
    return RegistryClient(timeout=5, credentials=resolver, attempts=3, backoff=0.01, **kwargs)  # type: ignore[arg-type]


def docker_config(folder: Path, document: dict[str, object]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(document))
    return folder


def basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(("case", "answers", "expected", "requests"), LOOKUPS, ids=[c[0] for c in LOOKUPS])
def test_manifest_lookup(case: str, answers: list[Answer], expected: str | None, requests: int) -> None:
    with ScriptedServer(answers) as server:
        if expected is None or expected.startswith("sha256:"):
            assert client().manifest_digest(f"{server.address}/team/app", "v1") == expected
        else:
            with pytest.raises(BackendError, match=expected) as raised:
                client().manifest_digest(f"{server.address}/team/app", "v1")
            if "404" in case:  # the error names the URL and is never "missing"
                assert f"http://{server.address}/v2/team/app/manifests/v1 answered 404" in str(raised.value)
    assert len(server.seen) == requests
    first = server.seen[0]
    assert (first.method, first.path) == ("HEAD", "/v2/team/app/manifests/v1")
    assert "application/vnd.docker.distribution.manifest.v2+json" in first.headers["Accept"]
    assert "application/vnd.oci.image.index.v1+json" in first.headers["Accept"]
    if requests == 2 and ("404" in case or "body" in case):
        assert server.seen[1].method == "GET"  # a HEAD has no body to show the error code


def test_refused_connection_is_an_error_at_once() -> None:
    with ScriptedServer([OK]) as server:
        address = server.address
    started = time.monotonic()
    with pytest.raises(BackendError, match="cannot reach it"):
        client().manifest_digest(f"{address}/team/app", "v1")
    assert time.monotonic() - started < 2


def test_bearer_challenge_fetches_a_token_and_retries() -> None:
    with token_registry() as (registry, tokens):
        lookup = client()
        assert lookup.manifest_digest(f"{registry.address}/team/app", "v1") == DIGEST
        assert lookup.manifest_digest(f"{registry.address}/team/app", "v2") == DIGEST
    assert [seen.headers.get("Authorization") for seen in registry.seen] == [
        None,
        f"Bearer {TOKEN}",
        f"Bearer {TOKEN}",  # the token is kept for the next lookup
    ]
    assert len(tokens.seen) == 1
    query = tokens.seen[0].path
    assert query.startswith("/token?") and "service=test-registry" in query
    assert "scope=repository%3Ateam%2Fapp%3Apull" in query
    assert "Authorization" not in tokens.seen[0].headers  # anonymous without credentials


def test_token_service_gets_docker_login_credentials(tmp_path: Path) -> None:
    with token_registry(user="robot", password="s3cret") as (registry, tokens):
        config = docker_config(tmp_path, {"auths": {registry.address: {"auth": basic("robot", "s3cret")}}})
        assert client(config).manifest_digest(f"{registry.address}/team/app", "v1") == DIGEST
        assert tokens.seen[0].headers["Authorization"] == f"Basic {basic('robot', 's3cret')}"
        assert "account=robot" in tokens.seen[0].path  # as the engine asks


def test_refused_token_says_how_to_log_in_and_never_shows_the_password(tmp_path: Path) -> None:
    with token_registry(user="robot", password="s3cret") as (registry, _tokens):
        with pytest.raises(BackendError, match="docker login") as anonymous:
            client().manifest_digest(f"{registry.address}/team/app", "v1")
        config = docker_config(tmp_path, {"auths": {registry.address: {"auth": basic("robot", "wrong-pw")}}})
        with pytest.raises(BackendError, match="answered 401") as refused:
            client(config).manifest_digest(f"{registry.address}/team/app", "v1")
    assert "`auths` entry" in str(refused.value) and str(tmp_path) in str(refused.value)
    for error in (anonymous.value, refused.value):
        assert "wrong-pw" not in str(error) and basic("robot", "wrong-pw") not in str(error)


def test_an_identity_token_is_exchanged_by_post_at_the_realm(tmp_path: Path) -> None:
    """`identitytoken` is an OAuth2 refresh token: POST grant_type=refresh_token, as the engine does."""

    def hand_out(seen: Seen) -> Answer:
        form = urllib.parse.parse_qs(seen.body.decode())
        if seen.method == "POST" and form.get("refresh_token") == ["refresh-me"]:
            return Answer(
                200, {"Content-Type": "application/json"}, json.dumps({"access_token": TOKEN}).encode()
            )
        return Answer(401)

    with ScriptedServer(respond=hand_out) as tokens:
        challenge = f'Bearer realm="http://{tokens.address}/token",service="svc"'

        def gate(seen: Seen) -> Answer:
            if seen.headers.get("Authorization") == f"Bearer {TOKEN}":
                return OK
            return Answer(401, {"WWW-Authenticate": challenge, **REGISTRY})

        with ScriptedServer(respond=gate) as registry:
            config = docker_config(tmp_path, {"auths": {registry.address: {"identitytoken": "refresh-me"}}})
            assert client(config).manifest_digest(f"{registry.address}/team/app", "v1") == DIGEST
    [exchange] = tokens.seen
    assert exchange.method == "POST" and exchange.path == "/token"
    assert exchange.headers["Content-Type"] == "application/x-www-form-urlencoded"
    form = urllib.parse.parse_qs(exchange.body.decode())
    assert form == {
        "grant_type": ["refresh_token"],
        "refresh_token": ["refresh-me"],
        "service": ["svc"],
        "scope": ["repository:team/app:pull"],
        "client_id": ["docker"],
    }
    assert "Authorization" not in exchange.headers  # never as a basic-auth password


def test_a_registry_token_is_sent_as_the_bearer_token_itself(tmp_path: Path) -> None:
    with token_registry() as (registry, tokens):
        config = docker_config(tmp_path, {"auths": {f"https://{registry.address}": {"registrytoken": TOKEN}}})
        assert client(config).manifest_digest(f"{registry.address}/team/app", "v1") == DIGEST
    assert tokens.seen == []


@pytest.mark.parametrize("same_origin", [False, True], ids=["other-host", "same-host"])
def test_credentials_never_follow_a_redirect_to_another_origin(tmp_path: Path, same_origin: bool) -> None:
    with ScriptedServer([OK]) as elsewhere:

        def gate(seen: Seen) -> Answer:
            if seen.path.startswith("/moved/"):
                return OK
            if "Authorization" not in seen.headers:
                return Answer(401, {"WWW-Authenticate": 'Basic realm="test"', **REGISTRY})
            target = "/moved/manifest" if same_origin else f"http://{elsewhere.address}/moved/manifest"
            return Answer(307, {"Location": target, **REGISTRY})

        with ScriptedServer(respond=gate) as registry:
            config = docker_config(
                tmp_path, {"auths": {registry.address: {"auth": basic("robot", "s3cret")}}}
            )
            assert client(config).manifest_digest(f"{registry.address}/team/app", "v1") == DIGEST
    if same_origin:
        assert registry.seen[-1].path == "/moved/manifest"
        assert registry.seen[-1].headers["Authorization"] == f"Basic {basic('robot', 's3cret')}"
        assert elsewhere.seen == []
    else:
        [followed] = elsewhere.seen
        assert followed.path == "/moved/manifest" and "Authorization" not in followed.headers


def test_tag_digest_ignores_the_old_pin_and_rejects_missing_tags() -> None:
    with ScriptedServer([OK]) as server:
        assert client().tag_digest(f"{server.address}/team/app:v1@sha256:{'0' * 64}") == DIGEST
        assert server.seen[0].path == "/v2/team/app/manifests/v1"
    with ScriptedServer([MISSING]) as server, pytest.raises(BackendError, match="no such tag"):
        client().tag_digest(f"{server.address}/team/app:v1")


REFERENCES = [
    ("ubuntu", "ubuntu", "latest", None),
    ("nvidia/cuda:12.4.1-devel", "nvidia/cuda", "12.4.1-devel", None),
    ("127.0.0.1:5000/base:1", "127.0.0.1:5000/base", "1", None),
    ("127.0.0.1:5000/base", "127.0.0.1:5000/base", "latest", None),
    (f"h.io/a/b:t@sha256:{'1' * 64}", "h.io/a/b", "t", f"sha256:{'1' * 64}"),
]


@pytest.mark.parametrize(("text", "repository", "tag", "digest"), REFERENCES)
def test_image_reference_parts(text: str, repository: str, tag: str, digest: str | None) -> None:
    assert ImageRef.parse(text) == ImageRef(repository=repository, tag=tag, digest=digest)


@pytest.mark.parametrize(
    ("text", "host", "repository", "url"),
    [
        ("ubuntu", "registry-1.docker.io", "library/ubuntu", "https://registry-1.docker.io"),
        ("nvidia/cuda", "registry-1.docker.io", "nvidia/cuda", "https://registry-1.docker.io"),
        ("127.0.0.1:5000/a/b", "127.0.0.1:5000", "a/b", "http://127.0.0.1:5000"),
        ("us-docker.pkg.dev/p/r/img", "us-docker.pkg.dev", "p/r/img", "https://us-docker.pkg.dev"),
    ],
)
def test_repository_hosts(text: str, host: str, repository: str, url: str) -> None:
    ref = RepositoryRef.parse(text)
    assert (ref.host, ref.repository, ref.base_url) == (host, repository, url)


@pytest.mark.registry
def test_real_registry_missing_tag_is_none_and_stopped_registry_is_an_error(
    registry_server: RegistryServer,
) -> None:
    address = registry_server.address
    assert client().manifest_digest(f"{address}/nothing/here", "v1") is None
    registry_server.stop()
    with pytest.raises(BackendError, match="cannot reach it"):
        client().manifest_digest(f"{address}/nothing/here", "v1")


def _upload(address: str, repository: str, tag: str, authorization: str, label: str) -> str:
    """Put a small OCI manifest (one config blob, no layers) under `tag`, as a pusher would."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Labels": {"l": label}}}).encode()
    digest = "sha256:" + hashlib.sha256(config).hexdigest()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": digest,
                "size": len(config),
            },
            "layers": [],
        }
    ).encode()

    def send(method: str, url: str, body: bytes = b"", kind: str = "") -> dict[str, str]:
        headers = {"Authorization": authorization, **({"Content-Type": kind} if kind else {})}
        request = urllib.request.Request(url, data=body or None, method=method, headers=headers)
        with urllib.request.urlopen(request, timeout=10) as response:
            return dict(response.headers.items())

    base = f"http://{address}/v2/{repository}"
    location = send("POST", f"{base}/blobs/uploads/")["Location"]
    location = urllib.parse.urljoin(base, location)
    separator = "&" if "?" in location else "?"
    send(
        "PUT", f"{location}{separator}digest={urllib.parse.quote(digest)}", config, "application/octet-stream"
    )
    send("PUT", f"{base}/manifests/{tag}", manifest, "application/vnd.oci.image.manifest.v1+json")
    return "sha256:" + hashlib.sha256(manifest).hexdigest()


@pytest.mark.registry
@pytest.mark.parametrize("auth", ["htpasswd", "token"])
def test_copy_tag_moves_a_tag_on_a_real_registry_that_wants_credentials(tmp_path: Path, auth: str) -> None:
    """`:latest` repair is a manifest GET and PUT with push rights, on basic and on token auth."""
    tokens = TokenService(tmp_path, users={"robot": "s3cret"}) if auth == "token" else None
    server = RegistryServer(
        tmp_path, tokens.registry_auth if tokens else htpasswd_auth(tmp_path, {"robot": "s3cret"})
    )
    server.start()
    try:
        config = docker_config(
            tmp_path / "docker", {"auths": {server.address: {"auth": basic("robot", "s3cret")}}}
        )
        registry = client(config)
        repository = f"{server.address}/team/app"
        writer = (
            f"Bearer {tokens.issue('robot', ['repository:team/app:pull,push'])}"
            if tokens
            else f"Basic {basic('robot', 's3cret')}"
        )
        first = _upload(server.address, "team/app", "one", writer, "1")
        second = _upload(server.address, "team/app", "two", writer, "2")
        tokens_before = len(tokens.requests) if tokens else 0
        assert registry.manifest_digest(repository, "latest") is None
        assert registry.copy_tag(repository, "one", "latest") == first
        assert registry.manifest_digest(repository, "latest") == first
        assert registry.copy_tag(repository, "two", "latest") == second
        assert registry.manifest_digest(repository, "latest") == second
        with pytest.raises(BackendError, match=r"run `docker login"):
            client().manifest_digest(repository, "one")
    finally:
        server.stop()
        if tokens is not None:
            tokens.close()
    if tokens is not None:  # push rights were asked for, with the robot's credentials
        asked = {
            (request.method, request.account, ",".join(sorted(request.scope.rpartition(":")[2].split(","))))
            for request in tokens.requests[tokens_before:]
            if request.scope.startswith("repository:team/app:")
        }
        assert asked >= {("GET", "robot", "pull"), ("GET", "robot", "pull,push")}

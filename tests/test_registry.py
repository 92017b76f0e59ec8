"""The registry client against scripted HTTP servers on loopback, and one real docker-registry."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest
from registry_double import DIGEST, TOKEN, Answer, ScriptedServer, token_registry

from imagecascade.engines.registry import ImageRef, RegistryClient, RepositoryRef, load_docker_credentials
from imagecascade.errors import BackendError

OK = Answer(200, {"Docker-Content-Digest": DIGEST})

# (case, scripted answers, expected digest or error fragment, requests made)
LOOKUPS = [
    ("present", [OK], DIGEST, 1),
    ("missing", [Answer(404)], None, 1),
    ("server error", [Answer(500)], "answered 500", 1),
    ("forbidden", [Answer(403)], "not authorised", 1),
    ("retried 503", [Answer(503), Answer(503), OK], DIGEST, 3),
    ("retried 429", [Answer(429), OK], DIGEST, 2),
    ("retried reset", [Answer(0, reset=True), OK], DIGEST, 2),
    ("503 for good", [Answer(503)], "still failing after 3 tries", 3),
    ("401 without challenge", [Answer(401)], "challenge", 1),
]


def client(**kwargs: object) -> RegistryClient:
    return RegistryClient(timeout=5, credentials={}, attempts=3, backoff=0.01, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("case", "answers", "expected", "requests"), LOOKUPS, ids=[c[0] for c in LOOKUPS])
def test_manifest_lookup(case: str, answers: list[Answer], expected: str | None, requests: int) -> None:
    with ScriptedServer(answers) as server:
        if expected is None or expected.startswith("sha256:"):
            assert client().manifest_digest(f"{server.address}/team/app", "v1") == expected
        else:
            with pytest.raises(BackendError, match=expected):
                client().manifest_digest(f"{server.address}/team/app", "v1")
    assert len(server.seen) == requests
    first = server.seen[0]
    assert (first.method, first.path) == ("HEAD", "/v2/team/app/manifests/v1")
    assert "application/vnd.docker.distribution.manifest.v2+json" in first.headers["Accept"]
    assert "application/vnd.oci.image.index.v1+json" in first.headers["Accept"]


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
        auth = base64.b64encode(b"robot:s3cret").decode()
        (tmp_path / "config.json").write_text(json.dumps({"auths": {registry.address: {"auth": auth}}}))
        credentials = load_docker_credentials({"DOCKER_CONFIG": str(tmp_path)})
        assert credentials == {registry.address: ("robot", "s3cret")}
        lookup = RegistryClient(timeout=5, credentials=credentials)
        assert lookup.manifest_digest(f"{registry.address}/team/app", "v1") == DIGEST
        assert tokens.seen[0].headers["Authorization"] == f"Basic {auth}"


def test_refused_token_says_how_to_log_in() -> None:
    with (
        token_registry(user="robot", password="s3cret") as (registry, _tokens),
        pytest.raises(BackendError, match="docker login"),
    ):
        client().manifest_digest(f"{registry.address}/team/app", "v1")


def test_tag_digest_ignores_the_old_pin_and_rejects_missing_tags() -> None:
    with ScriptedServer([OK]) as server:
        assert client().tag_digest(f"{server.address}/team/app:v1@sha256:{'0' * 64}") == DIGEST
        assert server.seen[0].path == "/v2/team/app/manifests/v1"
    with ScriptedServer([Answer(404)]) as server, pytest.raises(BackendError, match="no such tag"):
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
def test_real_registry_missing_tag_is_none_and_stopped_registry_is_an_error(registry_server: object) -> None:
    address = registry_server.address  # type: ignore[attr-defined]
    assert RegistryClient(timeout=5).manifest_digest(f"{address}/nothing/here", "v1") is None
    registry_server.stop()  # type: ignore[attr-defined]
    with pytest.raises(BackendError, match="cannot reach it"):
        RegistryClient(timeout=5).manifest_digest(f"{address}/nothing/here", "v1")

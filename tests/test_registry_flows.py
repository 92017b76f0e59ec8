"""Registries as users have them, through `invoke` on a real engine: credential helpers, identity
tokens, a registry that hangs, Ctrl-C and SIGTERM during a push, `:latest` repair, two cascades at
once, and a 404 that does not come from a registry."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import BASE_IMAGE, RegistryServer, git
from registry_auth import FaultProxy, TokenService, helper_calls, htpasswd_auth, write_credential_helper
from registry_double import Answer, ScriptedServer

from imagecascade.engines.credentials import CredentialResolver
from imagecascade.engines.registry import RegistryClient

REPOSITORY = Path(__file__).resolve().parents[1]
DOCKERFILE = "ARG BASE_IMAGE\nFROM ${{BASE_IMAGE}}\nCOPY {name}.txt /opt/{name}.txt\n"
USER, PASSWORD = "robot", "s3cret-pw"


class Repo:
    """A small image repository on disk whose images go to `registry`, driven through `invoke`."""

    def __init__(self, root: Path, registry: str, env: dict[str, str] | None = None) -> None:
        self.root = root
        self.registry = registry
        self.env = {**os.environ, "CI": "true", "PYTHONUNBUFFERED": "1", "COLUMNS": "250", **(env or {})}

    def image(
        self, name: str, declaration: str, extra: str = "", files: dict[str, bytes] | None = None
    ) -> None:
        folder = self.root / "images" / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "image.toml").write_text(declaration)
        (folder / "Dockerfile").write_text(DOCKERFILE.format(name=name) + extra)
        (folder / f"{name}.txt").write_text(f"{name} {uuid.uuid4().hex}\n")
        for relative, content in (files or {}).items():
            (folder / relative).write_bytes(content)

    def settings(self, text: str = "") -> None:
        (self.root / "cascade.toml").write_text(f'[registry]\nurl = "{self.registry}"\n{text}')

    def command(self, *args: str) -> list[str]:
        binary = Path(sys.executable).parent / "invoke"
        return [str(binary) if binary.exists() else "invoke", "--search-root", str(REPOSITORY), *args]

    def invoke(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(*args), cwd=self.root, capture_output=True, text=True, timeout=timeout, env=self.env
        )

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.command(*args),
            cwd=self.root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
        )

    def plan(self) -> dict[str, dict[str, Any]]:
        done = self.invoke("plan", "--json")
        assert done.returncode == 0, done.stdout + done.stderr
        return {item["name"]: item for item in json.loads(done.stdout)["images"]}


@pytest.fixture
def make_repo(tmp_path: Path, engine: Any, base_image: str) -> Iterator[Any]:
    made: list[Repo] = []

    def make(registry: str, env: dict[str, str] | None = None) -> Repo:
        root = tmp_path / f"repo{len(made)}"
        root.mkdir()
        repo = Repo(root, registry, env)
        repo.settings()
        (root / ".gitignore").write_text(".cache/\n")
        git(root, "init", "-q", "-b", "main")
        made.append(repo)
        return repo

    yield make
    hosts = tuple(f"{repo.registry.split('/')[0]}/" for repo in made if repo.registry)
    for image in engine.client.api.images():  # only this test's images: the engine is shared
        for reference in image.get("RepoTags") or ():
            if hosts and reference.startswith(hosts):
                engine.remove_image(reference, force=True)


def tag_of(repo: Repo, name: str) -> str:
    from imagecascade.core.plan import compute_plan
    from imagecascade.core.settings import load_settings

    return compute_plan(load_settings(repo.root), use_cache=False).get(name).tag


def lines_until(process: subprocess.Popen[str], marker: str, timeout: float = 180) -> list[str]:
    """Read the process's stdout until a line contains `marker`."""
    assert process.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        seen.append(line)
        if marker in line:
            return seen
    process.kill()
    pytest.fail(f"never saw {marker!r}: {''.join(seen)}{process.stderr.read() if process.stderr else ''}")


def digest(registry: str, name: str, tag: str, config: Path | None = None) -> str | None:
    environ = {"DOCKER_CONFIG": str(config or "/nonexistent"), "PATH": os.environ["PATH"]}
    client = RegistryClient(timeout=10, credentials=CredentialResolver(environ, adc_hosts=lambda host: False))
    return client.manifest_digest(f"{registry}/{name}", tag)


# Credentials as `gcloud auth configure-docker`, Docker Desktop and a token registry's login leave them.


@pytest.mark.engine
@pytest.mark.parametrize("how", ["credHelpers", "credsStore", "identitytoken"])
def test_plan_and_cascade_use_the_credentials_docker_would(tmp_path: Path, make_repo: Any, how: str) -> None:
    tokens = TokenService(tmp_path, refresh_tokens={"refresh-me": USER}) if how == "identitytoken" else None
    server = RegistryServer(
        tmp_path, tokens.registry_auth if tokens else htpasswd_auth(tmp_path, {USER: PASSWORD})
    )
    server.start()
    try:
        config = tmp_path / "docker"
        config.mkdir()
        helpers = tmp_path / "helpers"
        write_credential_helper(helpers, "keychain", {server.address: (USER, PASSWORD)})
        document: dict[str, Any] = {
            "credHelpers": {"credHelpers": {server.address: "keychain"}},
            "credsStore": {"credsStore": "keychain", "auths": {server.address: {}}},
            "identitytoken": {"auths": {server.address: {"identitytoken": "refresh-me"}}},
        }[how]
        (config / "config.json").write_text(json.dumps(document))
        env = {"DOCKER_CONFIG": str(config), "PATH": f"{helpers}:{os.environ['PATH']}"}
        repo = make_repo(f"{server.address}/team", env)
        repo.image("app", f'base = "{BASE_IMAGE}"\n')

        anonymous = Repo(repo.root, repo.registry, {"DOCKER_CONFIG": str(tmp_path / "empty")}).invoke("plan")
        assert (
            anonymous.returncode == 3 and anonymous.stderr.count("error: build state unknown for app:") == 1
        )

        assert repo.plan()["app"]["build_state"] == "missing"
        first = repo.invoke("cascade")
        assert first.returncode == 0, first.stdout + first.stderr
        assert "app: built in" in first.stdout
        planned = repo.plan()["app"]
        assert (planned["build_state"], planned["latest"]) == ("present", "current")
        second = repo.invoke("cascade")
        assert second.returncode == 0 and "building" not in second.stdout and "present" in second.stdout
    finally:
        server.stop()
        if tokens is not None:
            tokens.close()
    everything = first.stdout + first.stderr + second.stdout + second.stderr
    assert PASSWORD not in everything and "refresh-me" not in everything
    if tokens is None:
        assert f"get {server.address}" in helper_calls(helpers, "keychain")
    else:  # the engine (pushing) and we (looking up) both exchanged the refresh token by POST
        exchanges = [request for request in tokens.requests if request.method == "POST"]
        assert exchanges and all(request.grant_type == "refresh_token" for request in exchanges)
        assert {request.account for request in exchanges} == {USER}
        assert any("push" in request.scope for request in exchanges)  # the engine's push


# A registry that hangs, and a push stopped by Ctrl-C or SIGTERM.


@pytest.mark.engine
def test_a_registry_that_hangs_during_a_push_is_given_up_after_push_timeout(
    make_repo: Any, registry_server: RegistryServer
) -> None:
    def hang_uploads(method: str, path: str) -> str:
        return "hang" if method in ("PATCH", "PUT") and "/blobs/uploads/" in path else "pass"

    proxy = FaultProxy(registry_server.address, hang_uploads)  # type: ignore[arg-type]
    try:
        repo = make_repo(f"{proxy.address}/team")
        repo.settings("push_timeout = 2\n")
        repo.image("app", f'base = "{BASE_IMAGE}"\n')
        started = time.monotonic()
        done = repo.invoke("cascade", timeout=120)
        elapsed = time.monotonic() - started
    finally:
        proxy.close()
    assert done.returncode == 3, done.stdout + done.stderr
    assert f"registry {proxy.address}: pushing {proxy.address}/team/app:" in done.stderr
    assert "made no progress for 2 s ([registry] push_timeout in cascade.toml)" in done.stderr
    assert "UnixHTTPConnectionPool" not in done.stdout + done.stderr and "Traceback" not in done.stderr
    assert elapsed < 60
    assert any(fault == "hang" for _, _, fault in proxy.seen)
    assert digest(registry_server.address, "team/app", tag_of(repo, "app")) is None


@pytest.mark.engine
@pytest.mark.parametrize(
    "signals",
    [(signal.SIGINT, signal.SIGINT), (signal.SIGTERM,)],
    ids=["ctrl-c-twice", "sigterm"],
)
def test_a_push_stops_within_seconds_and_says_what_was_left(
    make_repo: Any, registry_server: RegistryServer, signals: tuple[signal.Signals, ...]
) -> None:
    def slow_mid(method: str, path: str) -> str:
        return "throttle" if "/mid/blobs/uploads/" in path else "pass"

    proxy = FaultProxy(registry_server.address, slow_mid, rate=100 * 1024)  # type: ignore[arg-type]
    try:
        repo = make_repo(f"{proxy.address}/team")
        repo.image("root", f'base = "{BASE_IMAGE}"\n')
        # 3 MB that gzip cannot shrink: 30 s at the proxy's pace.
        repo.image(
            "mid", 'parent = "root"\n', "COPY big.bin /opt/big.bin\n", {"big.bin": os.urandom(3 << 20)}
        )
        process = repo.start("cascade", "--jobs", "1")
        lines_until(process, "mid: pushing")
        time.sleep(1.0)
        stopped = time.monotonic()
        for number in signals:
            process.send_signal(number)
            time.sleep(0.3)
        out, err = process.communicate(timeout=60)
        elapsed = time.monotonic() - stopped
    finally:
        proxy.close()
    assert process.returncode == 130, out + err
    assert elapsed < 10, elapsed
    assert "nothing was built" not in err and ": built root; stopped: mid, left untagged" in err, err
    assert "mid: push of" in out and "stopped;" in out
    assert "is not in the registry (its manifest was not written)" in out, out
    assert digest(registry_server.address, "team/root", tag_of(repo, "root")) is not None
    assert digest(registry_server.address, "team/mid", tag_of(repo, "mid")) is None


# `:latest` repair.


@pytest.mark.engine
def test_a_failed_latest_push_is_repaired_by_the_next_cascade_without_a_rebuild(
    make_repo: Any, registry_server: RegistryServer
) -> None:
    refuse = {"latest": True}

    def reject_latest(method: str, path: str) -> str:
        return (
            "reject"
            if refuse["latest"] and method == "PUT" and path.endswith("/manifests/latest")
            else "pass"
        )

    proxy = FaultProxy(registry_server.address, reject_latest)  # type: ignore[arg-type]
    try:
        repo = make_repo(f"{proxy.address}/team")
        repo.image("app", f'base = "{BASE_IMAGE}"\n')
        failed = repo.invoke("cascade")
        assert failed.returncode != 0 and "latest" in failed.stdout + failed.stderr
        refuse["latest"] = False
        planned = repo.plan()["app"]
        hashed = digest(registry_server.address, "team/app", planned["tag"])
        assert hashed is not None and digest(registry_server.address, "team/app", "latest") is None
        assert (planned["build_state"], planned["latest"]) == ("present", "elsewhere")
        shown = repo.invoke("plan")
        assert shown.returncode == 0 and ":latest points elsewhere or is missing" in shown.stdout
        preview = repo.invoke("cascade", "--dry-run")
        assert preview.returncode == 0 and "move :latest" in preview.stdout
        repaired = repo.invoke("cascade")
        assert repaired.returncode == 0, repaired.stdout + repaired.stderr
        assert "building" not in repaired.stdout and "moved :latest" in repaired.stdout
        assert digest(registry_server.address, "team/app", "latest") == hashed
        assert repo.plan()["app"]["latest"] == "current"
    finally:
        proxy.close()


@pytest.mark.engine
def test_latest_pointing_elsewhere_in_the_engine_store_is_moved_back(make_repo: Any, engine: Any) -> None:
    repo = make_repo("")
    (repo.root / "cascade.toml").write_text("")
    name = f"t{uuid.uuid4().hex[:12]}"
    repo.image(name, f'base = "{BASE_IMAGE}"\n')
    tag = tag_of(repo, name)
    try:
        assert repo.invoke("cascade").returncode == 0
        engine.tag_image(BASE_IMAGE, f"{name}:latest")  # someone built another tree last
        assert repo.plan()[name]["latest"] == "elsewhere"
        moved = repo.invoke("cascade")
        assert moved.returncode == 0 and "building" not in moved.stdout, moved.stdout
        assert engine.inspect_image(f"{name}:latest").id == engine.inspect_image(f"{name}:{tag}").id
    finally:
        for reference in (f"{name}:latest", f"{name}:{tag}"):
            engine.remove_image(reference, force=True)


# Two cascades at once.


@pytest.mark.engine
def test_a_second_cascade_waits_and_builds_nothing_twice(
    make_repo: Any, registry_server: RegistryServer
) -> None:
    repo = make_repo(f"{registry_server.address}/team")
    repo.image("app", f'base = "{BASE_IMAGE}"\n', "RUN sleep 3\n")
    first = repo.start("cascade")
    lines_until(first, "app: building")
    second = repo.start("cascade")
    out2, err2 = second.communicate(timeout=240)
    out1, err1 = first.communicate(timeout=240)
    assert first.returncode == 0 and second.returncode == 0, err1 + err2
    assert (
        f"another cascade on this repository (pid {first.pid} " in err2 and "waiting for it to finish" in err2
    )
    assert "building" not in out2 and "present" in out2
    assert (out1 + out2).count("app: built in") == 1


# "Missing" only when a registry says so.


def test_a_404_from_something_that_is_not_a_registry_is_an_error_not_missing(tmp_path: Path) -> None:
    web = [Answer(404, {"Content-Type": "text/html"}, b"<h1>Not Found</h1>")]
    with ScriptedServer(web) as server:
        root = tmp_path / "repo"
        repo = Repo(root, f"{server.address}/team", {"DOCKER_CONFIG": str(tmp_path / "none")})
        root.mkdir()
        repo.settings()
        repo.image("app", 'base = "127.0.0.1:5000/base:1"\n')
        repo.image("child", 'parent = "app"\n')
        plan = repo.invoke("plan")
        cascade = repo.invoke("cascade")
    url = f"http://{server.address}/v2/team/app/manifests/"
    assert plan.returncode == 3 and plan.stderr.count("answered 404 without a registry's marks") == 1
    assert url in plan.stderr and "missing" not in plan.stdout
    assert cascade.returncode == 3 and url in cascade.stderr and "building" not in cascade.stdout

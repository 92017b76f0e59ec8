"""Shared fixtures. Two layers:

- unit tests: no engine. An autouse fixture makes `Engine.from_environment` raise in every test
  not marked `engine`, so none reaches the engine by accident;
- engine tests (`@pytest.mark.engine`): a real Docker Engine, real `docker-registry` servers on
  loopback ports and a base image made offline with mmdebstrap. Under `CI=true` a missing engine
  or tool fails them; elsewhere they skip with the reason.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

BASE_IMAGE = "imagecascade-test/base:bookworm"  # local-only name; kept between runs as a cache
MMDEBSTRAP = (
    "set -o pipefail; mmdebstrap --quiet --variant=extract --include=python3,busybox-static "
    "--extract-hook='chroot \"$1\" /bin/busybox --install -s' bookworm - "
    "| docker import -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - {name}"
)


def unavailable(reason: str) -> None:
    """Skip an engine (or torch) test, or fail it under CI=true where everything must be there."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: these tests never skip; run .ci/run's set-up)")
    pytest.skip(reason)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """`-m "not torch"` (nox -s tests) does not even import the modules that need torch."""
    if collection_path.name in TORCH_MODULES and "not torch" in (config.getoption("markexpr") or ""):
        return True
    return None


TORCH_MODULES = ("test_trainer.py",)


def _missing_modules(names: tuple[str, ...]) -> list[str]:
    import importlib.util

    return [name for name in names if importlib.util.find_spec(name) is None]


@pytest.fixture(autouse=True)
def _torch_where_marked(request: pytest.FixtureRequest) -> None:
    """Tests marked `torch` need the trainer extra: skipped without it, failed under CI=true."""
    if request.node.get_closest_marker("torch") is None:
        return
    missing = _missing_modules(("torch", "accelerate"))
    if missing:
        unavailable(
            f"{', '.join(missing)} not installed: pip install -e '.[trainer]' (CPU wheel: add "
            "--extra-index-url https://download.pytorch.org/whl/cpu), or run `nox -s trainer`"
        )


@pytest.fixture(autouse=True)
def _engine_only_where_marked(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if request.node.get_closest_marker("engine") is not None:
        return
    from imagecascade.engines.engine import Engine

    def refuse(cls: type) -> Any:
        raise RuntimeError("a unit test reached for the Docker Engine; mark it @pytest.mark.engine")

    monkeypatch.setattr(Engine, "from_environment", classmethod(refuse))


@pytest.fixture(scope="session")
def engine() -> Iterator[Any]:
    from imagecascade.engines.engine import Engine
    from imagecascade.errors import BackendError

    try:
        connected = Engine.from_environment()
    except BackendError as error:
        unavailable(str(error))
    yield connected
    connected.close()


@pytest.fixture(scope="session")
def base_image(engine: Any) -> str:
    """A python3 + busybox image made without any registry; built once, then reused across runs."""
    if engine.image_exists(BASE_IMAGE):
        return BASE_IMAGE
    for tool in ("mmdebstrap", "busybox"):
        if shutil.which(tool) is None:
            unavailable(f"{tool} is not installed (scripts/provision installs it)")
    done = subprocess.run(
        ["bash", "-c", MMDEBSTRAP.format(name=BASE_IMAGE)], capture_output=True, text=True, timeout=300
    )
    if done.returncode != 0:
        pytest.fail(f"cannot make the base image: {done.stderr[-2000:]}")
    return BASE_IMAGE


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RegistryServer:
    """A `docker-registry serve` on a free loopback port with storage in a temp folder.

    `auth` is the registry's `auth:` section as YAML flow text (htpasswd or token), if any.
    """

    def __init__(self, folder: Path, auth: str = "") -> None:
        self.folder = folder
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None
        config = folder / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log: {level: error, accesslog: {disabled: true}}\n"
            f"storage:\n  filesystem: {{rootdirectory: {folder / 'data'}}}\n  delete: {{enabled: true}}\n"
            f"http: {{addr: {self.address}}}\n" + (f"auth: {auth}\n" if auth else "")
        )
        self.config = config

    def start(self) -> None:
        binary = shutil.which("docker-registry")
        if binary is None:
            unavailable("docker-registry is not installed (scripts/provision installs it)")
            return
        log = open(self.folder / "registry.log", "ab")  # noqa: SIM115 - closed with the process
        self._process = subprocess.Popen([binary, "serve", str(self.config)], stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://{self.address}/v2/", timeout=1):
                    return
            except urllib.error.HTTPError as error:
                if error.code == 401:  # up, and asking for credentials
                    return
                time.sleep(0.05)
            except (urllib.error.URLError, OSError):
                if self._process.poll() is not None:
                    break
                time.sleep(0.05)
        self.stop()
        pytest.fail(
            f"docker-registry did not start on {self.address}: {(self.folder / 'registry.log').read_text()}"
        )

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None


@pytest.fixture
def registry_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """A registry of this test's own, which the test may stop."""
    server = RegistryServer(tmp_path_factory.mktemp("registry"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def shared_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """One registry for the whole session; tests keep apart by using their own repository names."""
    server = RegistryServer(tmp_path_factory.mktemp("shared-registry"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def registry_base(engine: Any, base_image: str, shared_registry: RegistryServer) -> Iterator[str]:
    """The base image pushed once into the shared registry: `127.0.0.1:PORT/base:bookworm`."""
    reference = f"{shared_registry.address}/base:bookworm"
    engine.tag_image(base_image, reference)
    _, error = engine.push_image(reference)
    if error:
        pytest.fail(f"cannot push the base image: {error}")
    yield reference
    engine.remove_image(reference)  # only the tag: the cached base image stays


def push_as(engine: Any, source: str, reference: str) -> str:
    """Tag `source` as `reference`, push it, return the digest the registry now gives its tag."""
    engine.tag_image(source, reference)
    digest, error = engine.push_image(reference)
    if error or not digest:
        pytest.fail(f"cannot push {reference}: {error}")
    return str(digest)


DOCKERFILE = "ARG BASE_IMAGE\nFROM ${{BASE_IMAGE}}\nCOPY {name}.txt /opt/{name}.txt\n"


@dataclasses.dataclass
class CascadeRepo:
    """A temporary image repository: root → mid → leaf on one pinned base, other on another tag.

    Its images live under `registry` (`127.0.0.1:PORT/t-<unique>`), so tests do not collide.
    """

    root: Path
    registry: str
    engine: Any

    def write(self, relative: str, text: str) -> None:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def commit(self) -> None:
        git(self.root, "add", "-A")
        git(self.root, "commit", "-q", "-m", "change")

    def settings(self) -> Any:
        from imagecascade.core.settings import load_settings

        return load_settings(self.root).with_overrides(registry=self.registry)  # a test may move it

    def plan(self) -> Any:
        from imagecascade.core.plan import compute_plan

        return compute_plan(self.settings(), use_cache=False)

    def cascade(self, backend: Any = None, **options: Any) -> Any:
        """Run the cascade through the library; returns the CascadeResult."""
        from imagecascade.core.cascade import run_cascade
        from imagecascade.core.decisions import CascadeOptions
        from imagecascade.engines.local_backend import LocalBackend
        from imagecascade.engines.store import open_store

        plan = self.plan()
        chosen = backend if backend is not None else LocalBackend(self.engine)
        options.setdefault("jobs", 2)
        return run_cascade(plan, open_store(self.registry), chosen, CascadeOptions(**options))

    def invoke(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run `invoke` on this repository as a user would (plain output: not a terminal)."""
        tasks_root = Path(__file__).resolve().parent.parent
        binary = Path(sys.executable).parent / "invoke"
        command = [str(binary) if binary.exists() else "invoke", "--search-root", str(tasks_root), *args]
        environment = {**os.environ, "CI": "true", **(env or {})}
        return subprocess.run(
            command, cwd=self.root, capture_output=True, text=True, timeout=300, env=environment
        )

    def local_references(self, namespace: str | None = None) -> list[str]:
        prefix = (namespace or self.registry) + "/"
        references = []
        # The raw listing: images.list() inspects every image on the engine, and another test run
        # may remove one of its own meanwhile.
        for summary in self.engine.client.api.images():
            references += [tag for tag in summary.get("RepoTags") or () if tag.startswith(prefix)]
        return references

    def built_references(self) -> list[str]:
        """Local references of the repository's own images (not the upstream bases)."""
        return [ref for ref in self.local_references() if not ref.startswith(f"{self.registry}/upstream:")]


def git(root: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.email=test@example.invalid", "-c", "user.name=test", *args],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


@pytest.fixture
def cascade_repo(
    tmp_path: Path, engine: Any, base_image: str, shared_registry: RegistryServer, registry_base: str
) -> Iterator[CascadeRepo]:
    namespace = f"{shared_registry.address}/t-{uuid.uuid4().hex[:10]}"
    bookworm = push_as(engine, registry_base, f"{namespace}/upstream:bookworm")
    stable = push_as(engine, registry_base, f"{namespace}/upstream:stable")
    root = tmp_path / "repo"
    repo = CascadeRepo(root=root, registry=namespace, engine=engine)
    repo.write("cascade.toml", f'[registry]\nurl = "{namespace}"\n\n[build]\njobs = 2\n')
    repo.write(".gitignore", ".cache/\n")
    declarations = {
        "root": f'description = "the root of the chain"\nbase = "{namespace}/upstream:bookworm@{bookworm}"\n',
        "mid": 'description = "the middle of the chain"\nparent = "root"\n',
        "leaf": 'description = "the leaf of the chain"\nparent = "mid"\n',
        "other": f'description = "an independent lineage"\nbase = "{namespace}/upstream:stable@{stable}"\n',
    }
    for name, declaration in declarations.items():
        repo.write(f"images/{name}/image.toml", declaration)
        repo.write(f"images/{name}/Dockerfile", DOCKERFILE.format(name=name))
        repo.write(f"images/{name}/{name}.txt", f"{name} 1\n")
    git(root, "init", "-q", "-b", "main")
    repo.commit()
    yield repo
    for reference in repo.local_references(namespace):  # the test may have pointed it elsewhere
        engine.remove_image(reference, force=True)


@pytest.fixture
def unique_name() -> str:
    return f"imagecascade-test-{uuid.uuid4().hex[:10]}"

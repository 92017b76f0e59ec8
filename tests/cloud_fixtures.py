"""Fixtures and helpers for tests of the Cloud Build backend against local servers.

Cloud Storage is gcp-storage-emulator behind tests/fake_storage.py's front (ownership,
preconditions, faults); Cloud Build is tests/fake_cloudbuild.py. Both listen on 127.0.0.1 and are
reached through gcloud's override conventions, so the backend runs unpatched. Import the
fixtures a test module uses: `from tests.cloud_fixtures import repo, fake, environ, ...`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gcp_storage_emulator.server import create_server

from imagecascade.cloud import cloudbuild_config
from imagecascade.cloud.cloudbuild import CloudBuildBackend
from imagecascade.cloud.retry import Timing
from imagecascade.core.backend import BuildEvent, BuildRequest
from imagecascade.core.build_options import CloudBuildFlags
from imagecascade.core.plan import PlannedImage, compute_plan, image_reference
from imagecascade.core.settings import load_settings
from tests.fake_cloudbuild import FakeCloudBuild
from tests.fake_storage import StorageFront
from tests.image_repo import write_image

PROJECT = "fake-project"
REGISTRY = "127.0.0.1:5999/arr"  # only named in substitutions: nothing ever connects to it
BASE = "127.0.0.1:5999/base@sha256:" + "b" * 64
FAST = Timing(
    poll_initial=0.01,
    poll_max=0.02,
    retry_initial=0.01,
    retry_max=0.02,
    transient_limit=5.0,
    upload_chunk_bytes=256 * 1024,
)
LABELS = ("org.opencontainers.image.title", "imagecascade.hash")
# The labels the cascade itself sets (imagecascade.core.build_request.build_request).
CASCADE_LABELS = (
    *(f"org.opencontainers.image.{key}" for key in ("revision", "created", "source", "title", "description")),
    "io.imagecascade.freshness-hash",
    "io.imagecascade.parent-hash",
)


def config_text(name: str, build_args: list[str], labels: tuple[str, ...] = LABELS, **extra: Any) -> str:
    """A config shaped like the committed ones, for the test repository's images."""
    args = ["build", "--file=Dockerfile", "--network=cloudbuild", "--build-arg=BASE_IMAGE=${_BASE_IMAGE}"]
    args += [f"--build-arg={arg}=${{_{arg}}}" for arg in build_args]
    args += [f"--label={key}=${{{cloudbuild_config.label_substitution(key)}}}" for key in labels]
    args += [f"--tag=${{_REGISTRY}}/{name}:${{_TAG}}", f"--tag=${{_REGISTRY}}/{name}:latest", "."]
    document = {
        "steps": [{"id": "build", "name": "gcr.io/cloud-builders/docker", "args": args}],
        "images": [f"${{_REGISTRY}}/{name}:${{_TAG}}", f"${{_REGISTRY}}/{name}:latest"],
        "tags": ["imagecascade", name, "hash-${_TAG}"],
        **extra,
    }
    return json.dumps(document, indent=2)  # JSON is YAML


def make_repo(root: Path, *, app_cloudbuild: str | None = None) -> Path:
    """app (base image, build arg, [cloudbuild] options) -> child; configs for both."""
    (root / "cloudbuild").mkdir(parents=True)
    (root / "cascade.toml").write_text(
        f'[cloudbuild]\nproject = "{PROJECT}"\n[registry]\nurl = "{REGISTRY}"\n'
    )
    options = (
        app_cloudbuild
        if app_cloudbuild is not None
        else 'machine_type = "E2_HIGHCPU_32"\ndisk_size_gb = 200\ntimeout_minutes = 180\n'
    )
    write_image(
        root,
        "app",
        f'base = "{BASE}"\n[build_args]\nMAX_JOBS = "4"\n[cloudbuild]\n{options}',
        {
            "app.py": "print('app')\n",
            "data/table.csv": "a,b\n",
            "notes.tmp": "ignored",
            ".dockerignore": "*.tmp\n",
        },
    )
    write_image(root, "child", 'parent = "app"\n', {"child.txt": "child"})
    (root / "cloudbuild" / "app.yaml").write_text(config_text("app", ["MAX_JOBS"]))
    (root / "cloudbuild" / "child.yaml").write_text(config_text("child", []))
    return root


def use_cascade_labels(root: Path) -> None:
    """Configs that take the labels a real cascade run sets, for runs through run_cascade or invoke."""
    (root / "cloudbuild" / "app.yaml").write_text(config_text("app", ["MAX_JOBS"], CASCADE_LABELS))
    (root / "cloudbuild" / "child.yaml").write_text(config_text("child", [], CASCADE_LABELS))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo")


@pytest.fixture(scope="module")
def storage_server() -> Iterator[Any]:
    server = create_server("127.0.0.1", 0, in_memory=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def emulator_url(storage_server: Any) -> str:
    storage_server.wipe()
    # The emulator binds port 0 inside its thread; its HTTPServer knows the real port.
    return f"http://127.0.0.1:{storage_server._api._httpd.server_address[1]}"


@pytest.fixture
def storage(emulator_url: str) -> Iterator[StorageFront]:
    with StorageFront(emulator_url) as front:
        yield front


@pytest.fixture
def fake(emulator_url: str) -> Iterator[FakeCloudBuild]:
    with FakeCloudBuild(emulator_url) as server:
        yield server


@pytest.fixture
def environ(fake: FakeCloudBuild, storage: StorageFront) -> dict[str, str]:
    return {
        "CLOUDSDK_API_ENDPOINT_OVERRIDES_CLOUDBUILD": fake.url + "/",
        "STORAGE_EMULATOR_HOST": storage.url,
    }


def planned(root: Path, name: str) -> PlannedImage:
    return compute_plan(load_settings(root), use_cache=False).get(name)


def request_for(root: Path, name: str, registry: str = REGISTRY) -> BuildRequest:
    image = planned(root, name)
    if image.spec.parent:
        base = image_reference(image.spec.parent, planned(root, image.spec.parent).tag, registry)
    else:
        base = BASE
    return BuildRequest(
        image=image,
        base_reference=base,
        build_args={**image.spec.build_args, "BASE_IMAGE": base},
        labels={"org.opencontainers.image.title": name, "imagecascade.hash": image.hash},
        references=(image_reference(name, image.tag, registry), image_reference(name, "latest", registry)),
        registry=registry,
    )


class Recorder:
    def __init__(self) -> None:
        self.events: list[BuildEvent] = []
        self._lock = threading.Lock()

    def __call__(self, event: BuildEvent) -> None:
        with self._lock:
            self.events.append(event)

    def messages(self, kind: str) -> list[str]:
        return [event.message for event in self.events if event.kind == kind]


def backend(repo: Path, environ: dict[str, str], timing: Timing = FAST, **flags: Any) -> CloudBuildBackend:
    return CloudBuildBackend(load_settings(repo), CloudBuildFlags(**flags), environ=environ, timing=timing)

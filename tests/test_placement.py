"""Placement: an image with `[cloudbuild] required = true` is built on Cloud Build, the rest where you are.

The scheduler is not told: the local backend run gets a PlacedBackend that routes each image.
Unit tests route between a recording local backend and the fake Cloud Build; the engine test
runs a mixed cascade through `invoke cascade`: the heavy image is submitted (and really built
from its uploaded source by the fake's docker executor, then pushed), the others are built on
the local engine, the child pulling its parent from the registry.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from imagecascade.cloud.cloudbuild import CloudBuildBackend
from imagecascade.cloud.placement import PlacedBackend
from imagecascade.core.backend import BuildOutcome, BuildRequest
from imagecascade.core.cascade import run_cascade
from imagecascade.core.decisions import CascadeOptions
from imagecascade.core.placement import placement_refusals
from imagecascade.core.plan import compute_plan
from imagecascade.core.settings import load_settings
from tests.cloud_fixtures import (
    CASCADE_LABELS,
    FAST,
    PROJECT,
    REGISTRY,
    Recorder,
    config_text,
    emulator_url,
    environ,
    fake,
    make_repo,
    storage,
    storage_server,
    use_cascade_labels,
)
from tests.fake_cloudbuild import FakeCloudBuild, Phase, docker_executor
from tests.fake_storage import StorageFront
from tests.image_repo import write_image

__all__ = ["emulator_url", "environ", "fake", "storage", "storage_server"]  # fixtures
REPOSITORY = Path(__file__).resolve().parents[1]


class RecordingLocal:
    """Stands in for the local engine backend: records what it was asked to build."""

    name = "local"

    def __init__(self) -> None:
        self.built: list[str] = []
        self._lock = threading.Lock()

    def build(self, request: BuildRequest, on_event: Any, cancelled: threading.Event) -> BuildOutcome:
        with self._lock:
            self.built.append(request.image.name)
        return BuildOutcome(digest="sha256:" + "0" * 64)


class Missing:
    description = "the registry"

    def has(self, name: str, tag: str) -> bool:
        return False


def placed_repo(root: Path, cascade_toml: str | None = None) -> Path:
    """app (required on Cloud Build) -> child, and an independent image `other`."""
    make_repo(root, app_cloudbuild='required = true\nmachine_type = "E2_HIGHCPU_32"\n')
    write_image(root, "other", 'base = "127.0.0.1:5999/base:1"\n', {"other.txt": "other"})
    use_cascade_labels(root)
    if cascade_toml is not None:
        (root / "cascade.toml").write_text(cascade_toml)
    return root


def test_the_required_image_goes_to_cloud_build_and_the_rest_to_the_local_backend(
    tmp_path: Path, fake: FakeCloudBuild, environ: dict[str, str]
) -> None:
    root = placed_repo(tmp_path / "repo")
    settings = load_settings(root)
    local = RecordingLocal()
    placed = PlacedBackend(settings, local, lambda: CloudBuildBackend(settings, environ=environ, timing=FAST))
    events = Recorder()

    result = run_cascade(
        compute_plan(settings, use_cache=False), Missing(), placed, CascadeOptions(jobs=2), events
    )

    assert result.ok, result.results
    assert [build.resolved["tags"][1] for build in fake.created] == ["app"]
    assert sorted(local.built) == ["child", "other"]
    assert "on Cloud Build ([cloudbuild] required = true)" in [
        e.message for e in events.events if e.image == "app"
    ]


@pytest.mark.parametrize(
    ("cascade_toml", "missing", "fix"),
    [
        (f'[registry]\nurl = "{REGISTRY}"\n', "no Cloud Build project is set", "[cloudbuild] project"),
        (f'[cloudbuild]\nproject = "{PROJECT}"\n', "no registry is set", "[registry] url"),
        (
            "",
            "no registry and no Cloud Build project is set",
            "[registry] url in cascade.toml or --registry and",
        ),
    ],
)
def test_without_a_registry_or_project_the_required_image_is_refused_up_front_and_the_rest_is_built(
    tmp_path: Path, cascade_toml: str, missing: str, fix: str
) -> None:
    root = placed_repo(tmp_path / "repo", cascade_toml)
    settings = load_settings(root)
    plan = compute_plan(settings, use_cache=False)
    plan = plan.with_refusals(placement_refusals(plan, "local"))
    local = RecordingLocal()

    def no_cloud() -> Any:
        raise AssertionError("nothing may be sent to Cloud Build")

    result = run_cascade(plan, Missing(), PlacedBackend(settings, local, no_cloud), CascadeOptions())

    assert result.outcome_of("app") == "refused" and result.outcome_of("child") == "blocked"
    assert result.outcome_of("other") == "built" and local.built == ["other"]
    (refused,) = [item for item in result.results if item.name == "app"]
    assert refused.reason == (
        f"cannot build: it must be built on Cloud Build ([cloudbuild] required = true) but {missing}"
    )
    assert fix in refused.fixes[0]
    assert result.verdict()[0] == 2  # only refusals: exit 2, everything else was built


def test_a_placed_backend_asked_to_build_a_refused_image_refuses_it_too(tmp_path: Path) -> None:
    root = placed_repo(tmp_path / "repo", "")
    settings = load_settings(root)
    local = RecordingLocal()

    def no_cloud() -> Any:
        raise AssertionError("nothing may be sent to Cloud Build")

    result = run_cascade(
        compute_plan(settings, use_cache=False),
        Missing(),
        PlacedBackend(settings, local, no_cloud),
        CascadeOptions(),
    )
    assert result.outcome_of("app") == "failed" and result.outcome_of("other") == "built"
    assert "app: cannot build: it must be built on Cloud Build" in str(result.results[0].reason)


def test_missing_credentials_for_cloud_build_fail_only_the_required_image(tmp_path: Path) -> None:
    from imagecascade.errors import ConfigError

    root = placed_repo(tmp_path / "repo")
    settings = load_settings(root)
    local = RecordingLocal()

    def no_credentials() -> Any:
        raise ConfigError(
            "Google Cloud: no Application Default Credentials (none found); run `gcloud auth ...`"
        )

    result = run_cascade(
        compute_plan(settings, use_cache=False),
        Missing(),
        PlacedBackend(settings, local, no_credentials),
        CascadeOptions(),
    )
    assert result.outcome_of("app") == "failed" and result.outcome_of("other") == "built"
    reason = next(item.reason for item in result.results if item.name == "app")
    assert "cannot build on Cloud Build: Google Cloud: no Application Default Credentials" in reason


def invoke(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "invoke", "--search-root", str(REPOSITORY), *args],
        cwd=root,
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"], "HOME": str(root), "COLUMNS": "250", "CI": "true"},
        timeout=120,
    )


def test_plan_shows_where_each_missing_image_would_be_built(tmp_path: Path) -> None:
    root = placed_repo(tmp_path / "repo", f'[registry]\nurl = "{REGISTRY}"\n')

    refused = json.loads(invoke(root, "plan", "--json", "--offline").stdout)
    by_name = {item["name"]: item for item in refused["images"]}
    assert {name: item["builds_on"] for name, item in by_name.items()} == {
        "app": "cloudbuild",
        "child": "local",
        "other": "local",
    }
    assert by_name["app"]["cannot_build"] == [
        {
            "reason": "it must be built on Cloud Build ([cloudbuild] required = true) "
            "but no Cloud Build project is set",
            "fix": "set [cloudbuild] project in cascade.toml or --project",
        }
    ]
    assert by_name["child"]["cannot_build"] == [] and by_name["other"]["cannot_build"] == []

    configured = json.loads(invoke(root, "plan", "--json", "--offline", "--project", PROJECT).stdout)
    assert all(item["cannot_build"] == [] for item in configured["images"])
    everything = json.loads(invoke(root, "plan", "--json", "--offline", "--backend", "cloudbuild").stdout)
    assert {item["builds_on"] for item in everything["images"]} == {"cloudbuild"}

    table = invoke(root, "plan", "--offline").stdout  # CI=true: plain, unwrapped
    (app_row,) = [line for line in table.splitlines() if line.startswith("│ app ")]
    assert "cannot build: it must be built on Cloud Build ([cloudbuild] required = true)" in app_row
    assert "│ Cloud Build " in app_row
    table = invoke(root, "plan", "--offline", "--project", PROJECT).stdout
    assert "│ Cloud Build " in table and "│ local engine " in table and "cannot build" not in table


@pytest.mark.engine
def test_a_mixed_cascade_builds_the_heavy_image_on_cloud_build_and_the_rest_locally_from_the_registry(
    cascade_repo: Any, fake: FakeCloudBuild, storage: StorageFront
) -> None:
    """The proof case: root (required) is submitted and pushed; mid, leaf and other are local builds."""
    from imagecascade.engines.registry import RegistryClient

    repo = cascade_repo
    declaration = (repo.root / "images/root/image.toml").read_text()
    repo.write(
        "images/root/image.toml",
        declaration + '\n[cloudbuild]\nrequired = true\nmachine_type = "E2_HIGHCPU_32"\n',
    )
    repo.write("cloudbuild/root.yaml", config_text("root", [], CASCADE_LABELS))
    repo.commit()
    fake.executor = docker_executor()
    fake.script = [Phase("QUEUED"), Phase("WORKING", log="Step 1/3 : ARG BASE_IMAGE\n"), Phase("SUCCESS")]
    env = {"CLOUDSDK_API_ENDPOINT_OVERRIDES_CLOUDBUILD": fake.url, "STORAGE_EMULATOR_HOST": storage.url}

    planned = json.loads(repo.invoke("plan", "--json", "--project", PROJECT, env=env).stdout)
    assert {item["name"]: (item["build_state"], item["builds_on"]) for item in planned["images"]} == {
        "root": ("missing", "cloudbuild"),
        "mid": ("missing", "local"),
        "leaf": ("missing", "local"),
        "other": ("missing", "local"),
    }
    done = repo.invoke("cascade", "--project", PROJECT, env=env)

    assert done.returncode == 0, done.stdout + done.stderr
    (submitted,) = fake.created
    assert submitted.resolved["tags"][1] == "root" and fake.cancelled == []
    assert submitted.body["options"]["machineType"] == "E2_HIGHCPU_32"
    assert set(submitted.source_files) == {"Dockerfile", "root.txt"}  # what Cloud Build fetched
    plan = repo.plan()
    root, mid = plan.get("root"), plan.get("mid")
    client = RegistryClient()
    pushed = client.manifest_digest(f"{repo.registry}/root", root.tag)
    assert pushed == submitted.digests[f"{repo.registry}/root:{root.tag}"]
    for image in plan.images:  # everything is in the registry now
        assert client.manifest_digest(f"{repo.registry}/{image.name}", image.tag), image.name
    # mid was built by the local engine FROM the root that Cloud Build pushed, pulled from the registry.
    built_mid = repo.engine.inspect_image(f"{repo.registry}/mid:{mid.tag}")
    assert built_mid is not None and built_mid.labels["io.imagecascade.parent-hash"] == root.hash
    pulled_root = repo.engine.inspect_image(f"{repo.registry}/root:{root.tag}")
    assert pulled_root is not None and pulled_root.labels["io.imagecascade.freshness-hash"] == root.hash
    assert "on Cloud Build ([cloudbuild] required = true)" in done.stdout

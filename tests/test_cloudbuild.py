"""The Cloud Build backend against local servers that speak the real HTTP APIs.

Cloud Storage is gcp-storage-emulator behind tests/fake_storage.py; Cloud Build is
tests/fake_cloudbuild.py. Both listen on 127.0.0.1 and are reached through gcloud's override
conventions, so the backend runs unpatched. Transient faults have their own module,
test_cloudbuild_faults.py.
"""

from __future__ import annotations

import base64
import dataclasses
import gzip
import http.server
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from imagecascade.cloud import cloudbuild_config
from imagecascade.cloud.cloudbuild import CloudBuildBackend
from imagecascade.cloud.cloudbuild_api import source_object_name
from imagecascade.cloud.registry_store import cloudbuild_store
from imagecascade.core.backend import BuildError, BuildEvent, BuildRequest
from imagecascade.core.build_request import Provenance, build_request
from imagecascade.core.plan import compute_plan
from imagecascade.core.secrets import parse_secret_flags
from imagecascade.core.settings import load_settings
from imagecascade.errors import BackendError, ConfigError
from tests.cloud_fixtures import (
    BASE,
    FAST,
    PROJECT,
    REGISTRY,
    Recorder,
    backend,
    config_text,
    emulator_url,
    environ,
    fake,
    planned,
    repo,
    request_for,
    storage,
    storage_server,
    use_cascade_labels,
)
from tests.fake_cloudbuild import FakeCloudBuild, Phase
from tests.fake_storage import StorageFront
from tests.image_repo import INPUT_DOCKERFILE, write_image

__all__ = ["emulator_url", "environ", "fake", "repo", "storage", "storage_server"]  # fixtures
REPO = Path(__file__).resolve().parents[1]


def test_success_submits_the_yaml_with_substitutions_and_records_the_digest(
    repo: Path, fake: FakeCloudBuild, environ: dict[str, str], storage: StorageFront
) -> None:
    fake.script = [
        Phase("QUEUED", polls=2),
        Phase("WORKING", polls=2, log="Step 1/3 : ARG BASE_IMAGE\n"),
        Phase("WORKING", log="Step 2/3 : FROM x\nSuccessfully built 123\n"),
        Phase("SUCCESS", log="PUSH\nDONE"),
    ]
    request = request_for(repo, "app")
    image = request.image
    events = Recorder()

    outcome = backend(repo, environ).build(request, events, threading.Event())

    (build,) = fake.created
    tag_ref = f"{REGISTRY}/app:{image.tag}"
    assert outcome.digest == build.digests[tag_ref]
    assert outcome.log_tail[-2:] == ("PUSH", "DONE")
    # What was submitted is the committed YAML with exactly these substitutions applied.
    config = cloudbuild_config.load_config(repo / "cloudbuild" / "app.yaml")
    substitutions = build.body["substitutions"]
    assert substitutions == {
        "_TAG": image.tag,
        "_REGISTRY": REGISTRY,
        "_BASE_IMAGE": BASE,
        "_MAX_JOBS": "4",
        "_OCI_TITLE": "app",
        "_LABEL_IMAGECASCADE_HASH": image.hash,
    }
    expected = cloudbuild_config.apply_substitutions(config, substitutions)
    assert build.resolved["images"] == expected["images"] == [tag_ref, f"{REGISTRY}/app:latest"]
    assert build.resolved["tags"][:3] == ["imagecascade", "app", f"hash-{image.tag}"]
    assert [step["args"] for step in build.resolved["steps"]] == [step["args"] for step in expected["steps"]]
    assert f"--build-arg=BASE_IMAGE={BASE}" in build.resolved["steps"][0]["args"]
    assert f"--label=imagecascade.hash={image.hash}" in build.resolved["steps"][0]["args"]
    # Per-image options from image.toml.
    assert build.body["timeout"] == f"{180 * 60}s"
    assert build.body["options"] == {"machineType": "E2_HIGHCPU_32", "diskSizeGb": "200"}
    # The source is exactly the hashed files, gzipped, in the default bucket, pinned to its generation;
    # what Cloud Build fetched is what was hashed.
    source = build.body["source"]["storageSource"]
    meta = storage.object_meta(f"{PROJECT}_cloudbuild", source_object_name("app", image.hash))
    assert meta is not None
    assert source == {
        "bucket": f"{PROJECT}_cloudbuild",
        "object": source_object_name("app", image.hash),
        "generation": meta["generation"],
    }
    assert set(build.source_files) == {entry.path for entry in image.inputs.files if entry.kind == "file"}
    assert "notes.tmp" not in build.source_files and build.source_files["data/table.csv"] == b"a,b\n"
    # The bucket was created in the project, since gcloud's default name was free.
    assert storage.created[f"{PROJECT}_cloudbuild"]["project"] == PROJECT
    # Live state, where the timeout came from, the build's log URL and the log as events.
    states = events.messages("state")
    assert states[0] == "timeout 3:00:00 from images/app/image.toml [cloudbuild] timeout_minutes"
    assert states[1] == f"source gs://{PROJECT}_cloudbuild/{source['object']}#{meta['generation']} uploaded"
    assert states[2].startswith(f"submitted Cloud Build {build.id}: https://console.cloud.google.com/")
    assert [message.split(" ")[0] for message in states[3:]] == ["QUEUED", "WORKING", "SUCCESS"]
    assert [(event.step, event.steps) for event in events.events if event.kind == "step"] == [(1, 1)]
    lines = ["Step 1/3 : ARG BASE_IMAGE", "Step 2/3 : FROM x", "Successfully built 123", "PUSH", "DONE"]
    assert events.messages("log") == lines
    assert f"{tag_ref}@{outcome.digest}" in events.messages("pushed")


@pytest.mark.parametrize("status", ["FAILURE", "TIMEOUT", "CANCELLED", "INTERNAL_ERROR", "EXPIRED"])
def test_each_failed_status_raises_with_the_log_tail_and_the_failure_detail(
    repo: Path, fake: FakeCloudBuild, environ: dict[str, str], status: str
) -> None:
    log = "".join(f"line {number}\n" for number in range(50))
    fake.script = [
        Phase("WORKING", log=log),
        Phase(status, detail="Build step failure", failure="step 0 exited 1", log="ERROR: boom\n"),
    ]

    with pytest.raises(BuildError) as raised:
        backend(repo, environ).build(request_for(repo, "app"), Recorder(), threading.Event())

    message = str(raised.value)
    assert (
        f"ended {status}: step 0 exited 1; Build step failure (log: https://console.cloud.google.com/"
        in message
    )
    assert len(raised.value.log_tail) == FAST.log_tail_lines
    assert raised.value.log_tail[-2:] == ("line 49", "ERROR: boom")


def test_status_unknown_keeps_polling_and_warnings_are_shown(
    repo: Path, fake: FakeCloudBuild, environ: dict[str, str]
) -> None:
    fake.script = [
        Phase("QUEUED"),
        Phase("STATUS_UNKNOWN", polls=3),
        Phase("WORKING", warnings=("the builder image is deprecated",)),
        Phase("SUCCESS", warnings=("the builder image is deprecated",)),
    ]
    events = Recorder()

    outcome = backend(repo, environ).build(request_for(repo, "app"), events, threading.Event())

    assert outcome.digest
    states = events.messages("state")
    assert [state.split(" ")[0] for state in states if state.split(" ")[0].isupper()] == [
        "QUEUED",
        "STATUS_UNKNOWN",
        "WORKING",
        "SUCCESS",
    ]
    assert states.count("Cloud Build warning: the builder image is deprecated") == 1


def test_queued_timeout_counts_from_create_time_and_sets_queue_ttl(
    repo: Path, fake: FakeCloudBuild, environ: dict[str, str]
) -> None:
    fake.script = [Phase("QUEUED", polls=0)]
    started = time.monotonic()

    with pytest.raises(BuildError, match=r"waited in QUEUED for \d+ s, more than --queued-timeout 1 s"):
        backend(repo, environ, queued_timeout=1.0).build(
            request_for(repo, "app"), Recorder(), threading.Event()
        )

    assert 1 <= time.monotonic() - started < 10
    (build,) = fake.created
    assert build.body["queueTtl"] == "1s"
    assert build.status in ("CANCELLED", "EXPIRED")


def test_queued_timeout_leaves_a_build_this_run_did_not_submit_alone(
    repo: Path, fake: FakeCloudBuild, environ: dict[str, str]
) -> None:
    request = request_for(repo, "app")
    tags = ["imagecascade", "app", f"hash-{request.image.tag}", _registry_tag(REGISTRY)]
    ongoing = fake.add_build(
        project=PROJECT,
        tags=tags,
        images=list(request.references),
        phases=[Phase("QUEUED", polls=40), Phase("SUCCESS")],
    )
    events = Recorder()

    outcome = backend(repo, environ, queued_timeout=0.01).build(request, events, threading.Event())

    assert outcome.digest == ongoing.digests[request.references[0]]
    assert fake.cancelled == [] and fake.created == []
    assert "queued beyond --queued-timeout, but not submitted by this run: left alone" in events.messages(
        "state"
    )


def _registry_tag(registry: str) -> str:
    from imagecascade.cloud.submission import registry_tag

    return registry_tag(registry)


def test_an_ongoing_build_of_the_same_hash_registry_and_region_is_followed_not_resubmitted(
    repo: Path, fake: FakeCloudBuild, environ: dict[str, str], storage: StorageFront
) -> None:
    request = request_for(repo, "app")
    tag = request.image.tag
    same = ["imagecascade", "app", f"hash-{tag}", _registry_tag(REGISTRY)]
    other_image = fake.add_build(
        project=PROJECT, tags=["imagecascade", "child", f"hash-{tag}"], images=[], phases=[Phase("WORKING")]
    )
    other_region = fake.add_build(
        project=PROJECT,
        tags=same,
        images=list(request.references),
        phases=[Phase("WORKING")],
        location="us-east1",
    )
    ongoing = fake.add_build(
        project=PROJECT,
        tags=same,
        images=list(request.references),
        phases=[Phase("WORKING", log="already running\n"), Phase("SUCCESS")],
    )
    events = Recorder()

    outcome = backend(repo, environ).build(request, events, threading.Event())

    assert fake.created == []
    assert outcome.digest == ongoing.digests[request.references[0]]
    assert events.messages("state")[1].startswith(f"following the ongoing Cloud Build {ongoing.id}: https://")
    assert other_image.id not in str(events.events) and other_region.id not in str(events.events)
    assert storage.created == {}  # nothing was uploaded either


def test_an_ongoing_build_pushing_to_another_registry_is_not_followed(
    repo: Path, fake: FakeCloudBuild, environ: dict[str, str]
) -> None:
    """Another user's build of the same image and hash, to their registry, is not this build."""
    request = request_for(repo, "app")
    elsewhere = request_for(repo, "app", registry="127.0.0.1:5998/theirs")
    theirs = fake.add_build(
        project=PROJECT,
        tags=["imagecascade", "app", f"hash-{request.image.tag}", _registry_tag(elsewhere.registry)],
        images=list(elsewhere.references),
        phases=[Phase("WORKING", polls=0)],
    )
    untagged = fake.add_build(  # same hash, submitted before registry tags existed: not followed either
        project=PROJECT,
        tags=["imagecascade", "app", f"hash-{request.image.tag}"],
        images=list(elsewhere.references),
        phases=[Phase("WORKING", polls=0)],
    )

    outcome = backend(repo, environ).build(request, Recorder(), threading.Event())

    (created,) = fake.created
    assert created.id not in (theirs.id, untagged.id)
    assert outcome.digest == created.digests[request.references[0]]


def test_an_existing_upload_is_checked_and_reused(
    repo: Path, fake: FakeCloudBuild, environ: dict[str, str], storage: StorageFront
) -> None:
    cloud = backend(repo, environ)
    request = request_for(repo, "app")
    events = Recorder()
    cloud.build(request, events, threading.Event())
    bucket, name = f"{PROJECT}_cloudbuild", source_object_name("app", request.image.hash)
    first = storage.object_meta(bucket, name)
    assert first is not None

    cloud.build(request, events, threading.Event())

    sources = [message for message in events.messages("state") if message.startswith("source ")]
    assert sources[0].endswith(" uploaded")
    assert sources[1].endswith(f"#{first['generation']} already uploaded")
    again = storage.object_meta(bucket, name)
    assert again is not None and again["generation"] == first["generation"]
    assert [b.body["source"]["storageSource"]["generation"] for b in fake.created] == [
        first["generation"]
    ] * 2


def test_a_damaged_upload_under_the_hash_name_is_replaced_not_trusted(
    repo: Path, fake: FakeCloudBuild, environ: dict[str, str], storage: StorageFront
) -> None:
    request = request_for(repo, "app")
    bucket, name = f"{PROJECT}_cloudbuild", source_object_name("app", request.image.hash)
    storage.own(bucket, PROJECT)
    storage.write(bucket, name, b"not the tarball")
    damaged = storage.object_meta(bucket, name)
    assert damaged is not None
    events = Recorder()

    backend(repo, environ).build(request, events, threading.Event())

    replaced = storage.object_meta(bucket, name)
    assert replaced is not None and replaced["generation"] != damaged["generation"]
    (source,) = [message for message in events.messages("state") if message.startswith("source ")]
    assert source.endswith(f"#{replaced['generation']} replaced")
    (build,) = fake.created
    assert build.body["source"]["storageSource"]["generation"] == replaced["generation"]
    assert "app.py" in build.source_files


def test_cancellation_cancels_the_remote_build_it_started(
    repo: Path, fake: FakeCloudBuild, environ: dict[str, str]
) -> None:
    fake.script = [Phase("WORKING", polls=0)]
    cancelled = threading.Event()

    def on_event(event: BuildEvent) -> None:
        if event.kind == "state" and event.message.startswith("WORKING"):
            cancelled.set()  # Ctrl-C while the build runs

    with pytest.raises(BuildError, match="cancelled"):
        backend(repo, environ).build(request_for(repo, "app"), on_event, cancelled)

    assert fake.cancelled == [fake.created[0].id]
    assert fake.builds[fake.created[0].id].status == "CANCELLED"


def test_cancellation_leaves_a_followed_build_of_someone_else_running(
    repo: Path, fake: FakeCloudBuild, environ: dict[str, str]
) -> None:
    request = request_for(repo, "app")
    fake.add_build(
        project=PROJECT,
        tags=["imagecascade", "app", f"hash-{request.image.tag}", _registry_tag(REGISTRY)],
        images=list(request.references),
        phases=[Phase("WORKING", polls=0)],
    )
    cancelled = threading.Event()
    cancelled.set()

    with pytest.raises(BuildError, match="left running"):
        backend(repo, environ).build(request, Recorder(), cancelled)
    assert fake.cancelled == []


def test_regional_builds_and_a_worker_pool_from_flags(
    repo: Path, fake: FakeCloudBuild, environ: dict[str, str]
) -> None:
    pool = f"projects/{PROJECT}/locations/europe-west4/workerPools/big"
    events = Recorder()

    backend(repo, environ, worker_pool=pool, machine_type="E2_HIGHCPU_8", timeout_minutes=30).build(
        request_for(repo, "child"), events, threading.Event()
    )

    (build,) = fake.created
    assert build.location == "europe-west4"
    assert build.body["options"] == {"pool": {"name": pool}}  # the pool fixes machine type and disk
    assert build.body["timeout"] == "1800s"
    states = events.messages("state")
    assert "timeout 0:30:00 from --timeout" in states
    assert (
        f"machine type E2_HIGHCPU_8 (--machine-type) ignored: the private pool {pool} decides the machine"
        in states
    )
    assert any(state.startswith("submitted") and "region=europe-west4/" in state for state in states)
    assert f"--build-arg=BASE_IMAGE={REGISTRY}/app:" in " ".join(build.resolved["steps"][0]["args"])
    # projects.locations.builds.list got the projectId the REST reference requires.
    (lookup,) = fake.calls("GET", r"/locations/europe-west4/builds\?")
    assert f"projectId={PROJECT}" in lookup


def test_a_region_conflicting_with_the_pool_is_refused_before_anything_is_sent(
    repo: Path, fake: FakeCloudBuild, environ: dict[str, str]
) -> None:
    pool = f"projects/{PROJECT}/locations/europe-west4/workerPools/big"
    with pytest.raises(
        BuildError, match=r"--region: region us-central1 conflicts with the private pool .* europe-west4"
    ):
        backend(repo, environ, worker_pool=pool, region="us-central1").build(
            request_for(repo, "child"), Recorder(), threading.Event()
        )
    assert fake.requests == []


def test_missing_project_is_one_clear_config_error(repo: Path, environ: dict[str, str]) -> None:
    settings = load_settings(repo).with_overrides(cloudbuild_project="")
    with pytest.raises(ConfigError, match=r"--project PROJECT or set \[cloudbuild\] project in cascade.toml"):
        CloudBuildBackend(settings, environ=environ)


def test_missing_credentials_say_how_to_log_in(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A credentials file that does not exist: google.auth fails at once, without asking any server.
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    with pytest.raises(ConfigError) as raised:
        CloudBuildBackend(load_settings(repo), environ={})
    message = str(raised.value)
    assert "\n" not in message
    assert "gcloud auth application-default login" in message


def test_a_substitution_the_yaml_does_not_use_is_refused_before_anything_is_sent(
    repo: Path, fake: FakeCloudBuild, environ: dict[str, str]
) -> None:
    request = request_for(repo, "app")
    extra = BuildRequest(**{**request.__dict__, "labels": {**request.labels, "org.example.extra": "x"}})

    with pytest.raises(BuildError, match="_LABEL_ORG_EXAMPLE_EXTRA is provided but never used"):
        backend(repo, environ).build(extra, Recorder(), threading.Event())
    assert fake.requests == []


def test_inputs_become_substitutions_like_the_base_image(repo: Path, environ: dict[str, str]) -> None:
    write_image(
        repo, "runtime", f'base = "{BASE}"\n[inputs]\nCOMPILED = "app"\n', dockerfile=INPUT_DOCKERFILE
    )
    plan = compute_plan(load_settings(repo), use_cache=False)
    request = build_request(plan, plan.get("runtime"), Provenance("abc", ""), "2026-01-01T00:00:00Z")
    labels = tuple(request.labels)
    (repo / "cloudbuild" / "runtime.yaml").write_text(config_text("runtime", ["COMPILED"], labels))
    compiled = f"{REGISTRY}/app:{plan.get('app').tag}"

    substitutions = backend(repo, environ).submission(request).body["substitutions"]

    assert substitutions["_COMPILED"] == compiled
    assert substitutions["_BASE_IMAGE"] == BASE
    config = cloudbuild_config.load_config(repo / "cloudbuild" / "runtime.yaml")
    resolved = cloudbuild_config.apply_substitutions(config, substitutions)
    assert f"--build-arg=COMPILED={compiled}" in resolved["steps"][0]["args"]
    # A config that forgets the input is refused before anything is sent, as Cloud Build would.
    (repo / "cloudbuild" / "runtime.yaml").write_text(config_text("runtime", [], labels))
    with pytest.raises(ConfigError, match="substitution _COMPILED is provided but never used"):
        backend(repo, environ).submission(request)


class _TokenRegistry(http.server.BaseHTTPRequestHandler):
    """A registry that wants a Bearer token from its token service, as Artifact Registry does."""

    access_token = "adc-access-token"

    def do_GET(self) -> None:  # the token service
        expected = "Basic " + base64.b64encode(f"oauth2accesstoken:{self.access_token}".encode()).decode()
        if self.headers.get("Authorization") != expected:
            self.send_response(401)
            self.end_headers()
            return
        data = json.dumps({"token": "registry-token"}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_HEAD(self) -> None:
        host = f"127.0.0.1:{self.server.server_address[1]}"
        if self.headers.get("Authorization") != "Bearer registry-token":
            self.send_response(401)
            self.send_header("WWW-Authenticate", f'Bearer realm="http://{host}/token",service="{host}"')
        elif self.path == "/v2/arr/app/manifests/present":
            self.send_response(200)
            self.send_header("Docker-Content-Digest", "sha256:" + "1" * 64)
        else:
            self.send_response(404)
        self.send_header("Docker-Distribution-API-Version", "registry/2.0")  # a registry's 404
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_already_built_is_a_manifest_head_with_an_adc_token(repo: Path, tmp_path: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _TokenRegistry)
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    host = f"127.0.0.1:{server.server_address[1]}"
    try:
        settings = load_settings(repo).with_overrides(registry=f"{host}/arr")
        store = cloudbuild_store(
            settings,
            token=lambda: _TokenRegistry.access_token,
            is_google_host=lambda name: name == host,
            environ={"DOCKER_CONFIG": str(tmp_path / "no-docker-config")},
        )
        assert store.has("app", "present") is True
        assert store.has("app", "absent") is False
        refused = cloudbuild_store(
            settings,
            token=lambda: "wrong-token",
            is_google_host=lambda name: name == host,
            environ={"DOCKER_CONFIG": str(tmp_path / "no-docker-config")},
        )
        with pytest.raises(BackendError):
            refused.has("app", "present")
    finally:
        server.shutdown()
        server.server_close()


class _EmptyRegistry(http.server.BaseHTTPRequestHandler):
    def do_HEAD(self) -> None:
        self.send_response(404)
        self.send_header("Docker-Distribution-API-Version", "registry/2.0")  # a registry's 404
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def invoke_with_fakes(
    repo: Path, fake: FakeCloudBuild, storage: StorageFront, *args: str
) -> tuple[subprocess.CompletedProcess[str], str]:
    """Run `invoke ARGS --registry <an empty registry>` on `repo` against the fakes; (result, registry)."""
    registry = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EmptyRegistry)
    threading.Thread(target=registry.serve_forever, args=(0.02,), daemon=True).start()
    target = f"127.0.0.1:{registry.server_address[1]}/arr"
    environ = {
        **os.environ,
        "CLOUDSDK_API_ENDPOINT_OVERRIDES_CLOUDBUILD": fake.url,
        "STORAGE_EMULATOR_HOST": storage.url,
        "CI": "true",
    }
    command = [sys.executable, "-m", "invoke", "-r", str(REPO), *args, "--registry", target]
    try:
        done = subprocess.run(command, cwd=repo, env=environ, capture_output=True, text=True, timeout=120)
    finally:
        registry.shutdown()
        registry.server_close()
    return done, target


def test_invoke_cascade_with_the_cloudbuild_backend(
    repo: Path, fake: FakeCloudBuild, storage: StorageFront
) -> None:
    """The task wiring: flags reach the backend, the registry decides what is missing, both are built."""
    use_cascade_labels(repo)
    fake.script = [Phase("SUCCESS", log="done\n")]
    done, target = invoke_with_fakes(
        repo, fake, storage, "cascade", "--backend", "cloudbuild", "--project", "other-project",
        "--machine-type", "E2_HIGHCPU_8", "--disk-size", "300", "--timeout", "45", "--queued-timeout", "600",
    )  # fmt: skip

    assert done.returncode == 0, done.stdout + done.stderr
    assert [build.resolved["tags"][1] for build in fake.created] == ["app", "child"]
    assert {build.project for build in fake.created} == {"other-project"}
    for build in fake.created:
        assert build.body["timeout"] == "2700s"
        assert build.body["options"]["diskSizeGb"] == "300"
        assert build.body["source"]["storageSource"]["bucket"] == "other-project_cloudbuild"
    app_tag = planned(repo, "app").tag
    assert f"--build-arg=BASE_IMAGE={target}/app:{app_tag}" in fake.created[1].resolved["steps"][0]["args"]


def test_a_service_account_without_logging_options_is_refused_before_anything_is_sent(
    repo: Path, fake: FakeCloudBuild, environ: dict[str, str], storage: StorageFront
) -> None:
    with pytest.raises(
        BuildError, match=r"--service-account: a build with service account .* needs somewhere"
    ):
        backend(repo, environ, service_account="b@fake-project.iam.gserviceaccount.com").build(
            request_for(repo, "app"), Recorder(), threading.Event()
        )
    assert fake.requests == [] and storage.requests == []


def test_the_fake_refuses_what_cloud_build_refuses_and_a_refusal_fails_only_that_image(
    repo: Path, fake: FakeCloudBuild, environ: dict[str, str]
) -> None:
    """Were a check of ours missing, the refusal on create is that image's BuildError, not a stop."""
    from imagecascade.cloud.cloudbuild_api import CloudBuildApi, anonymous_credentials

    api = CloudBuildApi(
        project=PROJECT, region="global", credentials=anonymous_credentials(), endpoint=fake.url, timing=FAST
    )
    body = {
        "steps": [{"name": "gcr.io/cloud-builders/docker", "args": ["version"]}],
        "serviceAccount": f"projects/{PROJECT}/serviceAccounts/b@{PROJECT}.iam.gserviceaccount.com",
    }
    try:
        with pytest.raises(BuildError, match=r"Cloud Build refused the build: 400 .*build.service_account"):
            api.submit(body, "submission-1")
        with pytest.raises(BuildError, match=r"is not a valid built-in substitution"):
            api.submit({"steps": [{"name": "x", "args": ["$HOME"]}]}, "submission-2")
    finally:
        api.close()
    assert fake.created == [] and len(fake.refusals) == 2


@pytest.mark.parametrize("readable", [True, False], ids=["listed-elsewhere", "forbidden"])
def test_a_default_bucket_owned_by_another_project_is_refused(
    repo: Path, fake: FakeCloudBuild, environ: dict[str, str], storage: StorageFront, readable: bool
) -> None:
    storage.own(f"{PROJECT}_cloudbuild", "squatter-project", readable=readable)

    with pytest.raises(BuildError) as raised:
        backend(repo, environ).build(request_for(repo, "app"), Recorder(), threading.Event())

    message = str(raised.value)
    assert f"the default source bucket gs://{PROJECT}_cloudbuild already exists and" in message
    assert "pass --bucket BUCKET or set [cloudbuild] bucket in cascade.toml" in message
    assert "\n" not in message
    assert storage.object_names(f"{PROJECT}_cloudbuild") == []
    assert [kind for kind, _, _ in storage.requests if kind.startswith("upload")] == []
    assert fake.created == []


def test_a_regional_build_creates_its_default_bucket_in_its_region(
    repo: Path, fake: FakeCloudBuild, environ: dict[str, str], storage: StorageFront
) -> None:
    backend(repo, environ, region="europe-west4").build(
        request_for(repo, "app"), Recorder(), threading.Event()
    )

    bucket = f"{PROJECT}_europe-west4_cloudbuild"
    assert storage.created[bucket]["location"] == "europe-west4"
    assert storage.created[bucket]["project"] == PROJECT
    assert storage.created[bucket]["iamConfiguration"]["uniformBucketLevelAccess"]["enabled"] is True
    (build,) = fake.created
    assert build.location == "europe-west4" and build.body["source"]["storageSource"]["bucket"] == bucket


def test_a_domain_scoped_project_gets_a_valid_default_bucket_name(
    repo: Path, fake: FakeCloudBuild, environ: dict[str, str], storage: StorageFront
) -> None:
    settings = load_settings(repo).with_overrides(cloudbuild_project="example.com:proj")
    cloud = CloudBuildBackend(settings, environ=environ, timing=FAST)

    cloud.build(request_for(repo, "app"), Recorder(), threading.Event())

    assert storage.created["example_com_proj_cloudbuild"]["project"] == "example.com:proj"
    assert fake.created[0].project == "example.com:proj"


def test_a_named_bucket_is_used_as_is_and_must_exist(
    repo: Path, fake: FakeCloudBuild, environ: dict[str, str], storage: StorageFront
) -> None:
    storage.own("shared-sources", "platform-project")  # the user's choice: no ownership check
    named = load_settings(repo).with_overrides(cloudbuild_bucket="shared-sources")
    CloudBuildBackend(named, environ=environ, timing=FAST).build(
        request_for(repo, "app"), Recorder(), threading.Event()
    )
    assert fake.created[0].body["source"]["storageSource"]["bucket"] == "shared-sources"

    missing = load_settings(repo).with_overrides(cloudbuild_bucket="no-such-bucket")
    with pytest.raises(BuildError, match="bucket gs://no-such-bucket does not exist"):
        CloudBuildBackend(missing, environ=environ, timing=FAST).build(
            request_for(repo, "app"), Recorder(), threading.Event()
        )
    assert "no-such-bucket" not in storage.created


def test_invoke_build_image_takes_the_cloud_flags(
    repo: Path, fake: FakeCloudBuild, storage: StorageFront
) -> None:
    """`invoke build-<image> --backend cloudbuild` takes every flag `invoke cascade` takes."""
    use_cascade_labels(repo)
    storage.own("team-logs", PROJECT)
    done, _ = invoke_with_fakes(
        repo, fake, storage, "build-app", "--backend", "cloudbuild", "--project", PROJECT,
        "--region", "us-central1", "--timeout", "30", "--machine-type", "E2_HIGHCPU_8", "--disk-size", "150",
        "--queued-timeout", "120", "--service-account", f"b@{PROJECT}.iam.gserviceaccount.com",
        "--logs-bucket", "gs://team-logs", "--logging", "GCS_ONLY", "--bucket", "team-logs",
    )  # fmt: skip

    assert done.returncode == 0, done.stdout + done.stderr
    (build,) = fake.created
    assert build.location == "us-central1"
    assert build.body["timeout"] == "1800s" and build.body["queueTtl"] == "120s"
    assert build.body["options"] == {
        "machineType": "E2_HIGHCPU_8",
        "diskSizeGb": "150",
        "logging": "GCS_ONLY",
    }
    assert (
        build.body["serviceAccount"]
        == f"projects/{PROJECT}/serviceAccounts/b@{PROJECT}.iam.gserviceaccount.com"
    )
    assert build.body["logsBucket"] == "gs://team-logs"
    assert build.body["source"]["storageSource"]["bucket"] == "team-logs"
    assert "timeout 0:30:00 from --timeout" in done.stdout


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--timeout", "2000"], "error: --timeout: 2000 minutes is outside 1..1440"),
        (["--service-account", "b@p.iam.gserviceaccount.com"], "needs somewhere for its log"),
        (["--logging", "SOMETIMES"], "error: --logging: 'SOMETIMES' is not one of"),
    ],
)
def test_invoke_refuses_bad_cloud_flags_in_one_line_and_sends_nothing(
    repo: Path, fake: FakeCloudBuild, storage: StorageFront, flags: list[str], message: str
) -> None:
    use_cascade_labels(repo)
    done, _ = invoke_with_fakes(repo, fake, storage, "build-app", "--backend", "cloudbuild", *flags)

    assert done.returncode != 0
    assert message in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert fake.requests == [] and storage.requests == []


SECRET_VERSION = "projects/fake-project/secrets/pip-conf/versions/latest"


def test_declared_secrets_travel_as_available_secrets_and_never_as_values(
    repo: Path, fake: FakeCloudBuild, environ: dict[str, str], storage: StorageFront, tmp_path: Path
) -> None:
    fake.script = [Phase("SUCCESS", log="DONE")]
    dockerfile = repo / "images" / "app" / "Dockerfile"
    dockerfile.write_text(
        dockerfile.read_text() + "RUN --mount=type=secret,id=pip_conf --mount=type=secret,id=token true\n"
    )
    declaration = repo / "images" / "app" / "image.toml"
    declaration.write_text('secrets = ["pip_conf", "token"]\n' + declaration.read_text())
    (repo / "cascade.toml").write_text(
        (repo / "cascade.toml").read_text() + f'[cloudbuild.secrets]\npip_conf = "{SECRET_VERSION}"\n'
    )
    # The same id has a local source too: its value must not reach Cloud Build in any form.
    value = "local-secret-value-that-must-stay-here"
    (tmp_path / "pip.conf").write_text(value)
    request = request_for(repo, "app")
    request = dataclasses.replace(
        request, secrets=parse_secret_flags([f"id=pip_conf,src={tmp_path / 'pip.conf'}"], tmp_path)
    )
    backend(repo, environ).build(request, Recorder(), threading.Event())
    (build,) = fake.created
    env = cloudbuild_config.secret_env("pip_conf")
    assert env == "IMAGECASCADE_SECRET_PIP_CONF"
    assert build.body["availableSecrets"] == {"secretManager": [{"versionName": SECRET_VERSION, "env": env}]}
    (step,) = build.body["steps"]
    assert step["secretEnv"] == [env]
    assert "DOCKER_BUILDKIT=1" in step["env"]
    assert step["args"][:2] == ["build", f"--secret=id=pip_conf,env={env}"]
    # `token` has no Secret Manager version and is optional: not passed.
    assert not any("id=token" in arg for arg in step["args"])
    sent = json.dumps(build.body)
    assert value not in sent and str(tmp_path) not in sent
    source = build.body["source"]["storageSource"]
    data = storage.read(source["bucket"], source["object"])
    assert data is not None and value.encode() not in gzip.decompress(data)


def test_a_required_secret_without_a_secret_manager_version_is_refused_before_submitting(
    repo: Path, fake: FakeCloudBuild, environ: dict[str, str]
) -> None:
    dockerfile = repo / "images" / "app" / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text() + "RUN --mount=type=secret,id=token,required=true true\n")
    declaration = repo / "images" / "app" / "image.toml"
    declaration.write_text('secrets = ["token"]\n' + declaration.read_text())
    image = planned(repo, "app")
    (refusal,) = backend(repo, environ).refusal(image, load_settings(repo))
    assert refusal.reason == "required secret 'token' has no Secret Manager version for Cloud Build"
    assert "[cloudbuild.secrets]" in refusal.fix
    declaration.write_text(declaration.read_text() + f'\n[cloudbuild.secrets]\ntoken = "{SECRET_VERSION}"\n')
    # image.toml's [cloudbuild] secrets table works as well as cascade.toml's.
    assert backend(repo, environ).refusal(planned(repo, "app"), load_settings(repo)) == ()
    assert fake.created == []


def test_buildkit_syntax_alone_switches_the_docker_step_to_buildkit(
    repo: Path, environ: dict[str, str]
) -> None:
    dockerfile = repo / "images" / "app" / "Dockerfile"
    plain = backend(repo, environ).submission(request_for(repo, "app")).body
    assert "DOCKER_BUILDKIT=1" not in plain["steps"][0].get("env", []) and "availableSecrets" not in plain
    dockerfile.write_text(dockerfile.read_text() + "RUN --mount=type=cache,target=/root/.cache true\n")
    body = backend(repo, environ).submission(request_for(repo, "app")).body
    assert body["steps"][0]["env"] == ["DOCKER_BUILDKIT=1"]
    assert "availableSecrets" not in body and "secretEnv" not in body["steps"][0]

"""The Cloud Build backend against local servers that speak the real HTTP APIs.

Cloud Storage is gcp-storage-emulator; Cloud Build is tests/fake_cloudbuild.py. Both listen on
127.0.0.1 and are reached through gcloud's override conventions, so the backend runs unpatched.
"""

from __future__ import annotations

import base64
import dataclasses
import gzip
import http.server
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gcp_storage_emulator.server import create_server
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
from google.cloud.devtools import cloudbuild_v1

from imagecascade.cloud import cloudbuild_config
from imagecascade.cloud.cloudbuild import CloudBuildBackend
from imagecascade.cloud.cloudbuild_api import CloudBuildFlags, Timing, console_url, source_object_name
from imagecascade.cloud.registry_store import cloudbuild_store
from imagecascade.core.backend import BuildError, BuildEvent, BuildRequest
from imagecascade.core.plan import PlannedImage, compute_plan, image_reference
from imagecascade.core.secrets import parse_secret_flags
from imagecascade.core.settings import load_settings
from imagecascade.errors import BackendError, ConfigError
from tests.fake_cloudbuild import FakeCloudBuild, Phase
from tests.image_repo import write_image

REPO = Path(__file__).resolve().parents[1]
PROJECT = "fake-project"
REGISTRY = "127.0.0.1:5999/arr"  # only named in substitutions: nothing ever connects to it
BASE = "127.0.0.1:5999/base@sha256:" + "b" * 64
FAST = Timing(poll_initial=0.01, poll_max=0.02, retry_initial=0.01, retry_max=0.02, transient_limit=5.0)
LABELS = ("org.opencontainers.image.title", "imagecascade.hash")


def config_text(name: str, build_args: list[str], labels: tuple[str, ...] = LABELS) -> str:
    """A config shaped like the committed ones, for the test repository's images."""
    args = ["build", "--file=Dockerfile", "--build-arg=BASE_IMAGE=${_BASE_IMAGE}"]
    args += [f"--build-arg={arg}=${{_{arg}}}" for arg in build_args]
    args += [f"--label={key}=${{{cloudbuild_config.label_substitution(key)}}}" for key in labels]
    args += [f"--tag=${{_REGISTRY}}/{name}:${{_TAG}}", f"--tag=${{_REGISTRY}}/{name}:latest", "."]
    document = {
        "steps": [{"id": "build", "name": "gcr.io/cloud-builders/docker", "args": args}],
        "images": [f"${{_REGISTRY}}/{name}:${{_TAG}}", f"${{_REGISTRY}}/{name}:latest"],
        "tags": ["imagecascade", name, "hash-${_TAG}"],
    }
    return json.dumps(document, indent=2)  # JSON is YAML


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "cloudbuild").mkdir(parents=True)
    (root / "cascade.toml").write_text(
        f'[cloudbuild]\nproject = "{PROJECT}"\n[registry]\nurl = "{REGISTRY}"\n'
    )
    write_image(
        root,
        "app",
        f'base = "{BASE}"\n[build_args]\nMAX_JOBS = "4"\n[cloudbuild]\nmachine_type = "E2_HIGHCPU_32"\n'
        "disk_size_gb = 200\ntimeout_minutes = 180\n",
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


@pytest.fixture(scope="module")
def storage_server() -> Iterator[Any]:
    server = create_server("127.0.0.1", 0, in_memory=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def storage_url(storage_server: Any) -> str:
    storage_server.wipe()
    # The emulator binds port 0 inside its thread; its HTTPServer knows the real port.
    return f"http://127.0.0.1:{storage_server._api._httpd.server_address[1]}"


@pytest.fixture
def fake(storage_url: str) -> Iterator[FakeCloudBuild]:
    with FakeCloudBuild(storage_url) as server:
        yield server


@pytest.fixture
def environ(fake: FakeCloudBuild, storage_url: str) -> dict[str, str]:
    return {
        "CLOUDSDK_API_ENDPOINT_OVERRIDES_CLOUDBUILD": fake.url + "/",
        "STORAGE_EMULATOR_HOST": storage_url,
    }


def storage_client(storage_url: str) -> storage.Client:
    return storage.Client(
        project=PROJECT, credentials=AnonymousCredentials(), client_options={"api_endpoint": storage_url}
    )


def planned(root: Path, name: str) -> PlannedImage:
    return compute_plan(load_settings(root), use_cache=False).get(name)


def request_for(root: Path, name: str) -> BuildRequest:
    image = planned(root, name)
    if image.spec.parent:
        base = image_reference(image.spec.parent, planned(root, image.spec.parent).tag, REGISTRY)
    else:
        base = BASE
    return BuildRequest(
        image=image,
        base_reference=base,
        build_args={**image.spec.build_args, "BASE_IMAGE": base},
        labels={"org.opencontainers.image.title": name, "imagecascade.hash": image.hash},
        references=(image_reference(name, image.tag, REGISTRY), image_reference(name, "latest", REGISTRY)),
        registry=REGISTRY,
    )


class Recorder:
    def __init__(self) -> None:
        self.events: list[BuildEvent] = []

    def __call__(self, event: BuildEvent) -> None:
        self.events.append(event)

    def messages(self, kind: str) -> list[str]:
        return [event.message for event in self.events if event.kind == kind]


def backend(repo: Path, environ: dict[str, str], **flags: Any) -> CloudBuildBackend:
    return CloudBuildBackend(load_settings(repo), CloudBuildFlags(**flags), environ=environ, timing=FAST)


def test_success_submits_the_yaml_with_substitutions_and_records_the_digest(
    repo: Path, fake: FakeCloudBuild, environ: dict[str, str], storage_url: str
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
    assert build.resolved["tags"] == ["imagecascade", "app", f"hash-{image.tag}"]
    assert [step["args"] for step in build.resolved["steps"]] == [step["args"] for step in expected["steps"]]
    assert f"--build-arg=BASE_IMAGE={BASE}" in build.resolved["steps"][0]["args"]
    assert f"--label=imagecascade.hash={image.hash}" in build.resolved["steps"][0]["args"]
    # Per-image options from image.toml.
    assert build.body["timeout"] == f"{180 * 60}s"
    options = build.body["options"]
    assert options["diskSizeGb"] == "200"
    assert options["machineType"] in (
        "E2_HIGHCPU_32",
        cloudbuild_v1.BuildOptions.MachineType.E2_HIGHCPU_32.value,
    )
    # The source is exactly the hashed files, gzipped, in the default bucket.
    source = build.body["source"]["storageSource"]
    assert source == {"bucket": f"{PROJECT}_cloudbuild", "object": source_object_name("app", image.hash)}
    data = storage_client(storage_url).bucket(source["bucket"]).blob(source["object"]).download_as_bytes()
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data))) as archive:
        files = {member.name for member in archive.getmembers() if member.isfile()}
    assert files == {entry.path for entry in image.inputs.files if entry.kind == "file"}
    assert "notes.tmp" not in files and "data/table.csv" in files
    # Live state, the console URL and the log as events.
    states = events.messages("state")
    assert states[0] == f"source gs://{PROJECT}_cloudbuild/{source['object']} uploaded"
    assert states[1] == f"submitted Cloud Build {build.id}: {console_url(build.id, 'global', PROJECT)}"
    assert [message.split(" ")[0] for message in states[2:]] == ["QUEUED", "WORKING", "SUCCESS"]
    assert [(event.step, event.steps) for event in events.events if event.kind == "step"] == [(1, 1)]
    lines = ["Step 1/3 : ARG BASE_IMAGE", "Step 2/3 : FROM x", "Successfully built 123", "PUSH", "DONE"]
    assert events.messages("log") == lines
    assert f"{tag_ref}@{outcome.digest}" in events.messages("pushed")


@pytest.mark.parametrize("status", ["FAILURE", "TIMEOUT", "CANCELLED", "INTERNAL_ERROR", "EXPIRED"])
def test_each_failed_status_raises_with_the_log_tail(
    repo: Path, fake: FakeCloudBuild, environ: dict[str, str], status: str
) -> None:
    log = "".join(f"line {number}\n" for number in range(50))
    fake.script = [Phase("WORKING", log=log), Phase(status, detail="step 0 exited 1", log="ERROR: boom\n")]

    with pytest.raises(BuildError) as raised:
        backend(repo, environ).build(request_for(repo, "app"), Recorder(), threading.Event())

    assert f"ended {status}: step 0 exited 1" in str(raised.value)
    assert len(raised.value.log_tail) == FAST.log_tail_lines
    assert raised.value.log_tail[-2:] == ("line 49", "ERROR: boom")


def test_stuck_in_queued_is_cancelled_after_the_queued_timeout(
    repo: Path, fake: FakeCloudBuild, environ: dict[str, str]
) -> None:
    fake.script = [Phase("QUEUED", polls=0)]
    started = time.monotonic()

    with pytest.raises(BuildError, match="waited in QUEUED for more than"):
        backend(repo, environ, queued_timeout=0.3).build(
            request_for(repo, "app"), Recorder(), threading.Event()
        )

    assert 0.3 <= time.monotonic() - started < 5
    assert fake.cancelled == [fake.created[0].id]


def test_bursts_of_429_and_503_are_retried_not_failures(
    repo: Path, fake: FakeCloudBuild, environ: dict[str, str]
) -> None:
    fake.script = [Phase("QUEUED"), Phase("WORKING", burst=(503, 429, 503)), Phase("SUCCESS")]
    fake.throttle(4, 429)  # the lookup of ongoing builds, then the submission

    outcome = backend(repo, environ).build(request_for(repo, "app"), Recorder(), threading.Event())

    assert outcome.digest
    assert len(fake.created) == 1
    lookups = [path for method, path in fake.requests if method == "GET" and "/builds?" in path]
    polls = [path for method, path in fake.requests if method == "GET" and "/builds/" in path]
    assert len(lookups) >= 2  # looked again before the submission that follows throttled answers
    assert len(polls) == 3 + 3  # QUEUED, WORKING, SUCCESS answered; three throttled polls asked again


def test_persistent_throttling_becomes_a_backend_error(
    repo: Path, fake: FakeCloudBuild, environ: dict[str, str]
) -> None:
    fake.throttle(10_000, 503)
    timing = Timing(poll_initial=0.01, poll_max=0.01, retry_initial=0.01, retry_max=0.02, transient_limit=0.3)
    cloud = CloudBuildBackend(load_settings(repo), environ=environ, timing=timing)

    with pytest.raises(BackendError, match="503"):
        cloud.build(request_for(repo, "app"), Recorder(), threading.Event())
    assert fake.created == []


def test_an_ongoing_build_of_the_same_hash_is_followed_not_resubmitted(
    repo: Path, fake: FakeCloudBuild, environ: dict[str, str], storage_url: str
) -> None:
    request = request_for(repo, "app")
    tag = request.image.tag
    other_image = fake.add_build(
        project=PROJECT, tags=["imagecascade", "child", f"hash-{tag}"], images=[], phases=[Phase("WORKING")]
    )
    ongoing = fake.add_build(
        project=PROJECT,
        tags=["imagecascade", "app", f"hash-{tag}"],
        images=list(request.references),
        phases=[Phase("WORKING", log="already running\n"), Phase("SUCCESS")],
    )
    events = Recorder()

    outcome = backend(repo, environ).build(request, events, threading.Event())

    assert fake.created == []
    assert outcome.digest == ongoing.digests[request.references[0]]
    assert events.messages("state")[0].startswith(f"following the ongoing Cloud Build {ongoing.id}: https://")
    assert other_image.id not in str(events.events)
    bucket = storage_client(storage_url).lookup_bucket(f"{PROJECT}_cloudbuild")
    assert bucket is None  # nothing was uploaded either


def test_an_existing_upload_is_not_repeated(
    repo: Path, fake: FakeCloudBuild, environ: dict[str, str], storage_url: str
) -> None:
    cloud = backend(repo, environ)
    request = request_for(repo, "app")
    events = Recorder()
    cloud.build(request, events, threading.Event())
    blob = (
        storage_client(storage_url)
        .bucket(f"{PROJECT}_cloudbuild")
        .get_blob(source_object_name("app", request.image.hash))
    )
    assert blob is not None
    generation = blob.generation

    cloud.build(request, events, threading.Event())

    sources = [message for message in events.messages("state") if message.startswith("source ")]
    assert [message.endswith("already uploaded") for message in sources] == [False, True]
    again = storage_client(storage_url).bucket(f"{PROJECT}_cloudbuild").get_blob(blob.name)
    assert again is not None and again.generation == generation
    assert len(fake.created) == 2


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
        tags=["imagecascade", "app", f"hash-{request.image.tag}"],
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
    assert "region=europe-west4/" in events.messages("state")[1]
    assert f"--build-arg=BASE_IMAGE={REGISTRY}/app:" in " ".join(build.resolved["steps"][0]["args"])


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

    with pytest.raises(ConfigError, match="_LABEL_ORG_EXAMPLE_EXTRA is provided but never used"):
        backend(repo, environ).build(extra, Recorder(), threading.Event())
    assert fake.requests == []


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
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_invoke_cascade_with_the_cloudbuild_backend(
    repo: Path, fake: FakeCloudBuild, storage_url: str
) -> None:
    """The task wiring: flags reach the backend, the registry decides what is missing, both are built."""
    from imagecascade.core import cascade

    labels = (cascade.LABEL_REVISION, cascade.LABEL_CREATED, cascade.LABEL_SOURCE, cascade.LABEL_TITLE)
    labels += (cascade.LABEL_DESCRIPTION, cascade.LABEL_HASH, cascade.LABEL_PARENT_HASH)
    (repo / "cloudbuild" / "app.yaml").write_text(config_text("app", ["MAX_JOBS"], labels))
    (repo / "cloudbuild" / "child.yaml").write_text(config_text("child", [], labels))
    fake.script = [Phase("SUCCESS", log="done\n")]
    registry = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EmptyRegistry)
    threading.Thread(target=registry.serve_forever, args=(0.02,), daemon=True).start()
    target = f"127.0.0.1:{registry.server_address[1]}/arr"
    environ = {
        **os.environ,
        "CLOUDSDK_API_ENDPOINT_OVERRIDES_CLOUDBUILD": fake.url,
        "STORAGE_EMULATOR_HOST": storage_url,
        "CI": "true",
    }
    command = [sys.executable, "-m", "invoke", "-r", str(REPO), "cascade", "--backend", "cloudbuild"]
    command += ["--registry", target, "--project", "other-project", "--machine-type", "E2_HIGHCPU_8"]
    command += ["--disk-size", "300", "--timeout", "45", "--queued-timeout", "600"]
    try:
        done = subprocess.run(command, cwd=repo, env=environ, capture_output=True, text=True, timeout=120)
    finally:
        registry.shutdown()
        registry.server_close()

    assert done.returncode == 0, done.stdout + done.stderr
    assert [build.resolved["tags"][1] for build in fake.created] == ["app", "child"]
    assert {build.project for build in fake.created} == {"other-project"}
    for build in fake.created:
        assert build.body["timeout"] == "2700s"
        assert build.body["options"]["diskSizeGb"] == "300"
        assert build.body["source"]["storageSource"]["bucket"] == "other-project_cloudbuild"
    app_tag = planned(repo, "app").tag
    assert f"--build-arg=BASE_IMAGE={target}/app:{app_tag}" in fake.created[1].resolved["steps"][0]["args"]


SECRET_VERSION = "projects/fake-project/secrets/pip-conf/versions/latest"


def test_declared_secrets_travel_as_available_secrets_and_never_as_values(
    repo: Path, fake: FakeCloudBuild, environ: dict[str, str], storage_url: str, tmp_path: Path
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
    data = storage_client(storage_url).bucket(source["bucket"]).blob(source["object"]).download_as_bytes()
    assert value.encode() not in gzip.decompress(data)


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
    plain, _ = backend(repo, environ).submission(request_for(repo, "app"))
    assert "DOCKER_BUILDKIT=1" not in list(plain.steps[0].env) and not plain.available_secrets.secret_manager
    dockerfile.write_text(dockerfile.read_text() + "RUN --mount=type=cache,target=/root/.cache true\n")
    build, _ = backend(repo, environ).submission(request_for(repo, "app"))
    assert list(build.steps[0].env) == ["DOCKER_BUILDKIT=1"]
    assert not build.available_secrets.secret_manager and not list(build.steps[0].secret_env)

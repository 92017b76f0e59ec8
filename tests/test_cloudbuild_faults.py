"""Transient faults on every kind of call a long Cloud Build run makes: none of them may stop it.

A six-hour build is polled about 1,400 times, its log read as often, and its source uploaded in
chunks; any of those calls can meet a 5xx or a reset connection. The fakes inject exactly that
(tests/faults.py) and the backend and cascade run unpatched.
"""

from __future__ import annotations

import os
import threading
import time
import urllib.parse
from pathlib import Path

import pytest

from imagecascade.cloud.retry import Timing
from imagecascade.core.backend import BuildError, BuildEvent
from imagecascade.core.cascade import run_cascade
from imagecascade.core.decisions import CascadeOptions
from imagecascade.core.plan import compute_plan
from imagecascade.core.settings import load_settings
from imagecascade.errors import BackendError
from tests.cloud_fixtures import (
    PROJECT,
    Recorder,
    backend,
    config_text,
    emulator_url,
    environ,
    fake,
    repo,
    request_for,
    storage,
    storage_server,
    use_cascade_labels,
)
from tests.fake_cloudbuild import FakeCloudBuild, Phase
from tests.fake_storage import StorageFront
from tests.faults import LOST, RESET, Fault, status

__all__ = ["emulator_url", "environ", "fake", "repo", "storage", "storage_server"]  # fixtures
TRANSIENT = [status(500), status(502), status(503), status(504), status(429), status(408), RESET]
BUCKET = f"{PROJECT}_cloudbuild"


class Missing:
    """An image store where nothing is built yet (the registry is not what these tests are about)."""

    description = "the registry"

    def has(self, name: str, tag: str) -> bool:
        return False


@pytest.mark.parametrize("kind", ["list", "create", "get"])
@pytest.mark.parametrize("fault", TRANSIENT, ids=str)
def test_a_transient_fault_on_a_cloud_build_call_is_retried(
    repo: Path, fake: FakeCloudBuild, environ: dict[str, str], kind: str, fault: Fault
) -> None:
    fake.script = [Phase("QUEUED"), Phase("WORKING", log="step\n"), Phase("SUCCESS", log="done\n")]
    fake.faults.inject(kind, fault, fault)
    events = Recorder()

    outcome = backend(repo, environ).build(request_for(repo, "app"), events, threading.Event())

    assert outcome.digest and outcome.log_tail == ("step", "done")
    assert len(fake.created) == 1 and fake.cancelled == []
    assert fake.faults.served == [(kind, fault), (kind, fault)]
    assert not [message for message in events.messages("state") if "warning" in message]


@pytest.mark.parametrize("fault", [LOST, status(502, after=True), status(503, after=True)], ids=str)
def test_a_create_whose_answer_is_lost_is_found_by_its_tag_not_submitted_twice(
    repo: Path, fake: FakeCloudBuild, environ: dict[str, str], fault: Fault
) -> None:
    fake.faults.inject("create", fault)

    outcome = backend(repo, environ).build(request_for(repo, "app"), Recorder(), threading.Event())

    (build,) = fake.created  # created once, by the call whose answer was lost
    assert outcome.digest == build.digests[request_for(repo, "app").references[0]]
    assert len(fake.calls("POST", r"/builds\?")) == 1  # no second create
    submission_tags = [tag for tag in build.resolved["tags"] if tag.startswith("submission-")]
    assert len(submission_tags) == 1
    lookups = [urllib.parse.unquote(path) for path in fake.calls("GET", r"/builds\?")]
    assert any(f'tags="{submission_tags[0]}"' in lookup for lookup in lookups)


@pytest.mark.parametrize(
    "kind", ["bucket.get", "bucket.list", "object.get", "upload", "object.read"]
)  # bucket.insert and upload.chunk have their own tests below
@pytest.mark.parametrize("fault", [status(500), status(502), status(503), RESET], ids=str)
def test_a_transient_fault_on_a_cloud_storage_call_is_retried(
    repo: Path, fake: FakeCloudBuild, environ: dict[str, str], storage: StorageFront, kind: str, fault: Fault
) -> None:
    storage.own(BUCKET, PROJECT)  # an existing default bucket: looked up and checked by listing
    fake.script = [
        Phase("WORKING", log="one\n"),
        Phase("WORKING", log="two\n"),
        Phase("SUCCESS", log="three\n"),
    ]
    storage.faults.inject(kind, fault, fault)
    events = Recorder()

    outcome = backend(repo, environ).build(request_for(repo, "app"), events, threading.Event())

    assert outcome.digest and outcome.log_tail == ("one", "two", "three")
    assert storage.faults.served == [(kind, fault), (kind, fault)]
    assert len(fake.created) == 1
    assert not [message for message in events.messages("state") if "warning" in message]


@pytest.mark.parametrize("fault", [status(503), RESET, LOST], ids=str)
def test_creating_the_default_bucket_survives_faults(
    repo: Path, fake: FakeCloudBuild, environ: dict[str, str], storage: StorageFront, fault: Fault
) -> None:
    storage.faults.inject("bucket.insert", fault)

    backend(repo, environ).build(request_for(repo, "app"), Recorder(), threading.Event())

    assert storage.created[BUCKET]["project"] == PROJECT
    assert len(fake.created) == 1


def test_a_large_source_upload_resumes_after_a_reset_instead_of_starting_over(
    repo: Path, fake: FakeCloudBuild, environ: dict[str, str], storage: StorageFront
) -> None:
    (repo / "images" / "app" / "weights.bin").write_bytes(os.urandom(9 * 1024 * 1024))  # above 8 MiB
    storage.faults.inject("upload.chunk", status(503))
    storage.faults.every("upload.chunk", 7, RESET)
    request = request_for(repo, "app")

    backend(repo, environ).build(request, Recorder(), threading.Event())

    assert len([kind for kind, _, _ in storage.requests if kind == "upload"]) == 1  # one upload session
    starts = [int(chunk.split()[1].split("-")[0]) for chunk in storage.chunks if "-" in chunk.split()[1]]
    assert starts == sorted(set(starts)) and starts[0] == 0  # every chunk once, none restarted from 0
    assert len(starts) > 30 and len(storage.faults.served) >= 4
    (build,) = fake.created
    assert len(build.source_files["weights.bin"]) == 9 * 1024 * 1024


def test_a_502_and_a_reset_on_every_call_kind_mid_cascade_build_everything_and_cancel_nothing(
    repo: Path, fake: FakeCloudBuild, environ: dict[str, str], storage: StorageFront
) -> None:
    """The proof case: both images are built, nothing is cancelled, every injected fault was met."""
    storage.own(BUCKET, PROJECT)
    fake.script = [
        Phase("QUEUED", polls=2),
        Phase("WORKING", polls=3, log="compiling\n"),
        Phase("SUCCESS", log="pushed\n"),
    ]
    for kind in ("list", "create", "get"):
        fake.faults.inject(kind, status(502), RESET)
    fake.faults.inject("create", LOST)  # and once the answer to a create that did happen is lost
    for kind in ("bucket.get", "bucket.list", "object.get", "upload", "object.read"):
        storage.faults.inject(kind, status(502), RESET)
    use_cascade_labels(repo)
    settings = load_settings(repo)
    plan = compute_plan(settings, use_cache=False)
    events = Recorder()

    result = run_cascade(plan, Missing(), backend(repo, environ), CascadeOptions(jobs=2), on_event=events)

    assert result.ok, [(item.name, item.reason) for item in result.results]
    assert result.names("built") == ["app", "child"]
    assert fake.cancelled == []
    assert sorted(build.resolved["tags"][1] for build in fake.created) == ["app", "child"]
    assert fake.faults.pending() == {} and storage.faults.pending() == {}


def test_a_long_build_polled_hundreds_of_times_through_flaky_calls_completes(
    repo: Path, fake: FakeCloudBuild, environ: dict[str, str], storage: StorageFront
) -> None:
    fake.script = [
        Phase("QUEUED", polls=100),
        Phase("WORKING", polls=1300, log="compiling\n"),
        Phase("SUCCESS"),
    ]
    fake.faults.every("get", 9, status(502))
    storage.faults.every("object.read", 13, RESET)
    timing = Timing(poll_initial=0.0, poll_max=0.0, retry_initial=0.0, retry_max=0.001, transient_limit=5.0)

    outcome = backend(repo, environ, timing=timing).build(
        request_for(repo, "app"), Recorder(), threading.Event()
    )

    assert outcome.digest and outcome.log_tail == ("compiling",)
    assert fake.faults.calls("get") >= 150 and fake.cancelled == []
    assert len(fake.faults.served) >= 20 and len(storage.faults.served) >= 10


def test_a_log_that_cannot_be_read_is_one_warning_and_the_build_decides(
    repo: Path, fake: FakeCloudBuild, environ: dict[str, str], storage: StorageFront
) -> None:
    fake.script = [Phase("WORKING", polls=5, log="a\n"), Phase("SUCCESS", log="b\n")]
    storage.faults.every("object.read", 1, status(401))  # an expired token: refused every time
    events = Recorder()

    outcome = backend(repo, environ).build(request_for(repo, "app"), events, threading.Event())

    assert outcome.digest
    warnings = [message for message in events.messages("state") if message.startswith("warning:")]
    assert len(warnings) == 1
    assert "cannot read the log gs://fake-cloudbuild-logs/log-" in warnings[0]
    assert "still following the build; its log: https://console.cloud.google.com/" in warnings[0]


def test_a_log_unreadable_for_a_while_is_one_warning_and_then_streams_again(
    repo: Path, fake: FakeCloudBuild, environ: dict[str, str], storage: StorageFront
) -> None:
    fake.script = [Phase("WORKING", polls=12, log="a\n"), Phase("SUCCESS", log="b\n")]
    storage.faults.inject("object.read", *[RESET] * 8)
    events = Recorder()

    outcome = backend(repo, environ).build(request_for(repo, "app"), events, threading.Event())

    assert outcome.log_tail == ("a", "b")
    assert len([message for message in events.messages("state") if message.startswith("warning:")]) == 1


def test_cloud_logging_only_says_where_the_log_is(
    repo: Path, fake: FakeCloudBuild, environ: dict[str, str], storage: StorageFront
) -> None:
    events = Recorder()

    backend(
        repo,
        environ,
        service_account="builder@fake-project.iam.gserviceaccount.com",
        logging="CLOUD_LOGGING_ONLY",
    ).build(request_for(repo, "app"), events, threading.Event())

    (build,) = fake.created
    assert build.body["serviceAccount"] == (
        "projects/fake-project/serviceAccounts/builder@fake-project.iam.gserviceaccount.com"
    )
    notes = [message for message in events.messages("state") if message.startswith("log ")]
    assert notes == [
        f"log in Cloud Logging: https://console.cloud.google.com/cloud-build/builds;region=global/{build.id}?project=123456789"
    ]
    assert not [path for kind, _, path in storage.requests if kind == "object.read"]


def test_the_log_is_tailed_from_the_logs_bucket_that_is_used(
    repo: Path, fake: FakeCloudBuild, environ: dict[str, str], storage: StorageFront
) -> None:
    storage.own("team-build-logs", PROJECT)
    fake.script = [Phase("WORKING", log="from our bucket\n"), Phase("SUCCESS")]

    outcome = backend(repo, environ, logs_bucket="gs://team-build-logs/cascade").build(
        request_for(repo, "app"), Recorder(), threading.Event()
    )

    assert outcome.log_tail == ("from our bucket",)
    (build,) = fake.created
    assert build.body["logsBucket"] == "gs://team-build-logs/cascade"
    assert storage.object_names("team-build-logs") == [f"cascade/log-{build.id}.txt"]


def test_polls_that_keep_failing_past_the_builds_deadline_stop_without_cancelling_it(
    repo: Path, fake: FakeCloudBuild, environ: dict[str, str]
) -> None:
    (repo / "cloudbuild" / "app.yaml").write_text(config_text("app", ["MAX_JOBS"], timeout="2s"))
    (repo / "images" / "app" / "image.toml").write_text(
        (repo / "images" / "app" / "image.toml").read_text().replace("timeout_minutes = 180\n", "")
    )
    fake.script = [Phase("WORKING", polls=0)]
    fake.faults.every("get", 1, status(503))
    timing = Timing(
        poll_initial=0.01,
        poll_max=0.05,
        retry_initial=0.01,
        retry_max=0.05,
        transient_limit=0.3,
        deadline_margin=0.0,
    )
    events = Recorder()
    started = time.monotonic()

    with pytest.raises(BackendError) as raised:
        backend(repo, environ, timing=timing).build(request_for(repo, "app"), events, threading.Event())

    assert 1.5 < time.monotonic() - started < 15  # followed until the 2 s timeout had passed
    (build,) = fake.created
    assert f"Cloud Build {build.id} goes on without this run" in str(raised.value)
    assert "a rerun follows it" in str(raised.value)
    assert fake.cancelled == []
    assert sum("Cloud Build does not answer" in message for message in events.messages("state")) == 1


def test_ctrl_c_cancels_the_build_through_faults_on_cancel(
    repo: Path, fake: FakeCloudBuild, environ: dict[str, str]
) -> None:
    fake.script = [Phase("WORKING", polls=0)]
    fake.faults.inject("cancel", status(502), RESET, status(503))
    cancelled = threading.Event()

    def on_event(event: BuildEvent) -> None:
        if event.kind == "state" and event.message.startswith("WORKING"):
            cancelled.set()

    with pytest.raises(BuildError, match="cancelled"):
        backend(repo, environ).build(request_for(repo, "app"), on_event, cancelled)

    assert fake.cancelled == [fake.created[0].id]
    assert fake.faults.pending() == {}


def test_a_persistent_failure_to_submit_is_a_backend_error_and_submits_nothing(
    repo: Path, fake: FakeCloudBuild, environ: dict[str, str], storage: StorageFront
) -> None:
    fake.faults.every("list", 1, status(503))
    timing = Timing(poll_initial=0.01, poll_max=0.01, retry_initial=0.01, retry_max=0.02, transient_limit=0.3)

    with pytest.raises(BackendError, match="503"):
        backend(repo, environ, timing=timing).build(request_for(repo, "app"), Recorder(), threading.Event())
    assert fake.created == []
    assert storage.object_names(BUCKET) == []


def test_ctrl_c_while_a_lost_create_cannot_be_looked_up_cancels_what_it_created(
    repo: Path, fake: FakeCloudBuild, environ: dict[str, str]
) -> None:
    """The create happened but its answer was lost, and the lookups fail until Ctrl-C: no orphan."""
    fake.script = [Phase("WORKING", polls=0)]
    fake.faults.inject("create", LOST)
    cancelled = threading.Event()

    def ctrl_c_after_three_failed_lookups() -> None:
        deadline = time.monotonic() + 10
        while sum(kind == "list" for kind, _ in fake.faults.served) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        fake.faults.clear("list")
        cancelled.set()

    take = fake.faults.take

    def lookups_fail_once_the_create_is_lost(kind: str) -> Fault | None:
        fault = take(kind)
        if kind == "create":  # from the first lookup after the lost create on, lists fail
            fake.faults.every("list", 1, status(503))
            threading.Thread(target=ctrl_c_after_three_failed_lookups, daemon=True).start()
        return fault

    fake.faults.take = lookups_fail_once_the_create_is_lost  # type: ignore[method-assign]

    with pytest.raises(BuildError, match="cancelled"):
        backend(repo, environ).build(request_for(repo, "app"), Recorder(), cancelled)

    (created,) = fake.created
    assert fake.cancelled == [created.id]

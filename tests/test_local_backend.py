"""The local backend on a real engine: what reaches the engine, progress, failures, cancel, push errors."""

from __future__ import annotations

import io
import os
import tarfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port

from imagecascade.core.backend import BuildError, BuildEvent, BuildRequest
from imagecascade.core.build_request import Provenance, build_request, now_rfc3339
from imagecascade.core.plan import Plan, compute_plan
from imagecascade.core.settings import load_settings
from imagecascade.engines.local_backend import LocalBackend
from imagecascade.engines.store import EngineStore
from imagecascade.errors import BackendError

pytestmark = pytest.mark.engine


def make_image(tmp_path: Path, base: str, dockerfile: str, files: dict[str, str] | None = None) -> Plan:
    """A one-image repository whose image has a unique, local-only name."""
    name = f"imagecascade-test-{uuid.uuid4().hex[:10]}"
    folder = tmp_path / "repo" / "images" / name
    folder.mkdir(parents=True)
    (folder / "image.toml").write_text(f'base = "{base}"\n')
    (folder / "Dockerfile").write_text("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n" + dockerfile)
    for relative, text in (files or {}).items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return compute_plan(load_settings(tmp_path / "repo"), use_cache=False)


def request_for(plan: Plan) -> BuildRequest:
    return build_request(plan, plan.images[0], Provenance(revision="test", source=""), now_rfc3339())


@pytest.fixture
def cleanup(engine: Any) -> Iterator[list[str]]:
    """References a test registers here are removed afterwards."""
    references: list[str] = []
    yield references
    for reference in references:
        engine.remove_image(reference, force=True)


def test_the_context_sent_is_exactly_the_hashed_files(
    tmp_path: Path, engine: Any, registry_base: str, cleanup: list[str]
) -> None:
    files = {
        "a.txt": "a\n",
        "sub/b.txt": "b\n",
        "run.sh": "#!/bin/sh\necho hi\n",
        "debug.log": "ignored\n",
        "sub/trace.log": "ignored\n",
        ".dockerignore": "**/*.log\n",
    }
    plan = make_image(tmp_path, registry_base, "COPY . /ctx/\n", files)
    folder = plan.images[0].spec.folder
    os.chmod(folder / "run.sh", 0o755)
    (folder / "empty").mkdir()
    os.symlink("a.txt", folder / "link")
    plan = compute_plan(plan.settings, use_cache=False)  # hash again with the new entries
    image = plan.images[0]
    request = request_for(plan)
    cleanup.extend(request.references)
    LocalBackend(engine).build(request, lambda event: None, threading.Event())
    assert EngineStore(engine).has(image.name, image.tag)
    container = engine.client.containers.create(request.references[0], command=["true"], network_mode="none")
    try:
        stream, _ = container.get_archive("/ctx")
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as archive:
            members = {
                member.name.removeprefix("ctx/"): member
                for member in archive.getmembers()
                if member.name != "ctx"
            }
    finally:
        container.remove(force=True)
    hashed = {entry.path: entry.kind for entry in image.inputs.files}
    assert sorted(name for name, member in members.items() if not member.isdir()) == sorted(
        path for path, kind in hashed.items() if kind != "dir"
    )
    # Folders: the hashed ones (empty ones count) and the parents of what was sent, nothing else.
    parents = {str(Path(path).parent) for path in hashed} - {"."}
    assert {name for name, member in members.items() if member.isdir()} == (
        {path for path, kind in hashed.items() if kind == "dir"} | parents
    )
    assert "debug.log" not in members and "sub/trace.log" not in members
    assert members["run.sh"].mode & 0o111 and not members["a.txt"].mode & 0o111
    assert members["link"].issym() and members["link"].linkname == "a.txt"
    assert members["empty"].isdir()


def test_progress_events_and_a_failure_with_its_log_tail_and_no_tag(
    tmp_path: Path, engine: Any, registry_base: str, cleanup: list[str]
) -> None:
    lines = " && ".join(f"echo line-{index}" for index in range(40))
    plan = make_image(tmp_path, registry_base, f"RUN {lines} && exit 7\n")
    request = request_for(plan)
    cleanup.extend(request.references)
    events: list[BuildEvent] = []
    reason = r"step 3/\d+ \(RUN echo line-0 && .*\) failed: exited with code 7: line-39$"
    with pytest.raises(BuildError, match=reason) as failure:
        LocalBackend(engine).build(request, events.append, threading.Event())
    steps = [(event.step, event.steps) for event in events if event.kind == "step"]
    total = steps[0][1]  # the Dockerfile's 3 steps plus one LABEL step per label
    assert steps == [(number, total) for number in range(1, 4)]
    assert [event.message for event in events if event.kind == "log" and "line-" in event.message] == [
        f"line-{index}" for index in range(40)
    ]
    # The failing step's own last 30 lines: no builder chatter, no RUN script pasted back.
    assert failure.value.log_tail == ("… (10 lines)", *(f"line-{index}" for index in range(10, 40)))
    assert request.log_path is not None
    logged = request.log_path.read_text()
    assert [line for line in logged.splitlines() if line.startswith("line-")] == [
        f"line-{index}" for index in range(40)
    ]
    assert "returned a non-zero code: 7" in logged and "\x1b" not in logged
    assert all(engine.inspect_image(reference) is None for reference in request.references)


def test_a_cancel_stops_the_build_and_leaves_no_tag(
    tmp_path: Path, engine: Any, registry_base: str, cleanup: list[str]
) -> None:
    marker = uuid.uuid4().hex
    plan = make_image(tmp_path, registry_base, f"RUN sleep 30 && echo {marker}\n")
    request = request_for(plan)
    cleanup.extend(request.references)
    cancelled = threading.Event()

    def on_event(event: BuildEvent) -> None:
        if event.kind == "log" and "Running in" in event.message:
            threading.Timer(0.5, cancelled.set).start()

    started = time.monotonic()
    with pytest.raises(BuildError, match="stopped"):
        LocalBackend(engine).build(request, on_event, cancelled)
    assert time.monotonic() - started < 15
    assert all(engine.inspect_image(reference) is None for reference in request.references)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:  # the engine removes the step's container (forcerm)
        # The raw listing: containers.list() inspects every container, other runs' included.
        leftovers = [
            summary for summary in engine.client.api.containers(all=True) if marker in summary["Command"]
        ]
        if not leftovers:
            break
        time.sleep(0.2)
    assert leftovers == []


def test_a_push_to_an_unreachable_registry_is_a_backend_error(
    tmp_path: Path, engine: Any, registry_base: str, cleanup: list[str]
) -> None:
    plan = make_image(tmp_path, registry_base, "LABEL purpose=push-test\n")
    dead = f"127.0.0.1:{free_port()}/nowhere"
    plan = compute_plan(plan.settings.with_overrides(registry=dead), use_cache=False)
    request = request_for(plan)
    cleanup.extend(request.references)
    with pytest.raises(BackendError, match="cannot push"):
        LocalBackend(engine).build(request, lambda event: None, threading.Event())

"""Output fit for terminals and logs: one line for an unreachable engine, quiet early-closed pipes,
why an image is missing, and the exit codes README documents."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import CascadeRepo, git
from image_repo import write_cascade
from test_tasks_core import REPOSITORY, invoke

from imagecascade.core.plan import compute_plan
from imagecascade.core.settings import load_settings
from imagecascade.engines.store import EngineStore, look_up_build_states


def test_an_unreachable_engine_is_reported_once(tmp_path: Path) -> None:
    root = write_cascade(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "invoke", "--search-root", str(REPOSITORY), "plan"],
        cwd=root,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(root), "DOCKER_HOST": f"unix://{tmp_path}/no.sock"},
    )
    assert done.returncode == 3, done.stderr  # an unknown build state is an error for scripts (issue 14)
    output = done.stdout + done.stderr
    assert output.count("cannot connect") == 1
    everything = "a, a1, a1x, a2, other, other-child"
    assert (
        f"build state unknown for {everything}: Docker Engine: cannot connect to unix://{tmp_path}/no.sock"
        in output
    )
    assert "(No such file or directory); start dockerd or set DOCKER_HOST" in output
    assert len(output.splitlines()) <= 12  # the table (6 images) and one line


def test_an_unreachable_registry_is_in_the_json_once_per_image_and_once_overall(tmp_path: Path) -> None:
    root = write_cascade(tmp_path)
    done = invoke(root, "plan", "--json", "--registry", "127.0.0.1:9/arr")
    document = json.loads(done.stdout)
    assert "cannot reach" in document["build_state_error"]
    assert {item["build_state"] for item in document["images"]} == {"unknown"}


@pytest.mark.parametrize("args", [["graph"], ["plan", "--json", "--offline"], ["hashes", "--check"]])
def test_a_reader_that_stops_early_ends_the_command_quietly(tmp_path: Path, args: list[str]) -> None:
    root = write_cascade(tmp_path)
    read, write = os.pipe()
    process = subprocess.Popen(
        [sys.executable, "-m", "invoke", "--search-root", str(REPOSITORY), *args],
        cwd=root,
        stdout=write,
        stderr=subprocess.PIPE,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(root)},
    )
    os.close(write)
    os.close(read)  # the reader is gone before the first line is written
    _, err = process.communicate(timeout=60)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert process.returncode == 0 if args[0] != "hashes" else process.returncode in (0, 1)


def test_head_gets_the_first_line(tmp_path: Path) -> None:
    root = write_cascade(tmp_path)
    command = f"{sys.executable} -m invoke --search-root {REPOSITORY} graph | head -1"
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command], cwd=root, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and done.stderr == "" and done.stdout.strip() == "127.0.0.1:5000/base:1"


def test_readme_documents_every_exit_code() -> None:
    readme = (REPOSITORY / "README.md").read_text()
    table = readme.split("### Exit codes", 1)[1].split("\n## ", 1)[0]
    codes = re.findall(r"^\| `(\d+)` \|", table, flags=re.MULTILINE)
    assert codes == ["0", "1", "2", "3", "4", "130"]


@pytest.mark.engine
def test_why_an_image_is_missing_even_while_the_lock_is_current(cascade_repo: CascadeRepo) -> None:
    registry = cascade_repo.registry
    listed = cascade_repo.invoke("plan")
    assert f"missing: {registry} has no earlier leaf image to compare with" in listed.stdout
    # Built from an uncommitted change: the target's hash is one no commit of the lock records.
    cascade_repo.write("images/leaf/leaf.txt", "leaf draft\n")
    assert cascade_repo.invoke("cascade").returncode == 0
    draft = cascade_repo.plan().get("leaf").tag
    cascade_repo.write("images/leaf/leaf.txt", "leaf 1\n")
    listed = cascade_repo.invoke("plan")
    assert f"missing: {registry} has {draft}, which no committed images.lock.json records" in listed.stdout
    # Recorded, committed and built; then a committed change: plan says what changed since.
    assert cascade_repo.invoke("hashes", "--write").returncode == 0
    cascade_repo.commit()
    assert cascade_repo.invoke("build-leaf").returncode == 0
    old = cascade_repo.plan().get("leaf").tag
    cascade_repo.write("images/leaf/leaf.txt", "leaf 2\n")
    assert cascade_repo.invoke("hashes", "--write").returncode == 0
    recorded = git(cascade_repo.root, "rev-parse", "--short", "HEAD")
    cascade_repo.commit()
    expected = f"{registry} has {old} (images.lock.json at {recorded}): changed leaf.txt"
    listed = cascade_repo.invoke("plan")
    assert listed.returncode == 0, listed.stderr
    assert f"missing: {expected}" in listed.stdout
    dry = cascade_repo.invoke("cascade", "--dry-run")
    assert dry.returncode == 0 and expected in dry.stdout
    document = json.loads(cascade_repo.invoke("plan", "--json").stdout)
    leaf = next(item for item in document["images"] if item["name"] == "leaf")
    assert leaf["locked"] is True and leaf["build_state"] == "missing"
    assert leaf["build_state_detail"] == expected


@pytest.mark.engine
def test_why_in_the_local_engine_uses_its_newest_image(tmp_path: Path, engine: Any, base_image: str) -> None:
    from imagecascade.core.cascade import run_cascade
    from imagecascade.core.decisions import CascadeOptions
    from imagecascade.engines.local_backend import LocalBackend

    name = f"imagecascade-test-{uuid.uuid4().hex[:10]}"
    root = tmp_path / "repo"
    folder = root / "images" / name
    folder.mkdir(parents=True)
    (folder / "image.toml").write_text(f'base = "{base_image}"\n')
    (folder / "Dockerfile").write_text("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY x.txt /x.txt\n")
    (folder / "x.txt").write_text("1\n")
    git(root, "init", "-q", "-b", "main")
    settings = load_settings(root)
    try:
        plan = compute_plan(settings, use_cache=False)
        from imagecascade.core.lock import write_lock

        write_lock(settings.lock_path, plan.lock_entries())
        git(root, "add", "-A")
        git(root, "commit", "-q", "-m", "one")
        store = EngineStore(engine)
        assert run_cascade(plan, store, LocalBackend(engine), CascadeOptions()).ok
        (folder / "x.txt").write_text("2\n")
        changed = compute_plan(settings, use_cache=False)
        states = look_up_build_states(changed, lambda: store)
        state, why = states.states[name]
        commit = git(root, "rev-parse", "--short", "HEAD")
        assert (state, why) == (
            "missing",
            f"the local engine has {plan.images[0].tag} (images.lock.json at {commit}): changed x.txt",
        )
    finally:
        for image in engine.list_images(name):
            for tag in image.tags:
                engine.remove_image(tag, force=True)

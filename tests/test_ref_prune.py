"""`invoke ref` (what a launch job needs) and `invoke prune` (what every change leaves behind)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import CascadeRepo
from image_repo import write_cascade
from test_tasks_core import invoke

from imagecascade.engines.registry import RegistryClient

pytestmark = pytest.mark.engine


def test_ref_prints_the_reference_of_a_built_image_and_exit_4_when_not_built(
    cascade_repo: CascadeRepo,
) -> None:
    tag = cascade_repo.plan().get("leaf").tag
    missing = cascade_repo.invoke("ref", "leaf")
    assert missing.returncode == 4 and missing.stdout == ""
    assert f"{cascade_repo.registry}/leaf:{tag} is not built in {cascade_repo.registry}" in missing.stderr
    assert cascade_repo.invoke("cascade").returncode == 0
    done = cascade_repo.invoke("ref", "leaf")
    assert done.returncode == 0 and done.stdout == f"{cascade_repo.registry}/leaf:{tag}\n"
    pinned = cascade_repo.invoke("ref", "leaf", "--digest")
    digest = RegistryClient().manifest_digest(f"{cascade_repo.registry}/leaf", tag)
    assert pinned.returncode == 0 and pinned.stdout == f"{cascade_repo.registry}/leaf@{digest}\n"
    # What --digest prints is what the registry serves under that name.
    assert digest is not None and digest.startswith("sha256:")


def test_ref_json_lists_every_image(cascade_repo: CascadeRepo) -> None:
    assert cascade_repo.invoke("build-root").returncode == 0
    done = cascade_repo.invoke("ref", "--json", "--digest")
    assert done.returncode == 4, done.stderr  # mid, leaf and other are not built
    document = json.loads(done.stdout)
    assert [item["name"] for item in document] == ["root", "mid", "leaf", "other"]
    by_name = {item["name"]: item for item in document}
    assert by_name["root"]["built"] is True and by_name["root"]["digest"].startswith("sha256:")
    assert by_name["mid"] == {
        "name": "mid",
        "reference": f"{cascade_repo.registry}/mid:{cascade_repo.plan().get('mid').tag}",
        "built": False,
        "digest": None,
    }


def test_ref_bad_input(tmp_path: Path) -> None:
    root = write_cascade(tmp_path)
    unknown = invoke(root, "ref", "nope", "--registry", "127.0.0.1:9/x")
    assert unknown.returncode == 2 and unknown.stderr.startswith("error: no such image: nope")
    nothing = invoke(root, "ref")
    assert nothing.returncode == 2 and "invoke ref IMAGE" in nothing.stderr


def _local(repo: CascadeRepo, name: str) -> set[str]:
    return {tag for tag in repo.local_references() if tag.startswith(f"{repo.registry}/{name}:")}


def test_prune_keeps_the_current_and_the_newest_earlier_images_and_nothing_else(
    cascade_repo: CascadeRepo,
) -> None:
    engine = cascade_repo.engine
    tags = []
    for version in range(4):  # four hashes of `leaf`, oldest first
        cascade_repo.write("images/leaf/leaf.txt", f"leaf {version}\n")
        assert cascade_repo.invoke("build-leaf", "--with-parents").returncode == 0
        tags.append(cascade_repo.plan().get("leaf").tag)
    cascade_repo.write("images/leaf/leaf.txt", "leaf 1\n")  # back to the second version: current
    # Not ours: an image without our labels tagged in leaf's repository, and another tag of an old one.
    foreign = f"{cascade_repo.registry}/leaf:hand-made"
    engine.tag_image(engine.inspect_image(f"{cascade_repo.registry}/upstream:stable").id, foreign)
    elsewhere = f"{cascade_repo.registry}/elsewhere:kept"
    engine.tag_image(engine.inspect_image(f"{cascade_repo.registry}/leaf:{tags[0]}").id, elsewhere)

    dry = cascade_repo.invoke("prune", "--keep", "1", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"{cascade_repo.registry}/leaf:{tags[1]}" in _line(dry.stdout, "keep", tags[1])
    assert "current" in _line(dry.stdout, "keep", tags[1])
    assert "kept" in _line(dry.stdout, "keep", tags[3])  # the newest earlier one (and :latest)
    assert _line(dry.stdout, "would remove", tags[0]) and _line(dry.stdout, "would remove", tags[2])
    before = _local(cascade_repo, "leaf")
    assert _local(cascade_repo, "leaf") == before  # a dry run removes nothing

    done = cascade_repo.invoke("prune", "--keep", "1")
    assert done.returncode == 0, done.stderr
    assert _local(cascade_repo, "leaf") == {
        f"{cascade_repo.registry}/leaf:{tags[1]}",
        f"{cascade_repo.registry}/leaf:{tags[3]}",
        f"{cascade_repo.registry}/leaf:latest",
        foreign,
    }
    assert engine.inspect_image(elsewhere) is not None  # only its leaf tags went
    # Parents and the other lineage are untouched; a registry is never touched.
    assert _local(cascade_repo, "root") and _local(cascade_repo, "mid")
    assert RegistryClient().manifest_digest(f"{cascade_repo.registry}/leaf", tags[0]) is not None

    again = cascade_repo.invoke("prune", "--keep", "0")
    assert again.returncode == 0
    assert _local(cascade_repo, "leaf") == {f"{cascade_repo.registry}/leaf:{tags[1]}", foreign}


def test_prune_keeps_an_image_a_container_uses(cascade_repo: CascadeRepo) -> None:
    engine: Any = cascade_repo.engine
    assert cascade_repo.invoke("build-root").returncode == 0
    old = f"{cascade_repo.registry}/root:{cascade_repo.plan().get('root').tag}"
    cascade_repo.write("images/root/root.txt", "root 2\n")
    assert cascade_repo.invoke("build-root").returncode == 0
    container = engine.client.containers.create(old, command=["true"], network_mode="none")
    try:
        done = cascade_repo.invoke("prune", "--keep", "0")
        assert done.returncode == 0, done.stderr
        assert _line(done.stdout, "kept", old.rsplit(":", 1)[1])
        assert engine.inspect_image(old) is not None
    finally:
        container.remove(force=True)


def _line(output: str, start: str, tag: str) -> str:
    return next((line for line in output.splitlines() if line.startswith(start) and tag in line), "")

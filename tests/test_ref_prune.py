"""`invoke ref` (what a launch job needs) and `invoke prune` (what every change leaves behind)."""

from __future__ import annotations

import json
import time
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
    assert cascade_repo.invoke("build-leaf", "--with-parents").returncode == 0
    done = cascade_repo.invoke("ref", "leaf")
    assert done.returncode == 0 and done.stdout == f"{cascade_repo.registry}/leaf:{tag}\n"
    pinned = cascade_repo.invoke("ref", "leaf", "--digest")
    digest = RegistryClient().manifest_digest(f"{cascade_repo.registry}/leaf", tag)
    # What --digest prints is what the registry serves under that name.
    assert digest is not None and digest.startswith("sha256:")
    assert pinned.returncode == 0 and pinned.stdout == f"{cascade_repo.registry}/leaf@{digest}\n"

    listed = cascade_repo.invoke("ref", "--json", "--digest")
    assert listed.returncode == 4, listed.stderr  # `other` is not built
    document = json.loads(listed.stdout)
    assert [item["name"] for item in document] == ["root", "mid", "leaf", "other"]
    by_name = {item["name"]: item for item in document}
    assert by_name["leaf"] == {
        "name": "leaf",
        "reference": f"{cascade_repo.registry}/leaf:{tag}",
        "built": True,
        "digest": digest,
    }
    assert by_name["other"] == {
        "name": "other",
        "reference": f"{cascade_repo.registry}/other:{cascade_repo.plan().get('other').tag}",
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
    registry = cascade_repo.registry
    tags = []
    for version in range(4):  # four hashes of `leaf`, oldest first (root and mid: built once)
        cascade_repo.write("images/leaf/leaf.txt", f"leaf {version}\n")
        assert cascade_repo.invoke("build-leaf", "--with-parents").returncode == 0
        tags.append(cascade_repo.plan().get("leaf").tag)
        time.sleep(1.1)  # creation times are in seconds
    # Not ours: an image without our labels tagged in leaf's repository, and another tag of an old one.
    foreign = f"{registry}/leaf:hand-made"
    engine.tag_image(engine.inspect_image(f"{registry}/upstream:stable").id, foreign)
    elsewhere = f"{registry}/elsewhere:kept"
    engine.tag_image(engine.inspect_image(f"{registry}/leaf:{tags[1]}").id, elsewhere)
    before = _local(cascade_repo, "leaf")
    assert before == {*(f"{registry}/leaf:{tag}" for tag in tags), f"{registry}/leaf:latest", foreign}

    dry = cascade_repo.invoke("prune", "--keep", "1", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith("rule: keep the current image, ")
    assert _line(dry.stdout, "keep", tags[3]).endswith(": current")  # with :latest
    assert _line(dry.stdout, "keep", tags[2]).endswith(": one of the 1 newest earlier images (--keep 1)")
    for old in tags[:2]:
        assert _line(dry.stdout, "would remove", old).endswith(
            ": superseded: no checkout, branch or later build here uses it"
        )
    assert not _line(dry.stdout, "", "hand-made")  # not labelled by this tool: not even considered
    assert _local(cascade_repo, "leaf") == before  # a dry run removes nothing

    done = cascade_repo.invoke("prune", "--keep", "1")
    assert done.returncode == 0, done.stderr
    assert _line(done.stdout, "removed", tags[0]) and _line(done.stdout, "removed", tags[1])
    assert "removed 2 images (up to " in done.stdout
    assert _local(cascade_repo, "leaf") == before - {f"{registry}/leaf:{tag}" for tag in tags[:2]}
    assert engine.inspect_image(elsewhere) is not None  # only its leaf tag went
    # The parents are untouched; a registry is never touched.
    assert _local(cascade_repo, "root") and _local(cascade_repo, "mid")
    assert RegistryClient().manifest_digest(f"{registry}/leaf", tags[1]) is not None

    again = cascade_repo.invoke("prune", "--keep", "0")
    assert again.returncode == 0
    assert _local(cascade_repo, "leaf") == {f"{registry}/leaf:{tags[3]}", f"{registry}/leaf:latest", foreign}


def test_prune_keeps_images_built_after_the_current_one_until_the_next_build(
    cascade_repo: CascadeRepo,
) -> None:
    """An image newer than this checkout's current one may be another checkout's work: kept."""
    registry = cascade_repo.registry
    tags = []
    for version in range(2):
        cascade_repo.write("images/leaf/leaf.txt", f"leaf {version}\n")
        assert cascade_repo.invoke("build-leaf", "--with-parents").returncode == 0
        tags.append(cascade_repo.plan().get("leaf").tag)
        time.sleep(1.1)
    cascade_repo.write("images/leaf/leaf.txt", "leaf 0\n")  # back to the first version: current
    kept = cascade_repo.invoke("prune", "--keep", "0")
    assert kept.returncode == 0, kept.stderr
    assert _line(kept.stdout, "keep", tags[1]).endswith(
        ": built after this checkout's current image (another checkout's, or a change undone since)"
    )
    assert f"{registry}/leaf:{tags[1]}" in _local(cascade_repo, "leaf")
    cascade_repo.write("images/leaf/leaf.txt", "leaf 2\n")  # a new current, built last
    assert cascade_repo.invoke("build-leaf").returncode == 0
    done = cascade_repo.invoke("prune", "--keep", "0")
    assert _line(done.stdout, "removed", tags[0]) and _line(done.stdout, "removed", tags[1])
    assert _local(cascade_repo, "leaf") == {
        f"{registry}/leaf:{cascade_repo.plan().get('leaf').tag}",
        f"{registry}/leaf:latest",
    }


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

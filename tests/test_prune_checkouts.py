"""`invoke prune` with other checkouts of the same repository on the same engine: git worktrees,
branches, a second clone, and the untagged images builds leave."""

from __future__ import annotations

import dataclasses
import datetime
import subprocess
import time
from pathlib import Path

import pytest
from conftest import CascadeRepo, git

from imagecascade.engines.prune import prune_candidates, remove

pytestmark = pytest.mark.engine


def _line(output: str, start: str, tag: str) -> str:
    return next((line for line in output.splitlines() if line.startswith(start) and tag in line), "")


def _leaf_tags(repo: CascadeRepo) -> set[str]:
    prefix = f"{repo.registry}/leaf:"
    return {ref.removeprefix(prefix) for ref in repo.local_references() if ref.startswith(prefix)}


@pytest.fixture
def cache(tmp_path: Path) -> dict[str, str]:
    """This test's own list of checkouts that built here (XDG_CACHE_HOME), for every invoke."""
    return {"XDG_CACHE_HOME": str(tmp_path / "xdg-cache")}


def _build_leaf(repo: CascadeRepo, text: str, env: dict[str, str]) -> str:
    """Write leaf.txt, build leaf (and what it needs); its hash tag. Waits a second afterwards:
    the engine's creation times are in seconds."""
    repo.write("images/leaf/leaf.txt", text)
    done = repo.invoke("build-leaf", "--with-parents", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    time.sleep(1.1)
    return str(repo.plan().get("leaf").tag)


def _commit_with_lock(repo: CascadeRepo, message: str) -> None:
    assert repo.invoke("hashes", "--write").returncode == 0
    git(repo.root, "add", "-A")
    git(repo.root, "commit", "-q", "-m", message)


def test_another_worktrees_images_survive_prune_while_it_or_a_branch_uses_them(
    cascade_repo: CascadeRepo, tmp_path: Path, cache: dict[str, str]
) -> None:
    main = cascade_repo
    _commit_with_lock(main, "lock")
    other = dataclasses.replace(main, root=tmp_path / "feature")
    git(main.root, "worktree", "add", "-q", "-b", "feature", str(other.root))
    feature = _build_leaf(other, "leaf on feature\n", cache)
    _commit_with_lock(other, "feature leaf")  # its lock and the branch tip record `feature`
    dirty = _build_leaf(other, "leaf on feature, not committed\n", cache)  # its current one now
    current = _build_leaf(main, "leaf on main\n", cache)
    here = other.root.resolve()

    dry = main.invoke("prune", "--keep", "0", "--dry-run", env=cache)
    assert dry.returncode == 0, dry.stderr
    assert _line(dry.stdout, "keep", current).endswith(": current")
    assert _line(dry.stdout, "keep", dirty).endswith(f": current in worktree {here}")
    assert _line(dry.stdout, "keep", feature).endswith(
        f": recorded in the images.lock.json of worktree {here}"
    )
    done = main.invoke("prune", "--keep", "0", env=cache)
    assert done.returncode == 0, done.stderr
    assert {current, feature, dirty} <= _leaf_tags(main)

    # The worktree goes: its branch still records `feature`; `dirty` is older than a new current.
    git(main.root, "worktree", "remove", "--force", str(other.root))
    newer = _build_leaf(main, "leaf on main, again\n", cache)
    done = main.invoke("prune", "--keep", "0", env=cache)
    assert _line(done.stdout, "keep", feature).endswith(
        ": recorded in the images.lock.json of branch feature"
    )
    assert _line(done.stdout, "removed", dirty) and _line(done.stdout, "removed", current)
    assert _leaf_tags(main) == {newer, feature, "latest"}

    git(main.root, "branch", "-q", "-D", "feature")
    done = main.invoke("prune", "--keep", "0", env=cache)
    assert _line(done.stdout, "removed", feature)
    assert _leaf_tags(main) == {newer, "latest"}


def test_a_second_clones_images_survive_prune(
    cascade_repo: CascadeRepo, tmp_path: Path, cache: dict[str, str]
) -> None:
    main = cascade_repo
    clone = dataclasses.replace(main, root=tmp_path / "clone")
    subprocess.run(["git", "clone", "-q", str(main.root), str(clone.root)], check=True)
    theirs = _build_leaf(clone, "leaf in the clone, not committed\n", cache)  # built first
    current = _build_leaf(main, "leaf on main\n", cache)
    there = clone.root.resolve()

    done = main.invoke("prune", "--keep", "0", env=cache)
    assert done.returncode == 0, done.stderr
    assert _line(done.stdout, "keep", theirs).endswith(f": current in checkout {there}")
    assert {theirs, current} <= _leaf_tags(main)

    # A clone that cannot be read now: what was built from its HEAD stays.
    clone.write("images/leaf/image.toml", "parent = [\n")
    done = main.invoke("prune", "--keep", "0", env=cache)
    assert f": built from the HEAD of checkout {there}, whose images cannot be read now (" in _line(
        done.stdout, "keep", theirs
    )

    # A clone this prune does not know of (as from another machine): a commit this repository lacks.
    git(clone.root, "checkout", "--", "images/leaf/image.toml")
    clone.write("images/leaf/leaf.txt", "leaf in the clone, committed\n")
    git(clone.root, "commit", "-q", "-am", "the clone's leaf")
    committed = _build_leaf(clone, "leaf in the clone, committed\n", cache)
    newest = _build_leaf(main, "leaf on main, again\n", cache)
    unknown = {"XDG_CACHE_HOME": str(tmp_path / "another-machine")}
    done = main.invoke("prune", "--keep", "0", env=unknown)
    commit = git(clone.root, "rev-parse", "HEAD")
    assert _line(done.stdout, "keep", committed).endswith(
        f": built from commit {commit[:12]}, which this repository does not have (another clone's)"
    )
    assert _line(done.stdout, "removed", theirs) and _line(done.stdout, "removed", current)
    assert _leaf_tags(main) == {committed, newest, "latest"}


def test_untagged_images_of_this_repository_are_removed_once_no_build_can_be_about_to_tag_them(
    cascade_repo: CascadeRepo, cache: dict[str, str]
) -> None:
    engine = cascade_repo.engine
    _build_leaf(cascade_repo, "leaf\n", cache)
    first = engine.inspect_image(f"{cascade_repo.registry}/leaf:latest").id
    forced = cascade_repo.invoke("build-leaf", "--force", env=cache)  # a new image takes the tags
    assert forced.returncode == 0, forced.stdout + forced.stderr
    try:
        assert engine.inspect_image(first).tags == ()
        fresh = cascade_repo.invoke("prune", "--keep", "0", env=cache)
        assert fresh.returncode == 0, fresh.stderr
        line = _line(fresh.stdout, "keep", f"untagged leaf image {first.removeprefix('sha256:')[:12]}")
        assert "untagged, but created" in line and "a running build may be about to tag it" in line
        assert engine.inspect_image(first) is not None

        # Ten minutes later (as the library is told): removed.
        plan = cascade_repo.plan()
        later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=11)
        candidates = prune_candidates(plan, engine, 0, now=later, environ=cache)
        untagged = [candidate for candidate in candidates if candidate.image_id == first]
        assert [(item.verdict, item.reason) for item in untagged] == [
            ("remove", "untagged: left by a failed, stopped or repeated build")
        ]
        assert all(candidate.verdict != "remove" for candidate in candidates if candidate.tags)
        assert remove(engine, untagged[0]) == ""
        assert engine.inspect_image(first) is None
        assert engine.inspect_image(f"{cascade_repo.registry}/leaf:latest") is not None
    finally:
        engine.remove_image(first, force=True)

"""Other checkouts of the repository, read from git and from the list of checkouts that built here."""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import git
from image_repo import write_cascade

from imagecascade.core.checkouts import checkouts_file, read_checkouts, register_checkout, revision_commit
from imagecascade.core.plan import compute_plan
from imagecascade.core.settings import load_settings


def test_what_git_and_the_list_of_checkouts_say_about_the_other_checkouts(tmp_path: Path) -> None:
    environ = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    outside = read_checkouts(tmp_path, environ)
    assert not outside.in_git and outside.recorded == {} and outside.others == ()
    root = tmp_path / "repo"
    write_cascade(root)
    git(root, "init", "-q", "-b", "main")
    hashes = ["a" * 64, "b" * 64, "c" * 64]
    (root / "images.lock.json").write_text(f'{{"images": {{"x": {{"hash": "{hashes[0]}"}}}}}}\n')
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "one")
    git(root, "branch", "old")
    (root / "images.lock.json").write_text(f'{{"images": {{"x": {{"hash": "{hashes[1]}"}}}}}}\n')
    git(root, "commit", "-q", "-am", "two")
    tree = tmp_path / "tree"
    git(root, "worktree", "add", "-q", "-b", "side", str(tree))
    # A lock with merge-conflict markers still says which hashes it records.
    (tree / "images.lock.json").write_text(f'<<<<<<< ours\n"hash": "{hashes[2]}"\n=======\n>>>>>>> theirs\n')
    clone, stranger = tmp_path / "clone", tmp_path / "stranger"
    subprocess.run(["git", "clone", "-q", str(root), str(clone)], check=True)
    write_cascade(stranger)  # another repository: no root commit in common
    git(stranger, "init", "-q", "-b", "main")
    git(stranger, "add", "-A")
    git(stranger, "commit", "-q", "-m", "unrelated")
    for checkout in (clone, stranger, root, tmp_path / "gone"):
        register_checkout(checkout, environ)
    register_checkout(clone, environ)  # once
    listed = checkouts_file(environ).read_text().splitlines()
    assert listed == [
        str(clone.resolve()),
        str(stranger.resolve()),
        str(root.resolve()),
        str(tmp_path / "gone"),
    ]
    register_checkout(tmp_path, environ)  # a registration drops folders that are gone
    assert str(tmp_path / "gone") not in checkouts_file(environ).read_text().splitlines()

    found = read_checkouts(root, environ)
    assert found.in_git
    assert [(str(other), other.head) for other in found.others] == [
        (f"worktree {tree.resolve()}", git(root, "rev-parse", "HEAD")),
        (f"checkout {clone.resolve()}", git(root, "rev-parse", "HEAD")),
    ]
    plan = compute_plan(load_settings(root), use_cache=False, ignore_broken_lock=True)
    assert found.others[1].current == frozenset(image.hash for image in plan.images)
    assert found.recorded == {
        hashes[2]: f"worktree {tree.resolve()}",
        hashes[1]: f"checkout {clone.resolve()}",  # also at the tip of `main`: checkouts come first
        hashes[0]: "branch old",
    }
    assert (
        revision_commit("0123456789abcdef0123456789abcdef01234567-dirty")
        == "0123456789abcdef0123456789abcdef01234567"
    )
    assert revision_commit("unknown") == ""

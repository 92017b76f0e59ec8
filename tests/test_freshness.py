"""Freshness hashes: what moves them, what does not, and how changes cascade."""

from __future__ import annotations

import io
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from image_repo import write_cascade, write_image

from imagecascade.core.digest_cache import RACY_WINDOW_NS, DigestCache
from imagecascade.core.hook import write_hashes
from imagecascade.core.plan import compute_plan, stale_lines
from imagecascade.core.settings import load_settings


def _hashes(root: Path, use_cache: bool = True) -> dict[str, str]:
    plan = compute_plan(load_settings(root), use_cache=use_cache)
    return {image.name: image.hash for image in plan.images}


def test_same_tree_at_two_paths_gives_the_same_hashes(tmp_path: Path) -> None:
    first = write_cascade(tmp_path / "one")
    (first / "images/a/run.sh").write_text("#!/bin/sh\n")
    (first / "images/a/run.sh").chmod(0o755)
    (first / "images/a/empty").mkdir()
    (first / "images/a/link").symlink_to("run.sh")
    second = tmp_path / "elsewhere" / "two"
    shutil.copytree(first, second, symlinks=True)
    assert _hashes(first) == _hashes(second)
    assert _hashes(first, use_cache=False) == _hashes(first)


def _touch(root: Path) -> None:
    path = root / "images/a/a.txt"
    os.utime(path, (time.time() + 100, time.time() + 100))


def _chmod_x(root: Path) -> None:
    (root / "images/a/a.txt").chmod(0o755)


def _rename(root: Path) -> None:
    (root / "images/a/a.txt").rename(root / "images/a/b.txt")


def _content(root: Path) -> None:
    (root / "images/a/a.txt").write_text("A")


def _build_arg(root: Path) -> None:
    (root / "images/a/image.toml").write_text('base = "127.0.0.1:5000/base:1"\n[build_args]\nX = "1"\n')


def _platform(root: Path) -> None:
    (root / "images/a/image.toml").write_text('base = "127.0.0.1:5000/base:1"\nplatform = "linux/arm64"\n')


def _base(root: Path) -> None:
    (root / "images/a/image.toml").write_text('base = "127.0.0.1:5000/base:2"\n')


def _dockerfile(root: Path) -> None:
    with (root / "images/a/Dockerfile").open("a") as handle:
        handle.write("RUN true\n")


def _ignored_file(root: Path) -> None:
    (root / "images/a/debug.log").write_text("noise")


def _empty_folder(root: Path) -> None:
    (root / "images/a/empty").mkdir()


def _symlink(root: Path) -> None:
    (root / "images/a/link").symlink_to("a.txt")


def _description(root: Path) -> None:
    (root / "images/a/image.toml").write_text('base = "127.0.0.1:5000/base:1"\ndescription = "new words"\n')


def _smoke_section(root: Path) -> None:
    (root / "images/a/image.toml").write_text(
        'base = "127.0.0.1:5000/base:1"\n[cloudbuild]\ndisk_size_gb = 200\n'
    )


CHANGES: list[tuple[str, Callable[[Path], None], bool, str]] = [
    ("mtime only", _touch, False, ""),
    ("description only", _description, False, ""),
    ("cloudbuild options only", _smoke_section, False, ""),
    ("dockerignored file added", _ignored_file, False, ""),
    ("exec bit", _chmod_x, True, "mode changed a.txt"),
    ("rename", _rename, True, "added b.txt; removed a.txt"),
    ("content", _content, True, "changed a.txt"),
    ("build arg", _build_arg, True, "build arg X added ('1')"),
    ("platform", _platform, True, "platform linux/amd64 → linux/arm64"),
    ("base", _base, True, "base 127.0.0.1:5000/base:1 → 127.0.0.1:5000/base:2"),
    ("Dockerfile", _dockerfile, True, "Dockerfile changed"),
    ("empty folder", _empty_folder, True, "added empty"),
    ("symlink", _symlink, True, "added link"),
]


@pytest.mark.parametrize(("case", "change", "moves", "reason"), CHANGES, ids=[c[0] for c in CHANGES])
def test_what_moves_the_hash(
    tmp_path: Path, case: str, change: Callable[[Path], None], moves: bool, reason: str
) -> None:
    root = write_cascade(tmp_path)
    write_hashes(root, io.StringIO())
    before = _hashes(root)
    change(root)
    plan = compute_plan(load_settings(root))
    after = {image.name: image.hash for image in plan.images}
    if not moves:
        assert after == before, case
        assert plan.lock_is_current
        return
    assert after["a"] != before["a"]
    # every descendant moves, and nothing else
    assert {name for name in after if after[name] != before[name]} == {"a", "a1", "a2", "a1x"}
    assert "; ".join(plan.get("a").reasons) == reason
    assert plan.get("a1").reasons == ("parent a changed",)
    assert plan.get("a1x").reasons == ("parent a1 changed",)
    assert plan.get("other").locked and plan.get("other-child").locked


def test_leaf_change_moves_only_the_leaf(tmp_path: Path) -> None:
    root = write_cascade(tmp_path)
    before = _hashes(root)
    (root / "images/a1x/leaf.txt").write_text("new leaf")
    after = _hashes(root)
    assert {name for name in after if after[name] != before[name]} == {"a1x"}


def test_middle_change_moves_its_subtree_not_its_sibling(tmp_path: Path) -> None:
    root = write_cascade(tmp_path)
    before = _hashes(root)
    (root / "images/a1/a1.txt").write_text("changed")
    after = _hashes(root)
    assert {name for name in after if after[name] != before[name]} == {"a1", "a1x"}


def test_stale_lines_name_old_and_new_hash_and_reason(tmp_path: Path) -> None:
    root = write_cascade(tmp_path)
    write_hashes(root, io.StringIO())
    old = _hashes(root)["a1x"]
    (root / "images/a1x/leaf.txt").write_text("new")
    lines = stale_lines(compute_plan(load_settings(root)))
    new = _hashes(root)["a1x"]
    assert lines == [f"a1x: {old[:16]} → {new[:16]}: changed leaf.txt"]


def test_untracked_and_uncommitted_files_count(tmp_path: Path) -> None:
    root = write_cascade(tmp_path)
    before = _hashes(root)["a"]
    (root / "images/a/untracked.txt").write_text("x")
    assert _hashes(root)["a"] != before


def test_removed_image_makes_the_lock_stale(tmp_path: Path) -> None:
    root = write_cascade(tmp_path)
    write_hashes(root, io.StringIO())
    shutil.rmtree(root / "images/other-child")
    plan = compute_plan(load_settings(root))
    assert stale_lines(plan) == ["other-child: recorded in the lock file but images/other-child is gone"]


def test_lock_file_is_stable_and_sorted(tmp_path: Path) -> None:
    root = write_cascade(tmp_path)
    write_hashes(root, io.StringIO())
    first = (root / "images.lock.json").read_text()
    write_hashes(root, io.StringIO())
    assert (root / "images.lock.json").read_text() == first
    assert '"parent": "a"' in first and '"a.txt": "file ' in first


_names = st.sampled_from(["a", "b", "c", "d.txt", "e.sh"])
_trees = st.dictionaries(
    st.lists(_names, min_size=1, max_size=3).map("/".join), st.binary(max_size=64), min_size=1, max_size=10
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=_trees, data=st.data())
def test_random_trees_hash_alike_at_two_paths_and_any_content_change_moves_it(
    tmp_path_factory: pytest.TempPathFactory, tree: dict[str, bytes], data: st.DataObject
) -> None:
    files: dict[str, bytes] = {}
    for path, content in tree.items():
        if any(path.startswith(o + "/") or o.startswith(path + "/") for o in files):
            continue
        files[path] = content
    one = tmp_path_factory.mktemp("one")
    two = tmp_path_factory.mktemp("two") / "nested"
    for root in (one, two):
        write_image(root, "img", 'base = "x:1"\n', files={f"ctx/{p}": c for p, c in files.items()})
    assert _hashes(one, use_cache=False) == _hashes(two, use_cache=False)
    victim = data.draw(st.sampled_from(sorted(files)))
    (two / "images/img/ctx" / victim).write_bytes(files[victim] + b"!")
    assert _hashes(one, use_cache=False) != _hashes(two, use_cache=False)


def test_digest_cache_reuses_old_entries_and_sees_rewrites(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"one")
    old = time.time() - 60
    os.utime(path, (old, old))
    location = tmp_path / "cache.json"
    cache = DigestCache(location)
    first = cache.digest(str(path), path.stat())
    cache.save()
    reread = DigestCache(location)
    assert reread.lookup(str(path), path.stat()) == first
    # same size, same mtime, different content: ctime gives it away
    path.write_bytes(b"two")
    os.utime(path, (old, old))
    assert reread.lookup(str(path), path.stat()) is None
    assert reread.digest(str(path), path.stat()) != first


def test_digest_cache_does_not_keep_racily_clean_entries(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"fresh")
    assert time.time_ns() - path.stat().st_mtime_ns < RACY_WINDOW_NS
    location = tmp_path / "cache.json"
    cache = DigestCache(location)
    cache.digest(str(path), path.stat())
    cache.save()
    assert DigestCache(location).lookup(str(path), path.stat()) is None

"""The context we hash and send is what Docker would send after .dockerignore."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest
from docker.utils.build import exclude_paths
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imagecascade.core.context import ContextEntry, scan_context, write_context_tar
from imagecascade.errors import ConfigError

TREE = [
    "Dockerfile",
    "app.py",
    "README.md",
    "notes.txt",
    "x.pyc",
    "src/pkg/__init__.py",
    "src/pkg/mod.pyc",
    "src/pkg/data/big.bin",
    "src/keep.txt",
    "build/out.o",
    "build/sub/out2.o",
    "docs/a.md",
    "docs/b.txt",
    ".git/HEAD",
    "deep/a/b/c/x.txt",
]

PATTERN_CASES = [
    [],
    ["*.pyc"],
    ["**/*.pyc"],
    ["build"],
    ["build/", "!build/sub"],
    ["src", "!src/keep.txt"],
    ["docs/*.md"],
    ["*", "!app.py"],
    ["*", "!src", "src/pkg/data"],
    ["/notes.txt", "# comment", "", "  README.md  "],
    ["deep/**/x.txt"],
    ["**"],
    ["Dockerfile"],
    [".git", "*.md", "!docs/a.md"],
    ["src/pkg/*", "!src/pkg/__init__.py"],
    ["?pp.py", "[a-c]*"],
]


def _make_tree(root: Path, paths: list[str]) -> None:
    for relative in paths:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(relative)


def _ours(root: Path) -> set[str]:
    entries = scan_context(root, root / "Dockerfile")
    return {entry.path for entry in entries if entry.kind != "dir"}


def _dockers(root: Path, patterns: list[str]) -> set[str]:
    found = exclude_paths(str(root), list(patterns), "Dockerfile")
    return {path for path in found if (root / path).is_file()}


@pytest.mark.parametrize("patterns", PATTERN_CASES, ids=lambda p: "|".join(p) or "none")
def test_same_files_as_the_docker_sdk(tmp_path: Path, patterns: list[str]) -> None:
    _make_tree(tmp_path, TREE)
    (tmp_path / ".dockerignore").write_text("\n".join(patterns) + "\n")
    assert _ours(tmp_path) == _dockers(tmp_path, patterns) | {".dockerignore"}


_segment = st.sampled_from(["a", "b", "c.txt", "d.py", "e"])
_paths = st.lists(st.lists(_segment, min_size=1, max_size=3).map("/".join), min_size=1, max_size=12)
_pattern = st.tuples(
    st.booleans(),
    st.lists(st.sampled_from(["a", "b", "*", "**", "*.txt", "c.txt", "?", "e"]), min_size=1, max_size=3),
).map(lambda item: ("!" if item[0] else "") + "/".join(item[1]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(paths=_paths, patterns=st.lists(_pattern, max_size=4))
def test_random_trees_and_patterns_agree_with_the_docker_sdk(
    tmp_path_factory: pytest.TempPathFactory, paths: list[str], patterns: list[str]
) -> None:
    root = tmp_path_factory.mktemp("ctx")
    files = []
    for path in paths:
        # A path cannot be both a file and a folder: keep the first of any clash.
        if any(path.startswith(other + "/") or other.startswith(path + "/") for other in files):
            continue
        files.append(path)
    _make_tree(root, [*files, "Dockerfile"])
    (root / ".dockerignore").write_text("\n".join(patterns) + "\n")
    assert _ours(root) == _dockers(root, patterns) | {".dockerignore"}


def test_dockerfile_specific_ignore_file_replaces_the_context_one(tmp_path: Path) -> None:
    _make_tree(tmp_path, ["Dockerfile", "a.txt", "b.txt"])
    (tmp_path / ".dockerignore").write_text("a.txt\n")
    (tmp_path / "Dockerfile.dockerignore").write_text("b.txt\n")
    assert _ours(tmp_path) == {"Dockerfile", "a.txt", "Dockerfile.dockerignore", ".dockerignore"}


def test_entries_record_exec_bit_symlinks_and_empty_folders(tmp_path: Path) -> None:
    _make_tree(tmp_path, ["Dockerfile", "run.sh", "full/x"])
    (tmp_path / "run.sh").chmod(0o755)
    (tmp_path / "empty").mkdir()
    (tmp_path / "link").symlink_to("run.sh")
    entries = {entry.path: entry for entry in scan_context(tmp_path, tmp_path / "Dockerfile")}
    assert entries["run.sh"].executable
    assert not entries["Dockerfile"].executable
    assert entries["link"] == ContextEntry("link", "link", digest="run.sh")
    assert entries["empty"].kind == "dir"
    assert "full" not in entries  # a folder with content is implied by its files


def test_tar_holds_exactly_the_entries_with_normalised_metadata(tmp_path: Path) -> None:
    _make_tree(tmp_path, ["Dockerfile", "run.sh", "sub/data.txt", "ignored.log"])
    (tmp_path / ".dockerignore").write_text("*.log\n")
    (tmp_path / "run.sh").chmod(0o750)
    (tmp_path / "empty").mkdir()
    entries = scan_context(tmp_path, tmp_path / "Dockerfile")
    buffer = io.BytesIO()
    name = write_context_tar(tmp_path, tmp_path / "Dockerfile", entries, buffer)
    buffer.seek(0)
    with tarfile.open(fileobj=buffer) as archive:
        members = {member.name: member for member in archive.getmembers()}
    assert name == "Dockerfile"
    assert set(members) == {".dockerignore", "Dockerfile", "run.sh", "sub", "sub/data.txt", "empty"}
    assert members["run.sh"].mode == 0o755
    assert members["sub/data.txt"].mode == 0o644
    assert {member.uid for member in members.values()} == {0}
    assert len({member.mtime for member in members.values()}) == 1


def test_tar_refuses_a_file_changed_after_hashing(tmp_path: Path) -> None:
    _make_tree(tmp_path, ["Dockerfile", "a.txt"])
    entries = scan_context(tmp_path, tmp_path / "Dockerfile")
    (tmp_path / "a.txt").write_text("changed")
    with pytest.raises(ConfigError, match="changed after its freshness hash"):
        write_context_tar(tmp_path, tmp_path / "Dockerfile", entries, io.BytesIO())


def test_dockerfile_outside_the_context_travels_as_a_side_file(tmp_path: Path) -> None:
    context = tmp_path / "ctx"
    _make_tree(context, ["a.txt"])
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM x\n")
    entries = scan_context(context, dockerfile)
    buffer = io.BytesIO()
    name = write_context_tar(context, dockerfile, entries, buffer)
    buffer.seek(0)
    with tarfile.open(fileobj=buffer) as archive:
        assert archive.extractfile(name).read() == b"FROM x\n"  # type: ignore[union-attr]


def test_skip_leaves_out_the_tools_own_cache(tmp_path: Path) -> None:
    _make_tree(tmp_path, ["Dockerfile", ".cache/imagecascade/digests.json"])
    skip = frozenset({os.path.join(tmp_path, ".cache")})
    entries = scan_context(tmp_path, tmp_path / "Dockerfile", skip=skip)
    assert [entry.path for entry in entries] == ["Dockerfile"]

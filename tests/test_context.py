"""The context we hash and the tar we send: every kind of entry, and the Dockerfile left behind.

Which paths are sent is compared with Docker itself in test_dockerignore.py; what reaches an
image, through Docker's builders and through `invoke cascade`, in test_context_engine.py.
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest
from docker_oracle import tar_listing

from imagecascade.core.context import ContextEntry, scan_context
from imagecascade.core.context_tar import SIDE_DOCKERFILE, plan_packing, write_context_tar
from imagecascade.errors import ConfigError


def _make_tree(root: Path, paths: list[str]) -> None:
    for relative in paths:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(relative)


def _tar_members(
    context: Path, dockerfile: Path, **options: object
) -> tuple[str, dict[str, tarfile.TarInfo], bytes]:
    entries = scan_context(context, dockerfile)
    buffer = io.BytesIO()
    name = write_context_tar(context, dockerfile, entries, buffer, **options)  # type: ignore[arg-type]
    with tarfile.open(fileobj=io.BytesIO(buffer.getvalue())) as archive:
        members = {member.name: member for member in archive.getmembers()}
    return name, members, buffer.getvalue()


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


def test_hard_links_are_one_file_and_links_to_it(tmp_path: Path) -> None:
    _make_tree(tmp_path, ["Dockerfile", "b/data", "c"])
    os.link(tmp_path / "b/data", tmp_path / "a")
    os.link(tmp_path / "b/data", tmp_path / "b/z")
    entries = {entry.path: entry for entry in scan_context(tmp_path, tmp_path / "Dockerfile")}
    # The first name in Go's walk order holds the bytes; the others are hard links to it.
    assert entries["a"].kind == "file"
    assert entries["b/data"] == ContextEntry("b/data", "hardlink", False, "a")
    assert entries["b/z"] == ContextEntry("b/z", "hardlink", False, "a")
    _, members, _ = _tar_members(tmp_path, tmp_path / "Dockerfile")
    assert members["b/data"].islnk() and members["b/data"].linkname == "a"
    assert members["a"].isreg() and members["a"].size == len("b/data")


def test_a_hard_link_whose_first_name_is_excluded_is_a_file(tmp_path: Path) -> None:
    _make_tree(tmp_path, ["Dockerfile", "a"])
    os.link(tmp_path / "a", tmp_path / "b")
    (tmp_path / ".dockerignore").write_text("a\n")
    entries = {entry.path: entry for entry in scan_context(tmp_path, tmp_path / "Dockerfile")}
    assert entries["b"].kind == "file"
    assert "a" not in entries


def test_names_that_are_not_utf8_are_hashed_and_sent_by_their_bytes(tmp_path: Path) -> None:
    name = os.fsdecode(b"caf\xe9.txt")
    (tmp_path / name).write_bytes(b"x")
    (tmp_path / "Dockerfile").write_text("FROM x\n")
    (tmp_path / ".dockerignore").write_bytes(b"caf?.nothing\n")
    entries = scan_context(tmp_path, tmp_path / "Dockerfile")
    assert name in {entry.path for entry in entries}
    _, members, data = _tar_members(tmp_path, tmp_path / "Dockerfile")
    assert name in members
    assert name in tar_listing(data)


def test_a_context_a_thousand_folders_deep(tmp_path: Path) -> None:
    deep = str(tmp_path)
    for _ in range(1000):
        deep += "/d"
        os.mkdir(deep)  # not Path.mkdir(parents=True): that recurses once per level
    Path(deep, "leaf").write_text("x")
    (tmp_path / "Dockerfile").write_text("FROM x\n")
    entries = scan_context(tmp_path, tmp_path / "Dockerfile")
    assert "/".join(["d"] * 1000 + ["leaf"]) in {entry.path for entry in entries}
    _, members, _ = _tar_members(tmp_path, tmp_path / "Dockerfile")
    assert len(members) == 1000 + 2  # the folders, the leaf and the Dockerfile
    os.remove(Path(deep, "leaf"))  # shutil.rmtree (pytest's clean-up) recurses once per level
    while deep != str(tmp_path):
        os.rmdir(deep)
        deep = os.path.dirname(deep)


def test_tar_holds_exactly_the_entries_with_normalised_metadata(tmp_path: Path) -> None:
    _make_tree(tmp_path, ["Dockerfile", "run.sh", "sub/data.txt", "ignored.log"])
    (tmp_path / ".dockerignore").write_text("*.log\n")
    (tmp_path / "run.sh").chmod(0o750)
    (tmp_path / "empty").mkdir()
    name, members, _ = _tar_members(tmp_path, tmp_path / "Dockerfile")
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


def test_a_dockerfile_outside_the_context_travels_under_a_fixed_name_and_is_dropped(tmp_path: Path) -> None:
    """No checkout path in the tar, and a .dockerignore of our own makes the builder drop it."""
    context = tmp_path / "ctx"
    _make_tree(context, ["a.txt"])
    dockerfile = tmp_path / "shared" / "Dockerfile"
    dockerfile.parent.mkdir()
    dockerfile.write_text("FROM x\n")
    name, members, data = _tar_members(context, dockerfile)
    assert name == SIDE_DOCKERFILE
    assert set(members) == {"a.txt", SIDE_DOCKERFILE, ".dockerignore"}
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        ignore = archive.extractfile(".dockerignore")
        assert ignore is not None and ignore.read().split() == [b".dockerignore", SIDE_DOCKERFILE.encode()]


def test_beside_a_sent_dockerignore_the_side_file_takes_a_name_it_excludes(tmp_path: Path) -> None:
    context = tmp_path / "ctx"
    _make_tree(context, ["a.txt", "b.log"])
    (context / ".dockerignore").write_text("*.log\n")
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM x\n")
    entries = scan_context(context, dockerfile)
    packing = plan_packing(context, dockerfile, entries)
    assert packing.dockerfile_name.endswith(".log")  # the builder drops it with the other logs
    assert [name for name, _ in packing.extra] == [packing.dockerfile_name]
    # Cloud Build configs name the file: there it must be the fixed name, excluded by the user.
    with pytest.raises(ConfigError, match=f"add a line `{SIDE_DOCKERFILE}`"):
        plan_packing(context, dockerfile, entries, any_side_name=False)
    (context / ".dockerignore").write_text(f"*.log\n{SIDE_DOCKERFILE}\n")
    entries = scan_context(context, dockerfile)
    assert plan_packing(context, dockerfile, entries, any_side_name=False).dockerfile_name == SIDE_DOCKERFILE


def test_an_excluded_dockerfile_is_not_sent_but_still_reaches_the_builder(tmp_path: Path) -> None:
    _make_tree(tmp_path, ["Dockerfile", "a.txt"])
    (tmp_path / ".dockerignore").write_text("Dockerfile\n.dockerignore\n")
    entries = scan_context(tmp_path, tmp_path / "Dockerfile")
    assert [entry.path for entry in entries] == ["a.txt"]  # neither moves the hash
    name, members, data = _tar_members(tmp_path, tmp_path / "Dockerfile")
    assert name == "Dockerfile"  # where a Cloud Build config's --file= expects it
    assert set(members) == {"a.txt", "Dockerfile", ".dockerignore"}
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        ignore = archive.extractfile(".dockerignore")  # ours: the builder drops both again
        assert ignore is not None and ignore.read().split() == [b".dockerignore", b"Dockerfile"]


def test_an_excluded_dockerfile_with_a_special_name_is_named_literally(tmp_path: Path) -> None:
    _make_tree(tmp_path, ["#Docker*file[1]", "a.txt"])
    (tmp_path / ".dockerignore").write_text("#*\n.dockerignore\n\\#*\n")
    name, members, data = _tar_members(tmp_path, tmp_path / "#Docker*file[1]")
    assert name == "#Docker*file[1]" and set(members) == {"a.txt", name, ".dockerignore"}
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        ignore = archive.extractfile(".dockerignore")
        assert ignore is not None and ignore.read() == b".dockerignore\n\\#Docker\\*file\\[1]\n"


def test_a_self_excluding_dockerignore_sent_by_the_dockerfiles_own_file_is_refused(tmp_path: Path) -> None:
    _make_tree(tmp_path, ["Dockerfile", "a.txt"])
    (tmp_path / ".dockerignore").write_text(".dockerignore\n")
    (tmp_path / "Dockerfile.dockerignore").write_text("a.txt\n")
    entries = scan_context(tmp_path, tmp_path / "Dockerfile")
    assert ".dockerignore" in {entry.path for entry in entries}
    with pytest.raises(ConfigError, match="excludes itself"):
        write_context_tar(tmp_path, tmp_path / "Dockerfile", entries, io.BytesIO())


def test_skip_leaves_out_the_tools_own_cache(tmp_path: Path) -> None:
    _make_tree(tmp_path, ["Dockerfile", ".cache/imagecascade/digests.json"])
    skip = frozenset({os.path.join(tmp_path, ".cache")})
    entries = scan_context(tmp_path, tmp_path / "Dockerfile", skip=skip)
    assert [entry.path for entry in entries] == ["Dockerfile"]

"""Bad image declarations: one line naming the file and the problem, exit 2, nothing written."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from image_repo import WIRED_DOCKERFILE, write_cascade, write_file, write_image

from imagecascade.core.declaration import load_images
from imagecascade.core.hook import main, write_hashes
from imagecascade.core.settings import load_settings
from imagecascade.errors import ConfigError


def _remove_dockerfile(root: Path) -> None:
    (root / "images/a/Dockerfile").unlink()


def _remove_toml(root: Path) -> None:
    (root / "images/a/image.toml").unlink()


def _write(relative: str, content: str | bytes):  # type: ignore[no-untyped-def]
    def change(root: Path) -> None:
        write_file(root / relative, content)

    return change


def _cycle(root: Path) -> None:
    write_image(root, "c1", 'parent = "c2"\n')
    write_image(root, "c2", 'parent = "c1"\n')


def _context_points_to_missing_folder(root: Path) -> None:
    (root / "images/a/image.toml").write_text('base = "x:1"\ncontext = "nowhere"\n')


BAD_INPUTS = [
    ("missing Dockerfile", _remove_dockerfile, "images/a/Dockerfile", "missing"),
    ("missing image.toml", _remove_toml, "images/a/image.toml", "missing"),
    ("invalid TOML", _write("images/a/image.toml", "base = \n"), "images/a/image.toml", "invalid TOML"),
    (
        "unknown key",
        _write("images/a/image.toml", 'base = "x:1"\nplatfrom = "linux/amd64"\n'),
        "images/a/image.toml",
        "unknown key platfrom",
    ),
    (
        "both parent and base",
        _write("images/a1/image.toml", 'parent = "a"\nbase = "x:1"\n'),
        "images/a1/image.toml",
        "exactly one of `parent` or `base`",
    ),
    (
        "neither parent nor base",
        _write("images/a/image.toml", "description = 'x'\n"),
        "images/a/image.toml",
        "exactly one of `parent` or `base`",
    ),
    (
        "unknown parent",
        _write("images/a1/image.toml", 'parent = "nope"\n'),
        "images/a1/image.toml",
        "unknown parent 'nope'",
    ),
    ("cycle", _cycle, "images/c1/image.toml", "parent cycle"),
    (
        "bad folder name",
        lambda root: write_image(root, "Bad_Name", 'base = "x:1"\n'),
        "images/Bad_Name",
        "not a valid image name",
    ),
    (
        "non-string build arg",
        _write("images/a/image.toml", 'base = "x:1"\n[build_args]\nMAX_JOBS = 32\n'),
        "images/a/image.toml",
        "build_args.MAX_JOBS must be a string",
    ),
    (
        "Dockerfile without BASE_IMAGE",
        _write("images/a/Dockerfile", "FROM debian:12\n"),
        "images/a/Dockerfile",
        "ARG BASE_IMAGE",
    ),
    (
        "Dockerfile deriving from something else",
        _write("images/a/Dockerfile", "ARG BASE_IMAGE\nFROM ${BASE_IMAGE} AS b\nFROM debian:12\n"),
        "images/a/Dockerfile",
        "must derive from",
    ),
    (
        "scratch image that never uses its base",
        _write("images/a/Dockerfile", "ARG BASE_IMAGE\nFROM scratch\nCOPY a.txt /a.txt\n"),
        "images/a/Dockerfile",
        "must derive from",
    ),
    (
        "context outside the repository",
        _write("images/a/image.toml", 'base = "x:1"\ncontext = "../../.."\n'),
        "images/a/image.toml",
        "outside the repository",
    ),
    ("context missing", _context_points_to_missing_folder, "images/a/image.toml", "is not a folder"),
    (
        "unreadable image.toml",
        _write("images/a/image.toml", b"base = '\xff\xfe'\n"),
        "images/a/image.toml",
        "cannot read",
    ),
    # Patterns Docker itself refuses (moby/patternmatcher.New, Go's filepath.Match).
    (
        "trailing backslash in .dockerignore",
        _write("images/a/.dockerignore", b"ok\nfoo\\\n"),
        "images/a/.dockerignore",
        "line 2: syntax error in pattern",
    ),
    (
        "lone ! in .dockerignore",
        _write("images/a/.dockerignore", b"# c\n!\n"),
        "images/a/.dockerignore",
        'line 2: illegal exclusion pattern: "!"',
    ),
    (
        "unclosed [ in .dockerignore",
        _write("images/a/.dockerignore", b"x[a\n"),
        "images/a/.dockerignore",
        "line 1: syntax error in pattern",
    ),
    (
        "unterminated heredoc",
        _write("images/a/Dockerfile", "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN <<EOF\necho\n"),
        "images/a/Dockerfile",
        "unterminated heredoc",
    ),
    ("invalid settings", _write("cascade.toml", "[registry]\nurl = 5\n"), "cascade.toml", "must be a string"),
    (
        "bad base reference",
        _write("images/a/image.toml", 'base = "Not A Ref"\n'),
        "images/a/image.toml",
        "not a valid image reference",
    ),
    (
        "unknown smoke section type",
        _write("images/a/image.toml", 'base = "x:1"\nsmoke = 3\n'),
        "images/a/image.toml",
        "[smoke] must be a table",
    ),
    (
        "bad cloudbuild machine type",
        _write("images/a/image.toml", 'base = "x:1"\n[cloudbuild]\nmachine_type = "HUGE"\n'),
        "images/a/image.toml",
        "not a Cloud Build machine type",
    ),
]


@pytest.mark.parametrize(
    ("case", "change", "named_file", "problem"), BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS]
)
def test_bad_input_is_one_clear_line_exit_2_nothing_written(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    case: str,
    change,
    named_file: str,
    problem: str,  # type: ignore[no-untyped-def]
) -> None:
    root = write_cascade(tmp_path)
    write_hashes(root, io.StringIO())
    lock_before = (root / "images.lock.json").read_bytes()
    change(root)

    code = main(["--root", str(root)])

    captured = capsys.readouterr()
    assert code == 2, case
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, lines
    assert str(root / named_file) in lines[0]
    assert problem in lines[0]
    assert captured.out == ""
    assert (root / "images.lock.json").read_bytes() == lock_before


def test_dependency_order_puts_parents_first_and_keeps_lineages_together(tmp_path: Path) -> None:
    root = write_cascade(tmp_path)
    order = list(load_images(load_settings(root)))
    assert order == ["a", "a1", "a1x", "a2", "other", "other-child"]


def test_declared_values_are_read(tmp_path: Path) -> None:
    write_image(
        tmp_path,
        "img",
        'description = "d"\nbase = "reg.example/x:1@sha256:' + "0" * 64 + '"\nplatform = "linux/arm64"\n'
        'target = "final"\n[build_args]\nB = "2"\nA = "1"\n',
        dockerfile=(
            "ARG BASE_IMAGE\nFROM ${BASE_IMAGE} AS builder\nFROM builder AS final\nFROM scratch AS other\n"
        ),
    )
    spec = load_images(load_settings(tmp_path))["img"]
    assert spec.description == "d"
    assert spec.base_is_pinned
    assert spec.platform == "linux/arm64"
    assert list(spec.build_args) == ["A", "B"]
    assert spec.target == "final"


def test_unpinned_base_is_accepted_and_reported_unpinned(tmp_path: Path) -> None:
    write_image(tmp_path, "img", 'base = "nvidia/cuda:12.4.1-runtime-ubuntu22.04"\n')
    spec = load_images(load_settings(tmp_path))["img"]
    assert not spec.base_is_pinned


@pytest.mark.parametrize(
    "dockerfile",
    [
        "ARG BASE_IMAGE\nFROM $BASE_IMAGE\n",
        "# syntax=docker/dockerfile:1\nARG BASE_IMAGE=x\nFROM ${BASE_IMAGE} AS base\nRUN true\nFROM base\n",
        "ARG OTHER\nARG BASE_IMAGE\nFROM ${OTHER} AS tools\nFROM ${BASE_IMAGE}\nCOPY --from=tools /a /a\n",
        "ARG BASE_IMAGE\nFROM \\\n  ${BASE_IMAGE}\n",
        # Only what was made on the base: a scratch image for another image's COPY --from.
        "ARG BASE_IMAGE\nFROM ${BASE_IMAGE} AS compile\nRUN make\nFROM scratch\nCOPY --from=compile /o /o\n",
    ],
)
def test_accepted_base_wiring(tmp_path: Path, dockerfile: str) -> None:
    write_image(tmp_path, "img", 'base = "x:1"\n', dockerfile=dockerfile)
    assert "img" in load_images(load_settings(tmp_path))


def test_wired_dockerfile_constant_is_valid(tmp_path: Path) -> None:
    write_image(tmp_path, "img", 'base = "x:1"\n', dockerfile=WIRED_DOCKERFILE)
    assert load_images(load_settings(tmp_path))


def test_missing_images_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="images: missing"):
        load_images(load_settings(tmp_path))


def test_repository_root_as_context_is_allowed(tmp_path: Path) -> None:
    write_image(tmp_path, "img", 'base = "x:1"\ncontext = "../.."\n')
    (tmp_path / "code.py").write_text("x = 1\n")
    spec = load_images(load_settings(tmp_path))["img"]
    assert spec.context == tmp_path.resolve()
    assert os.path.samefile(spec.dockerfile, tmp_path / "images/img/Dockerfile")

"""Upstream pins: which external bases moved, and rewriting only their `base` line."""

from __future__ import annotations

from pathlib import Path

import pytest
from image_repo import write_image

from imagecascade.core.declaration import load_images
from imagecascade.core.settings import load_settings
from imagecascade.errors import ConfigError
from imagecascade.pins.upstream import rewrite_pin, upstream_pins

OLD = "sha256:" + "1" * 64
NEW = "sha256:" + "2" * 64


class Resolver:
    def __init__(self, digests: dict[str, str]) -> None:
        self.digests = digests
        self.asked: list[str] = []

    def tag_digest(self, reference: str) -> str:
        self.asked.append(reference)
        return self.digests[reference.partition("@")[0]]


def test_moved_and_unpinned_bases_are_reported(tmp_path: Path) -> None:
    write_image(tmp_path, "pinned", f'base = "127.0.0.1:5000/base:1@{OLD}"\n')
    write_image(tmp_path, "unpinned", 'base = "127.0.0.1:5000/other:2"\n')
    write_image(tmp_path, "current", f'base = "127.0.0.1:5000/same:3@{OLD}"\n')
    write_image(tmp_path, "child", 'parent = "pinned"\n')
    resolver = Resolver(
        {"127.0.0.1:5000/base:1": NEW, "127.0.0.1:5000/other:2": NEW, "127.0.0.1:5000/same:3": OLD}
    )
    pins = {pin.image: pin for pin in upstream_pins(load_images(load_settings(tmp_path)), resolver)}
    assert sorted(pins) == ["current", "pinned", "unpinned"]  # children have no external base
    assert pins["pinned"].moved and pins["pinned"].latest == f"127.0.0.1:5000/base:1@{NEW}"
    assert pins["unpinned"].moved and "unpinned →" in pins["unpinned"].describe()
    assert not pins["current"].moved
    assert {name: pin.state for name, pin in pins.items()} == {
        "pinned": "moved",
        "unpinned": "unpinned",
        "current": "current",
    }


@pytest.mark.parametrize("newline", ["\n", "\r\n"], ids=["lf", "crlf"])
def test_rewrite_touches_only_the_base_line(tmp_path: Path, newline: str) -> None:
    path = tmp_path / "image.toml"
    lines = [
        "# the CUDA base, pinned",
        f"base = 'nvidia/cuda:12.4.1-devel@{OLD}'  # upstream",
        'description = "base = nvidia/cuda:12.4.1-devel"',
        "[build_args]",
        'X = "1"',
    ]
    path.write_bytes(newline.join(lines).encode() + newline.encode())
    rewrite_pin(path, f"nvidia/cuda:12.4.1-devel@{OLD}", f"nvidia/cuda:12.4.1-devel@{NEW}")
    lines[1] = f"base = 'nvidia/cuda:12.4.1-devel@{NEW}'  # upstream"
    assert path.read_bytes() == newline.join(lines).encode() + newline.encode()


def test_rewrite_refuses_when_the_line_is_not_found(tmp_path: Path) -> None:
    path = tmp_path / "image.toml"
    path.write_text('base = """nvidia/cuda:12"""\n')
    with pytest.raises(ConfigError, match="cannot find the line"):
        rewrite_pin(path, "nvidia/cuda:12", "nvidia/cuda:12@" + NEW)
    assert path.read_text() == 'base = """nvidia/cuda:12"""\n'


def test_build_args_naming_images_are_pinned_too(tmp_path: Path) -> None:
    toml = (
        f'base = "127.0.0.1:5000/runtime:1@{OLD}"\n'
        'upstream_build_args = ["BUILDER_IMAGE"]\n'
        "[build_args]\n"
        'BUILDER_IMAGE = "127.0.0.1:5000/devel:1"\n'
        'MAX_JOBS = "4"\n'
    )
    folder = write_image(tmp_path, "img", toml)
    resolver = Resolver({"127.0.0.1:5000/runtime:1": OLD, "127.0.0.1:5000/devel:1": NEW})
    pins = upstream_pins(load_images(load_settings(tmp_path)), resolver)
    moved = [pin for pin in pins if pin.moved]
    assert [(pin.key, pin.latest) for pin in moved] == [("BUILDER_IMAGE", f"127.0.0.1:5000/devel:1@{NEW}")]
    assert "(build arg BUILDER_IMAGE)" in moved[0].describe()
    rewrite_pin(folder / "image.toml", moved[0].current, moved[0].latest, moved[0].key)
    assert (folder / "image.toml").read_text() == toml.replace(
        '"127.0.0.1:5000/devel:1"', f'"127.0.0.1:5000/devel:1@{NEW}"'
    )
    spec = load_images(load_settings(tmp_path))["img"]
    assert spec.build_args["BUILDER_IMAGE"].endswith(NEW)


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ('upstream_build_args = ["NOPE"]\n', "'NOPE', which is not in build_args"),
        ('upstream_build_args = "X"\n', "must be a list of build arg names"),
        ('upstream_build_args = ["X"]\n[build_args]\nX = "not a ref!"\n', "is not a valid image reference"),
    ],
)
def test_bad_upstream_build_args(tmp_path: Path, extra: str, problem: str) -> None:
    write_image(tmp_path, "img", 'base = "x:1"\n' + extra)
    with pytest.raises(ConfigError, match=problem):
        load_images(load_settings(tmp_path))

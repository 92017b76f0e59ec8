"""Platforms compared as containerd compares them, and an image of another platform than its parent.

The table follows containerd/platforms' `platforms_test.go` (TestParseSelector's normalised
forms) for the names Docker images and manifests carry.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from image_repo import write_image

from imagecascade.core.plan import cannot_build_line, compute_plan
from imagecascade.core.platforms import Platform, normalize, parse, platform_in
from imagecascade.core.settings import load_settings

NORMALISED = [
    ("linux", "amd64", "", "linux/amd64"),
    ("Linux", "x86_64", "", "linux/amd64"),
    ("linux", "x86-64", "v1", "linux/amd64"),
    ("linux", "amd64", "v3", "linux/amd64/v3"),
    ("linux", "aarch64", "", "linux/arm64"),
    ("linux", "arm64", "v8", "linux/arm64"),
    ("linux", "arm64", "8", "linux/arm64"),
    ("linux", "arm64", "v9", "linux/arm64/v9"),
    ("linux", "arm", "", "linux/arm/v7"),
    ("linux", "arm", "7", "linux/arm/v7"),
    ("linux", "arm", "6", "linux/arm/v6"),
    ("linux", "armhf", "", "linux/arm/v7"),
    ("linux", "armel", "", "linux/arm/v6"),
    ("linux", "i386", "", "linux/386"),
    ("macos", "arm64", "", "darwin/arm64"),
    ("windows", "amd64", "", "windows/amd64"),
    ("linux", "s390x", "", "linux/s390x"),
    ("", "", "", ""),
]


@pytest.mark.parametrize(("os", "architecture", "variant", "expected"), NORMALISED)
def test_normalize(os: str, architecture: str, variant: str, expected: str) -> None:
    assert str(normalize(os, architecture, variant)) == expected


def test_parse_and_the_documents_that_name_a_platform() -> None:
    assert parse("linux/arm64/v8") == parse("linux/aarch64") == Platform("linux", "arm64")
    assert parse("linux/amd64") != parse("linux/arm64")
    # An engine's image inspect, an image config and an index entry name the same fields differently.
    assert platform_in({"Os": "linux", "Architecture": "arm", "Variant": None}) == parse("linux/arm/v7")
    assert platform_in({"os": "linux", "architecture": "amd64"}) == parse("linux/amd64")
    for wrong in ("linux", "linux/", "a/b/c/d", "/amd64"):
        with pytest.raises(ValueError, match="os/arch"):
            parse(wrong)


def test_an_image_of_another_platform_than_its_parent_cannot_be_built(tmp_path: Path) -> None:
    (tmp_path / "cascade.toml").write_text("")
    write_image(tmp_path, "root", 'base = "127.0.0.1:5000/base:1"\n')
    write_image(tmp_path, "same", 'parent = "root"\nplatform = "linux/x86_64"\n')  # amd64, spelled otherwise
    write_image(tmp_path, "arm", 'parent = "root"\nplatform = "linux/arm64"\n')
    write_image(tmp_path, "arm-child", 'parent = "arm"\nplatform = "linux/arm64/v8"\n')
    plan = compute_plan(load_settings(tmp_path), use_cache=False)
    assert cannot_build_line(plan.get("same")) == ""
    assert cannot_build_line(plan.get("arm-child")) == ""  # its own parent is arm64
    line = cannot_build_line(plan.get("arm"))
    assert line.startswith("cannot build: platform linux/arm64 differs from its parent root's linux/amd64")
    assert plan.get("arm").cannot_build[0].fix == (
        "declare the same platform in images/arm/image.toml and images/root/image.toml"
    )

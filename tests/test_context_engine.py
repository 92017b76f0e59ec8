"""What lands in /ctx: Docker's own builds against our hash and against `invoke cascade`'s build.

One context holds the issue's .dockerignore examples, hard links, a symbolic link, an executable,
an empty folder, a name that is not UTF-8 and a deep folder (30 levels; 1,000 through the cascade
alone, which is what the engine takes ten seconds over). It is built with
`COPY . /ctx` by the docker CLI 28.2 (classic builder, today's patternmatcher), by Engine 20.10's
BuildKit, and by the cascade (our tar on the engine's build API); each image's /ctx is read from
its top layer and compared with what we hash.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from docker_oracle import DOCKER_CLI, DOCKER_CLI_2010, image_context, listing
from image_repo import write_file

from imagecascade.core.cascade import run_cascade
from imagecascade.core.context_tar import SIDE_DOCKERFILE
from imagecascade.core.decisions import CascadeOptions
from imagecascade.core.plan import compute_plan
from imagecascade.core.settings import load_settings
from imagecascade.engines.local_backend import LocalBackend
from imagecascade.engines.store import open_store

pytestmark = pytest.mark.engine

DOCKERFILE = "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY . /ctx\n"
IGNORE = (
    b"\xef\xbb\xbf**.pyc\n"  # a BOM, then a leading ** that matches any prefix
    b"**/node_modules\n!ui\n"  # ui/node_modules stays excluded
    b"app/secrets\n!app\n"  # app/secrets/key stays excluded
    b"file[!a].txt\n"  # the set of ! and a
    b"a**b\n"  # a/b, not axb
    b".\n/\nfoo/..\n"  # exclude nothing
    b"#comment.txt\n #keep.txt\n"  # a comment, then a pattern
)
FILES = {
    "x.pyc": "1",
    "a/b/deep.pyc": "2",
    "ui/app.js": "3",
    "ui/node_modules/pkg/index.js": "4",
    "app/main.py": "5",
    "app/secrets/key": "6",
    "file!.txt": "7",
    "filea.txt": "8",
    "fileb.txt": "9",
    "axb": "10",
    "#comment.txt": "11",
    "#keep.txt": "12",
    "keep.txt": "13",
    "data/shared": "the same bytes under three names",
}
EXCLUDED = {"x.pyc", "a/b", "ui/node_modules", "app/secrets", "file!.txt", "filea.txt", "#keep.txt"}
# Engine 20.10's BuildKit and CLI (2020) still re-include these through `!ui` and `!app`, and do
# not strip a BOM, so the first pattern never matches.
OLD_BUILDKIT_SENDS = {"ui/node_modules/pkg/index.js", "app/secrets/key", "x.pyc"}
DEPTH = int(os.environ.get("IMAGECASCADE_CONTEXT_DEPTH", "30"))


def _write_deep(folder: Path, depth: int) -> None:
    deep = str(folder)
    for _ in range(depth):
        deep += "/d"
        os.mkdir(deep)  # Path.mkdir(parents=True) recurses once per level
    Path(deep, "leaf").write_text("deep")


def _remove_deep(folder: Path, depth: int) -> None:
    """shutil.rmtree (pytest's clean-up) recurses once per level: take the deep folder down here."""
    deep = str(folder) + "/d" * depth
    os.remove(deep + "/leaf")
    while deep != str(folder):
        os.rmdir(deep)
        deep = os.path.dirname(deep)


def _write_context(folder: Path) -> None:
    for relative, content in FILES.items():
        write_file(folder / relative, content)
    write_file(folder / ".dockerignore", IGNORE)
    os.link(folder / "data/shared", folder / "data/also-shared")
    os.link(folder / "data/shared", folder / "hardlink")
    write_file(folder / "run.sh", "#!/bin/sh\n")
    (folder / "run.sh").chmod(0o755)
    (folder / "link").symlink_to("run.sh")
    (folder / "empty").mkdir()
    (folder / os.fsdecode(b"caf\xe9.txt")).write_text("latin-1 name")
    _write_deep(folder, DEPTH)


def _one_image(root: Path, name: str, base_image: str) -> Path:
    folder = root / "images" / name
    write_file(root / "cascade.toml", "")
    write_file(folder / "image.toml", f'base = "{base_image}"\n')
    write_file(folder / "Dockerfile", DOCKERFILE)
    return folder


@pytest.fixture
def repository(tmp_path: Path, base_image: str) -> Iterator[tuple[Path, str]]:
    name = f"ctx-{uuid.uuid4().hex[:10]}"
    folder = _one_image(tmp_path / "repo", name, base_image)
    _write_context(folder)
    yield tmp_path / "repo", name
    _remove_deep(folder, DEPTH)


def _cli_build(engine: Any, cli: str, folder: Path, base: str, buildkit: bool) -> dict[str, str]:
    tag = f"imagecascade-test/ctx-{uuid.uuid4().hex[:10]}:1"
    result = subprocess.run(
        [cli, "build", "--network", "host", "-t", tag, "--build-arg", f"BASE_IMAGE={base}", str(folder)],
        capture_output=True,
        text=True,
        env={**os.environ, "DOCKER_BUILDKIT": "1" if buildkit else "0"},
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    try:
        found = image_context(engine, tag, "ctx")
    finally:
        engine.remove_image(tag, force=True)
    found.pop("image.toml")  # the CLI sends the whole folder; image.toml is this tool's own file
    return found


def _cascade_build(engine: Any, root: Path, name: str) -> tuple[dict[str, str], dict[str, str]]:
    """(what the cascade hashed, what its image holds in /ctx)."""
    settings = load_settings(root)
    plan = compute_plan(settings, use_cache=False)
    result = run_cascade(plan, open_store(""), LocalBackend(engine), CascadeOptions(jobs=1))
    assert result.ok, result
    reference = f"{name}:{plan.get(name).tag}"
    try:
        found = image_context(engine, reference, "ctx")
    finally:
        engine.remove_image(reference, force=True)
        engine.remove_image(f"{name}:latest", force=True)
    return listing(plan.get(name).inputs.files), found


def test_docker_builders_and_the_cascade_put_exactly_the_hashed_context_in_the_image(
    engine: Any, base_image: str, repository: tuple[Path, str]
) -> None:
    root, name = repository
    folder = root / "images" / name
    hashed, cascaded = _cascade_build(engine, root, name)
    for path in hashed:
        assert not any(path == top or path.startswith(top + "/") for top in EXCLUDED), path
    assert {"ui/app.js", "app/main.py", "fileb.txt", "axb", "keep.txt", "#comment.txt", "Dockerfile"} <= set(
        hashed
    )
    assert hashed["hardlink"] == "hardlink data/also-shared"  # the first name in walk order
    assert hashed[os.fsdecode(b"caf\xe9.txt")].startswith("file -")
    assert "/".join(["d"] * DEPTH + ["leaf"]) in hashed
    assert cascaded == hashed  # `invoke cascade` puts exactly the hashed entries in the image

    classic = _cli_build(engine, DOCKER_CLI, folder, base_image, buildkit=False)
    assert classic == hashed  # what `docker build` (today's rules) puts there
    old_buildkit = _cli_build(engine, DOCKER_CLI_2010, folder, base_image, buildkit=True)
    assert set(old_buildkit) - set(hashed) == OLD_BUILDKIT_SENDS  # the documented difference
    assert {path: old_buildkit[path] for path in hashed} == hashed


def test_a_dockerfile_outside_or_excluded_from_the_context_never_lands_in_the_image(
    engine: Any, base_image: str, tmp_path: Path
) -> None:
    root = tmp_path / "repo"
    write_file(root / "cascade.toml", "")
    write_file(root / "shared" / "Dockerfile", DOCKERFILE)
    prefix = f"df-{uuid.uuid4().hex[:8]}"
    images = {
        f"{prefix}-outside": ({"a.txt": "a"}, 'dockerfile = "../../shared/Dockerfile"\n'),
        f"{prefix}-outside-ignored": (
            {"a.txt": "a", "b.log": "b", ".dockerignore": "*.log\n"},
            'dockerfile = "../../shared/Dockerfile"\n',
        ),
        f"{prefix}-excluded": ({"a.txt": "a", "Dockerfile": DOCKERFILE, ".dockerignore": "Dockerfile\n"}, ""),
    }
    for name, (files, extra) in images.items():
        write_file(root / "images" / name / "image.toml", f'base = "{base_image}"\n{extra}')
        for relative, content in files.items():
            write_file(root / "images" / name / relative, content)
    plan = compute_plan(load_settings(root), use_cache=False)
    result = run_cascade(plan, open_store(""), LocalBackend(engine), CascadeOptions(jobs=2))
    assert result.ok, result
    try:
        for name in images:
            found = image_context(engine, f"{name}:{plan.get(name).tag}", "ctx")
            assert found == listing(plan.get(name).inputs.files), name
            assert "Dockerfile" not in found and SIDE_DOCKERFILE not in found
            assert not any(path.startswith(".dockerfile") for path in found)
    finally:
        for name in images:
            engine.remove_image(f"{name}:{plan.get(name).tag}", force=True)
            engine.remove_image(f"{name}:latest", force=True)


def test_a_context_a_thousand_folders_deep_is_built(engine: Any, base_image: str, tmp_path: Path) -> None:
    name = f"deep-{uuid.uuid4().hex[:10]}"
    folder = _one_image(tmp_path / "repo", name, base_image)
    _write_deep(folder, 1000)
    try:
        hashed, cascaded = _cascade_build(engine, tmp_path / "repo", name)
        assert cascaded == hashed
        assert "/".join(["d"] * 1000 + ["leaf"]) in hashed
    finally:
        _remove_deep(folder, 1000)

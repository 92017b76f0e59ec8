"""An image of another platform than declared is never tagged or pushed (the classic builder here;
BuildKit's case is in test_buildkit.py), and the registry says which platforms an image offers."""

from __future__ import annotations

import json
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import CascadeRepo, RegistryServer, git, push_as
from image_repo import write_file
from test_tasks_core import invoke

from imagecascade.core.build_request import LABEL_HASH
from imagecascade.core.plan import compute_plan
from imagecascade.core.platforms import parse
from imagecascade.core.settings import load_settings
from imagecascade.engines.registry import MANIFEST_TYPES, RegistryClient

pytestmark = pytest.mark.engine

DOCKERFILE = "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN uname -m > /arch\n"


def _labelled(engine: Any, full_hash: str) -> list[str]:
    """Ids of every local image (tagged or not) labelled with `full_hash`."""
    found = engine.client.api.images(all=True, filters={"label": f"{LABEL_HASH}={full_hash}"})
    return [str(image["Id"]) for image in found]


def test_an_image_declared_arm64_on_a_local_amd64_base_fails_untagged_and_amd64_still_builds(
    tmp_path: Path, engine: Any, base_image: str
) -> None:
    prefix = f"imagecascade-test-plat-{uuid.uuid4().hex[:8]}"
    arm, amd = f"{prefix}-arm", f"{prefix}-amd"
    root = tmp_path / "repo"
    write_file(root / "cascade.toml", "")
    for name, platform in ((arm, "linux/arm64"), (amd, "linux/amd64")):
        write_file(root / "images" / name / "image.toml", f'base = "{base_image}"\nplatform = "{platform}"\n')
        write_file(root / "images" / name / "Dockerfile", DOCKERFILE)
    git(root, "init", "-q", "-b", "main")
    plan = compute_plan(load_settings(root), use_cache=False)
    try:
        failed = invoke(root, f"build-{arm}", "--builder", "classic")
        assert failed.returncode == 1, failed.stdout + failed.stderr
        expected = (
            f"{arm}: declared platform linux/arm64, but the engine built linux/amd64: its base "
            f"{base_image} in the local engine is linux/amd64, and the classic builder builds on a "
            "local base of another platform as it is"
        )
        assert expected in failed.stdout
        assert "Traceback" not in failed.stdout + failed.stderr
        assert engine.inspect_image(f"{arm}:{plan.get(arm).tag}") is None
        assert engine.inspect_image(f"{arm}:latest") is None
        assert _labelled(engine, plan.get(arm).hash) == []  # not even left untagged

        built = invoke(root, f"build-{amd}", "--builder", "classic")
        assert built.returncode == 0, built.stdout + built.stderr
        info = engine.inspect_image(f"{amd}:{plan.get(amd).tag}")
        assert info is not None and info.platform == parse("linux/amd64")
    finally:
        for name in (arm, amd):
            for tag in (plan.get(name).tag, "latest"):
                engine.remove_image(f"{name}:{tag}", force=True)


def test_nothing_is_pushed_for_an_image_of_another_platform_and_the_rest_is(
    cascade_repo: CascadeRepo,
) -> None:
    toml = cascade_repo.root / "images" / "other" / "image.toml"
    toml.write_text(toml.read_text() + 'platform = "linux/arm64"\n')
    cascade_repo.commit()
    plan = cascade_repo.plan()
    done = cascade_repo.invoke("cascade", "--builder", "classic")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "other: declared platform linux/arm64, but the engine built linux/amd64" in done.stdout
    registry = RegistryClient()
    assert registry.manifest_digest(f"{cascade_repo.registry}/other", plan.get("other").tag) is None
    assert registry.manifest_digest(f"{cascade_repo.registry}/other", "latest") is None
    assert not [ref for ref in cascade_repo.built_references() if "/other:" in ref]
    for name in ("root", "mid", "leaf"):  # the other lineage is built and pushed as usual
        assert registry.manifest_digest(f"{cascade_repo.registry}/{name}", plan.get(name).tag)


def test_the_platforms_a_registry_image_offers(
    engine: Any, registry_base: str, shared_registry: RegistryServer
) -> None:
    repository = f"{shared_registry.address}/t-{uuid.uuid4().hex[:10]}/base"
    digest = push_as(engine, registry_base, f"{repository}:single")
    try:
        client = RegistryClient()
        assert client.image_platforms(repository, "single") == [parse("linux/amd64")]
        assert client.image_platforms(repository, digest) == [parse("linux/amd64")]
        assert client.image_platforms(repository, "absent") is None
        # An index naming the same image for two platforms (the registry checks only that it exists).
        size = len(_manifest(repository, digest))
        index = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                    "digest": digest,
                    "size": size,
                    "platform": platform,
                }
                for platform in (
                    {"os": "linux", "architecture": "amd64"},
                    {"os": "linux", "architecture": "arm64", "variant": "v8"},
                )
            ],
        }
        request = urllib.request.Request(
            f"http://{repository.replace('/', '/v2/', 1)}/manifests/multi",
            data=json.dumps(index).encode(),
            method="PUT",
            headers={"Content-Type": "application/vnd.oci.image.index.v1+json"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 201
        assert client.image_platforms(repository, "multi") == [parse("linux/amd64"), parse("linux/arm64")]
    finally:
        engine.remove_image(f"{repository}:single")


def _manifest(repository: str, digest: str) -> bytes:
    request = urllib.request.Request(
        f"http://{repository.replace('/', '/v2/', 1)}/manifests/{digest}", headers={"Accept": MANIFEST_TYPES}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return bytes(answer.read())

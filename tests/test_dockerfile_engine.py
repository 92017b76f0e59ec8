"""What each builder on the engine builds: the measurements behind `buildkit_features`.

Every feature the classic builder is said to refuse is refused by it; those said to need only
BuildKit build on Engine 20.10's built-in BuildKit, the others do not; and the Dockerfiles the
old parser rejected build on the classic builder, as `invoke cascade` builds them.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from docker_oracle import DOCKER_CLI, DOCKER_CLI_2010
from test_dockerfile import VALID

from imagecascade.core.dockerfile import base_wiring_problem, buildkit_features, parse_dockerfile

pytestmark = pytest.mark.engine

WIRED = "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n"
# A Dockerfile per feature that builds wherever the feature is understood (nothing is pulled).
FEATURE_DOCKERFILES = {
    "RUN --mount": WIRED + "RUN --mount=type=cache,target=/c true\n",
    "COPY --chmod": WIRED + "COPY --chmod=755 a /a\n",
    "ADD --chmod": WIRED + "ADD --chmod=644 a /a\n",
    "$BUILDPLATFORM in FROM": "ARG BASE_IMAGE\nFROM --platform=$BUILDPLATFORM ${BASE_IMAGE}\n",
    "$TARGETARCH in FROM": "ARG BASE_IMAGE\nARG ARCH_IMAGE\nFROM ${ARCH_IMAGE}:${TARGETARCH}\n",
    "RUN --network": WIRED + "RUN --network=none true\n",
    "COPY --link": WIRED + "COPY --link a /a\n",
    "COPY --parents": WIRED + "COPY --parents a /d/\n",
    "COPY --exclude": WIRED + "COPY --exclude=*.log . /d/\n",
    "ADD --keep-git-dir": WIRED + "ADD --keep-git-dir=true a /a\n",
    "heredoc in RUN": WIRED + "RUN <<EOF\ntrue\nEOF\n",
    "heredoc in COPY": WIRED + "COPY <<EOF /f\nhi\nEOF\n",
}


@pytest.fixture(scope="module")
def arch_image(engine: Any, base_image: str) -> Iterator[str]:
    """The base tagged `<unique>:amd64`, so `FROM <unique>:${TARGETARCH}` needs no registry."""
    name = f"imagecascade-test/arch-{uuid.uuid4().hex[:10]}"
    engine.tag_image(base_image, f"{name}:amd64")
    yield name
    engine.remove_image(f"{name}:amd64", force=True)


def _build(
    cli: str, context: Path, dockerfile: str, base: str, arch: str, buildkit: bool
) -> tuple[bool, str]:
    (context / "Dockerfile").write_text(dockerfile)
    tag = f"imagecascade-test/feature-{uuid.uuid4().hex[:10]}:1"
    environment = {**os.environ, "DOCKER_BUILDKIT": "1" if buildkit else "0"}
    arguments = ["--build-arg", f"ARCH_IMAGE={arch}", str(context)]
    result = subprocess.run(
        [cli, "build", "--network", "host", "-t", tag, "--build-arg", f"BASE_IMAGE={base}", *arguments],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
        check=False,
    )
    subprocess.run([cli, "rmi", "-f", tag], capture_output=True, check=False)
    return result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


@pytest.mark.parametrize("feature", FEATURE_DOCKERFILES)
def test_each_feature_needs_what_we_say(
    tmp_path: Path, base_image: str, arch_image: str, feature: str
) -> None:
    dockerfile = FEATURE_DOCKERFILES[feature]
    (tmp_path / "a").write_text("a\n")
    [found] = buildkit_features(parse_dockerfile(dockerfile.encode(), "Dockerfile"))
    assert found.feature == feature
    classic, log = _build(DOCKER_CLI, tmp_path, dockerfile, base_image, arch_image, buildkit=False)
    assert not classic, f"the classic builder built {feature}:\n{log}"
    builtin, log = _build(DOCKER_CLI_2010, tmp_path, dockerfile, base_image, arch_image, buildkit=True)
    assert builtin is (found.needs == "buildkit"), f"Engine 20.10's BuildKit and {feature}:\n{log}"


@pytest.mark.parametrize("case", VALID)
def test_dockerfiles_the_old_parser_rejected_build_on_the_classic_builder(
    tmp_path: Path, base_image: str, case: str
) -> None:
    data = VALID[case]
    parsed = parse_dockerfile(data, "Dockerfile")
    assert buildkit_features(parsed) == [] and base_wiring_problem(parsed) is None
    (tmp_path / "Dockerfile").write_bytes(data + b"RUN true\n")
    tag = f"imagecascade-test/valid-{uuid.uuid4().hex[:10]}:1"
    more = ["--build-arg", f"WHEELS_IMAGE={base_image}", str(tmp_path)]
    result = subprocess.run(
        [
            DOCKER_CLI,
            "build",
            "--network",
            "host",
            "-t",
            tag,
            "--build-arg",
            f"BASE_IMAGE={base_image}",
            *more,
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "DOCKER_BUILDKIT": "0"},
        timeout=300,
        check=False,
    )
    subprocess.run([DOCKER_CLI, "rmi", "-f", tag], capture_output=True, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]

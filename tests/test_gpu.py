"""GPU detection: the `docker info` shapes of engines that offer NVIDIA GPUs (as data), and this
machine's engine, which offers none, asked for real (its info and a trial `--gpus all` start).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from imagecascade.engines.gpu import GpuAccess, gpu_access, gpu_access_from_info, gpu_access_from_trial

INFO = Path(__file__).parent / "data" / "docker-info"


def info(name: str) -> dict[str, object]:
    loaded: dict[str, object] = json.loads((INFO / name).read_text())
    return loaded


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("docker-20.10-nvidia-runtime.json", GpuAccess(via="the 'nvidia' runtime", detail="runtimes nvidia")),
        (
            "docker-24.0-nvidia-default-runtime.json",
            GpuAccess(via="the default runtime 'nvidia'", detail="default runtime nvidia"),
        ),
        (
            "docker-28.3-cdi-nvidia.json",
            GpuAccess(
                via="CDI devices nvidia.com/gpu=all",
                detail="CDI devices nvidia.com/gpu=0, "
                "nvidia.com/gpu=GPU-955ef018-3bd9-5f27-80b3-fa20ee8d19c5, nvidia.com/gpu=all",
                driver="cdi",
                device_ids=("nvidia.com/gpu=all",),
            ),
        ),
        (
            "docker-28.3-cdi-nvidia-without-all.json",
            GpuAccess(
                via="CDI devices nvidia.com/gpu=0, nvidia.com/gpu=1",
                detail="CDI devices nvidia.com/gpu=0, nvidia.com/gpu=1",
                driver="cdi",
                device_ids=("nvidia.com/gpu=0", "nvidia.com/gpu=1"),
            ),
        ),
        # Info alone cannot tell: only a trial start of a --gpus request can.
        ("docker-27.5-cdi-spec-dirs-only.json", None),
        ("docker-28.3-cdi-other-vendor.json", None),
        ("docker-28.3-cdi-disabled.json", None),
        ("docker-20.10-debian-no-gpu.json", None),
    ],
)
def test_gpu_access_from_recorded_info(name: str, expected: GpuAccess | None) -> None:
    assert gpu_access_from_info(info(name)) == expected


# What engines answer to a trial start of `--gpus all` with a program that does not exist. The first
# two are this machine's engine's own answers (tests below ask it again); the third is the NVIDIA
# container toolkit's hook failing on a machine whose driver is not loaded.
NO_DRIVER = 'could not select device driver "" with capabilities: [[gpu]]'
NO_PROGRAM = (
    "failed to create shim task: OCI runtime create failed: runc create failed: unable to start container "
    'process: exec: "/imagecascade-gpu-trial/no-such-program": stat /imagecascade-gpu-trial/no-such-program: '
    "no such file or directory: unknown"
)
HOOK_FAILED = (
    "failed to create shim task: OCI runtime create failed: runc create failed: unable to start container "
    "process: error during container init: error running hook #0: error running hook: exit status 1, "
    "stdout: , stderr: Auto-detected mode as 'legacy' nvidia-container-cli: initialization error: "
    "nvml error: driver not loaded: unknown"
)


@pytest.mark.parametrize(
    ("error", "available"), [(NO_DRIVER, False), (NO_PROGRAM, True), (HOOK_FAILED, False), (None, True)]
)
def test_gpu_access_from_a_trial_start(error: str | None, available: bool) -> None:
    access = gpu_access_from_trial(error)
    assert access.available is available
    if error == HOOK_FAILED:
        assert "nvml error: driver not loaded" in access.detail
    if error == NO_DRIVER:
        assert access.detail == "no NVIDIA runtime, CDI GPU device or GPU device driver in the engine"


@pytest.mark.engine
def test_this_engine_offers_no_gpu(engine: object, base_image: str) -> None:
    from imagecascade.engines.engine import Engine

    assert isinstance(engine, Engine)
    assert gpu_access_from_info(engine.info()) is None
    labels = {"imagecascade.test": f"gpu-{uuid.uuid4().hex[:10]}"}
    access = gpu_access(engine, base_image, labels)
    assert access == GpuAccess(
        via=None, detail="no NVIDIA runtime, CDI GPU device or GPU device driver in the engine"
    )
    assert engine.list_containers(labels) == []
    # The same trial without a GPU request fails only for the missing program: the answer the
    # detection takes for "the request was met".
    container = engine.create_container(base_image, entrypoint=["/imagecascade-gpu-trial/no-such-program"],
                                        command=[], labels=labels)  # fmt: skip
    try:
        assert gpu_access_from_trial(engine.start_container(container)).available
    finally:
        engine.remove_container(container)


def test_device_requests_as_docker_sends_them() -> None:
    import docker.types

    cdi = gpu_access_from_info(info("docker-28.3-cdi-nvidia.json"))
    runtime = gpu_access_from_info(info("docker-20.10-nvidia-runtime.json"))
    assert cdi is not None and runtime is not None
    # `docker run --device nvidia.com/gpu=all` and `docker run --gpus all`, as the engine receives them.
    assert docker.types.DeviceRequest(**cdi.device_request()) == {
        "Driver": "cdi",
        "Count": 0,
        "DeviceIDs": ["nvidia.com/gpu=all"],
        "Capabilities": [],
        "Options": {},
    }
    assert docker.types.DeviceRequest(**runtime.device_request()) == {
        "Driver": "",
        "Count": -1,
        "DeviceIDs": [],
        "Capabilities": [["gpu"]],
        "Options": {},
    }


@pytest.mark.engine
@pytest.mark.parametrize(
    ("cli", "name"),
    [
        (["--gpus", "all"], "docker-20.10-nvidia-runtime.json"),
        (["--device", "nvidia.com/gpu=all"], "docker-28.3-cdi-nvidia.json"),
    ],
)
def test_requests_match_the_docker_cli(engine: object, base_image: str, cli: list[str], name: str) -> None:
    """The docker CLI is the oracle: its container and ours carry the same device request."""
    import subprocess

    from imagecascade.engines.engine import Engine

    assert isinstance(engine, Engine)
    access = gpu_access_from_info(info(name))
    assert access is not None
    labels = {"imagecascade.test": f"gpu-{uuid.uuid4().hex[:10]}"}
    label = "=".join(next(iter(labels.items())))
    theirs = subprocess.run(
        ["docker", "create", "--label", label, "--network", "none", *cli, base_image, "true"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()  # fmt: skip
    ours = engine.create_container(base_image, entrypoint=["true"], command=[], labels=labels, gpus=access)
    try:
        requests = [
            {
                key: value or None
                for key, value in engine.client.api.inspect_container(container)["HostConfig"][
                    "DeviceRequests"
                ][0].items()
            }
            for container in (theirs, ours)
        ]
        assert requests[0] == requests[1]
    finally:
        for container in (theirs, ours):
            engine.remove_container(container)
    assert engine.list_containers(labels) == []

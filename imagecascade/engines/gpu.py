"""Whether a Docker Engine can hand NVIDIA GPUs to containers, and how to ask for them.

Three ways an engine offers them, as `docker run` users meet them:

- an `nvidia` runtime registered with the daemon (nvidia-container-toolkit's classic set-up);
  `docker info` lists it under Runtimes (or as DefaultRuntime). Asked for like `--gpus all`.
- CDI (Container Device Interface) devices: from Engine API 1.50 (Docker 28.2) `docker info`
  lists them under DiscoveredDevices as `{"Source": "cdi", "ID": "nvidia.com/gpu=0"}`; they are
  asked for by name, as `--device nvidia.com/gpu=all` does (a device request with driver `cdi`).
- the `--gpus` device request alone: the daemon registers its `nvidia` device driver when
  `nvidia-container-runtime-hook` is on its PATH (moby `daemon/nvidia_linux.go`). `docker info`
  does not show that, so only a trial start can tell (`gpu_access`).

Imports no docker code: it reads the `docker info` document and uses the engine's container verbs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

NVIDIA_CDI_KIND = "nvidia.com/gpu"
TRIAL_PROGRAM = "/imagecascade-gpu-trial/no-such-program"
# The daemon's answer to a `gpu` device request when no driver offers that capability.
NO_DRIVER_TEXT = "could not select device driver"


@dataclasses.dataclass(frozen=True)
class GpuAccess:
    """How to give a container every NVIDIA GPU; `via` is None when the engine offers none.

    `driver` and `device_ids` form the device request: driver "" with the `gpu` capability and
    count -1 is `--gpus all`; driver "cdi" names CDI devices. `detail` says what was found, or why
    there is no GPU, in words for messages.
    """

    via: str | None
    detail: str
    driver: str = ""
    device_ids: tuple[str, ...] = ()

    @property
    def available(self) -> bool:
        return self.via is not None

    def device_request(self) -> dict[str, Any]:
        """The container's device request (the docker SDK's DeviceRequest keywords)."""
        if self.driver == "cdi":
            return {"driver": "cdi", "device_ids": list(self.device_ids)}
        return {"count": -1, "capabilities": [["gpu"]]}  # `--gpus all`


def gpu_access_from_info(info: Mapping[str, Any]) -> GpuAccess | None:
    """What `docker info` alone says; None when it cannot tell (then only a trial start can).

    `info` is the decoded JSON of `GET /info` (`docker info --format '{{json .}}'`).
    """
    runtimes = info.get("Runtimes") or {}
    default = str(info.get("DefaultRuntime") or "")
    nvidia = sorted(name for name in runtimes if "nvidia" in str(name).lower())
    if "nvidia" in default.lower():
        return GpuAccess(via=f"the default runtime {default!r}", detail=f"default runtime {default}")
    if nvidia:
        return GpuAccess(via=f"the {nvidia[0]!r} runtime", detail=f"runtimes {', '.join(nvidia)}")
    devices = [
        str(device.get("ID"))
        for device in info.get("DiscoveredDevices") or []
        if isinstance(device, Mapping)
        and str(device.get("Source", "")).lower() == "cdi"
        and str(device.get("ID", "")).startswith(NVIDIA_CDI_KIND + "=")
    ]
    if devices:
        everything = f"{NVIDIA_CDI_KIND}=all"
        wanted = (everything,) if everything in devices else tuple(devices)
        return GpuAccess(
            via=f"CDI devices {', '.join(wanted)}",
            detail=f"CDI devices {', '.join(devices)}",
            driver="cdi",
            device_ids=wanted,
        )
    return None


def gpu_access_from_trial(start_error: str | None) -> GpuAccess:
    """Judge a trial start of a container that asks for `--gpus all` and runs a program that
    does not exist: the daemon refuses the request before anything runs when no driver offers
    GPUs; when the request is met, only the missing program makes the start fail.
    """
    if start_error is None:
        return GpuAccess(via="the --gpus device request", detail="a trial container started with GPUs")
    text = " ".join(start_error.split())
    if NO_DRIVER_TEXT in text:
        return GpuAccess(
            via=None, detail="no NVIDIA runtime, CDI GPU device or GPU device driver in the engine"
        )
    missing_program = ("no such file or directory", "executable file not found", "not found in $path")
    if any(marker in text.lower() for marker in missing_program) and "nvidia-container-cli" not in text:
        return GpuAccess(via="the --gpus device request", detail="the engine accepted a --gpus request")
    return GpuAccess(via=None, detail=f"the engine could not start a container with GPUs: {text}")


class TrialEngine(Protocol):
    def info(self) -> dict[str, Any]: ...

    def create_container(
        self,
        reference: str,
        *,
        entrypoint: Sequence[str],
        command: Sequence[str],
        labels: Mapping[str, str],
        gpus: GpuAccess | None = None,
    ) -> str: ...

    def start_container(self, container_id: str) -> str | None: ...

    def remove_container(self, container_id: str) -> None: ...


def gpu_access(engine: TrialEngine, reference: str, labels: Mapping[str, str]) -> GpuAccess:
    """How `engine` gives containers NVIDIA GPUs, if it does.

    When `docker info` cannot tell, a container of `reference` (labelled `labels`) asking for
    `--gpus all` is started once with a program that does not exist, and removed.
    """
    known = gpu_access_from_info(engine.info())
    if known is not None:
        return known
    trial = GpuAccess(via="the --gpus device request", detail="trial")
    container = engine.create_container(
        reference, entrypoint=[TRIAL_PROGRAM], command=[], labels=labels, gpus=trial
    )
    try:
        return gpu_access_from_trial(engine.start_container(container))
    finally:
        engine.remove_container(container)

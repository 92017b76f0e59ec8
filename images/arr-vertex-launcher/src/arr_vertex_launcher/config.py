"""The launch agent's settings, read from the environment; nothing project-specific is baked in."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from arr_vertex_launcher.spot import spot_requested

REQUIRED = ("WANDB_API_KEY", "WANDB_ENTITY", "WANDB_LAUNCH_QUEUE", "VERTEX_PROJECT", "VERTEX_REGION")
BUILDERS = ("noop", "docker", "kaniko")
_REGION = re.compile(r"^[a-z]+(?:-[a-z]+)+[0-9]+$")


class LauncherConfigError(Exception):
    """The environment does not describe a usable launch agent."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class LauncherSettings:
    entity: str
    queues: tuple[str, ...]
    project: str
    region: str
    spot: bool
    max_jobs: int
    idle_timeout: float  # seconds without a running job before the agent is stopped; 0 = never
    builder: str
    registry_uri: str | None
    config_path: Path


def _number(environ: Mapping[str, str], name: str, default: str, *, minimum: float) -> float:
    text = environ.get(name, "").strip() or default
    try:
        value = float(text)
    except ValueError:
        raise LauncherConfigError(f"{name}={text!r} is not a number") from None
    if value < minimum:
        raise LauncherConfigError(f"{name}={text!r} must be at least {minimum:g}")
    return value


def read_settings(environ: Mapping[str, str]) -> LauncherSettings:
    """Settings from `environ`; LauncherConfigError names every missing or bad variable."""
    missing = [name for name in REQUIRED if not environ.get(name, "").strip()]
    if missing:
        raise LauncherConfigError(
            f"missing required environment variable{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
            f"(the agent needs all of {', '.join(REQUIRED)})"
        )
    queues = tuple(queue.strip() for queue in environ["WANDB_LAUNCH_QUEUE"].split(",") if queue.strip())
    if not queues:
        raise LauncherConfigError("WANDB_LAUNCH_QUEUE names no queue (use a comma-separated list)")
    region = environ["VERTEX_REGION"].strip()
    if not _REGION.match(region):
        raise LauncherConfigError(
            f"VERTEX_REGION={region!r} is not a Google Cloud region such as us-central1"
        )
    try:
        spot = spot_requested(environ)
    except ValueError as error:
        raise LauncherConfigError(str(error)) from None
    max_jobs = _number(environ, "LAUNCH_MAX_JOBS", "1", minimum=1)
    if max_jobs != int(max_jobs):
        raise LauncherConfigError(f"LAUNCH_MAX_JOBS={environ['LAUNCH_MAX_JOBS']!r} is not a whole number")
    builder = environ.get("LAUNCH_BUILDER", "").strip() or "noop"
    if builder not in BUILDERS:
        raise LauncherConfigError(f"LAUNCH_BUILDER={builder!r} is not one of {', '.join(BUILDERS)}")
    home = Path(environ.get("HOME") or "/tmp")
    return LauncherSettings(
        entity=environ["WANDB_ENTITY"].strip(),
        queues=queues,
        project=environ["VERTEX_PROJECT"].strip(),
        region=region,
        spot=spot,
        max_jobs=int(max_jobs),
        idle_timeout=_number(environ, "LAUNCH_IDLE_TIMEOUT", "0", minimum=0),
        builder=builder,
        registry_uri=environ.get("LAUNCH_REGISTRY_URI", "").strip() or None,
        config_path=Path(
            environ.get("LAUNCH_CONFIG_PATH", "").strip() or home / ".config" / "wandb" / "launch-config.yaml"
        ),
    )


def agent_config(settings: LauncherSettings) -> dict[str, Any]:
    """The launch agent's config file contents (JSON is valid YAML)."""
    config: dict[str, Any] = {
        "entity": settings.entity,
        "queues": list(settings.queues),
        "max_jobs": settings.max_jobs,
        "environment": {"type": "gcp", "region": settings.region},
        "builder": {"type": settings.builder},
    }
    if settings.registry_uri:
        config["registry"] = {"uri": settings.registry_uri}
    return config


def agent_environment(settings: LauncherSettings, environ: Mapping[str, str]) -> dict[str, str]:
    """The agent's environment: the caller's plus the project and region for Google's libraries.

    wandb's GCP environment takes the project from `google.auth.default()`, which reads
    GOOGLE_CLOUD_PROJECT; gcloud reads the CLOUDSDK_* names.
    """
    env = dict(environ)
    env.update(
        GOOGLE_CLOUD_PROJECT=settings.project,
        CLOUDSDK_CORE_PROJECT=settings.project,
        GOOGLE_CLOUD_REGION=settings.region,
        CLOUDSDK_COMPUTE_REGION=settings.region,
        VERTEX_SPOT="1" if settings.spot else "0",
    )
    return env

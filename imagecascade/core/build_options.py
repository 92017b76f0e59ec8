"""Per-image Cloud Build options from the `[cloudbuild]` section of image.toml."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from imagecascade.core.settings import check_secret_version
from imagecascade.errors import ConfigError

MACHINE_TYPES = ("", "E2_MEDIUM", "E2_HIGHCPU_8", "E2_HIGHCPU_32", "N1_HIGHCPU_8", "N1_HIGHCPU_32")


@dataclasses.dataclass(frozen=True, kw_only=True)
class CloudBuildOptions:
    """How Cloud Build runs one image's build; none of these change the image itself."""

    machine_type: str = ""  # "" leaves Cloud Build's default (E2_STANDARD_2-like)
    disk_size_gb: int = 0  # 0 leaves Cloud Build's default (100 GB)
    timeout_minutes: int = 60
    worker_pool: str = ""  # projects/P/locations/L/workerPools/NAME; private pools allow any machine
    region: str = ""  # "" uses the repository-wide setting
    # secret id -> Secret Manager version; over cascade.toml's [cloudbuild.secrets] for this image
    secrets: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def with_overrides(self, **overrides: Any) -> CloudBuildOptions:
        return dataclasses.replace(
            self, **{key: value for key, value in overrides.items() if value is not None}
        )


def parse_cloudbuild_options(raw: Mapping[str, Any], where: str) -> CloudBuildOptions:
    known = {field.name: field for field in dataclasses.fields(CloudBuildOptions)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            raise ConfigError(f"{where}: unknown key {key!r} (known: {', '.join(known)})")
        if key == "secrets":
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: secrets must be a table of secret id = Secret Manager version")
            for secret_id, version in value.items():
                check_secret_version(secret_id, version, f"{where} secrets")
            values[key] = dict(value)
            continue
        expected = int if known[key].type in ("int", int) else str
        if not isinstance(value, expected) or isinstance(value, bool):
            raise ConfigError(f"{where}: {key} must be {'an integer' if expected is int else 'a string'}")
        values[key] = value
    if values.get("machine_type", "") not in MACHINE_TYPES and not values.get("worker_pool"):
        raise ConfigError(
            f"{where}: machine_type {values['machine_type']!r} is not a Cloud Build machine type "
            f"({', '.join(MACHINE_TYPES[1:])}); other types need a private worker_pool"
        )
    if values.get("timeout_minutes", 60) < 1:
        raise ConfigError(f"{where}: timeout_minutes must be at least 1")
    if values.get("disk_size_gb", 0) < 0:
        raise ConfigError(f"{where}: disk_size_gb must not be negative")
    return CloudBuildOptions(**values)

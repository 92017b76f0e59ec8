"""Cloud Build options: the `[cloudbuild]` section of image.toml, the repository-wide defaults in
cascade.toml and the command-line flags, with the ranges Cloud Build accepts.

Pure: no google code. The closed sets below are the enums of the Cloud Build v1 API
(`google.devtools.cloudbuild.v1.BuildOptions`); `tests/test_build_options.py` compares them with
the installed google-cloud-build so they cannot drift.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Any

from imagecascade.core.secrets import check_secret_version
from imagecascade.errors import ConfigError

# BuildOptions.MachineType without UNSPECIFIED ("" leaves Cloud Build's default, E2_STANDARD_2).
MACHINE_TYPES = (
    "N1_HIGHCPU_8",
    "N1_HIGHCPU_32",
    "E2_HIGHCPU_8",
    "E2_HIGHCPU_32",
    "E2_MEDIUM",
    "E2_STANDARD_2",
)
# BuildOptions.LoggingMode without LOGGING_UNSPECIFIED. STACKDRIVER_ONLY is the old name of
# CLOUD_LOGGING_ONLY.
LOGGING_MODES = ("LEGACY", "GCS_ONLY", "STACKDRIVER_ONLY", "CLOUD_LOGGING_ONLY", "NONE")
# Logging modes that keep the log out of Cloud Storage: nothing to tail, and a service account
# needs no logs bucket with them.
NO_BUCKET_LOGGING = ("STACKDRIVER_ONLY", "CLOUD_LOGGING_ONLY", "NONE")
MAX_TIMEOUT_MINUTES = 24 * 60  # Cloud Build refuses a build timeout above 24 h
MAX_DISK_SIZE_GB = 4000  # and a disk above 4000 GB
DEFAULT_TIMEOUT_MINUTES = 60  # when neither a flag, image.toml nor the YAML sets one

_POOL = re.compile(r"^projects/([^/]+)/locations/([a-z0-9-]+)/workerPools/([A-Za-z0-9_-]+)$")
_REGION = re.compile(r"^(?:global|[a-z]+(?:-[a-z]+)+[0-9]+)$")
_EMAIL = re.compile(r"^[^@/\s]+@[A-Za-z0-9.-]+$")
_ACCOUNT_NAME = re.compile(r"^projects/[^/\s]+/serviceAccounts/[^/\s]+$")
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")


@dataclasses.dataclass(frozen=True, kw_only=True)
class CloudBuildOptions:
    """How Cloud Build runs one image's build; none of these change the image itself.

    An empty string or 0 means "not set here": the next source in the order flag, image.toml,
    cascade.toml, `cloudbuild/<image>.yaml`, Cloud Build's own default decides.
    """

    machine_type: str = ""  # one of MACHINE_TYPES
    disk_size_gb: int = 0  # 1..4000
    timeout_minutes: int = 0  # 1..1440; unset everywhere: DEFAULT_TIMEOUT_MINUTES
    worker_pool: str = ""  # projects/P/locations/R/workerPools/NAME; the pool fixes machine and disk
    region: str = ""  # "" uses the repository-wide setting (or the pool's region)
    service_account: str = ""  # an email or projects/P/serviceAccounts/EMAIL
    logs_bucket: str = ""  # gs://bucket[/prefix]
    logging: str = ""  # one of LOGGING_MODES
    required: bool = False  # image.toml only: always build this image on Cloud Build
    # secret id -> Secret Manager version; over cascade.toml's [cloudbuild.secrets] for this image
    secrets: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def with_overrides(self, **overrides: Any) -> CloudBuildOptions:
        return dataclasses.replace(
            self, **{key: value for key, value in overrides.items() if value is not None}
        )

    @property
    def pool_region(self) -> str:
        match = _POOL.match(self.worker_pool)
        return match.group(2) if match else ""


@dataclasses.dataclass(frozen=True, kw_only=True)
class CloudBuildFlags:
    """Command-line flags; None means not given (the image's own `[cloudbuild]` value stays)."""

    machine_type: str | None = None
    disk_size_gb: int | None = None
    timeout_minutes: int | None = None
    worker_pool: str | None = None
    region: str | None = None
    service_account: str | None = None
    logs_bucket: str | None = None
    logging: str | None = None
    queued_timeout: float | None = None  # seconds a build may wait in the queue before it is cancelled

    def check(self) -> None:
        """One ConfigError naming the flag when a value is out of Cloud Build's range."""
        given = {
            field.name: getattr(self, field.name)
            for field in dataclasses.fields(self)
            if getattr(self, field.name) is not None and field.name != "queued_timeout"
        }
        check_options(given, lambda key: "--" + _FLAG_NAMES.get(key, key).replace("_", "-"))
        if self.queued_timeout is not None and self.queued_timeout <= 0:
            raise ConfigError(
                f"--queued-timeout must be a positive number of seconds, not {self.queued_timeout}"
            )

    def options_for(self, image_options: CloudBuildOptions) -> CloudBuildOptions:
        """The image's options with every given flag replacing the image's value."""
        return image_options.with_overrides(
            **{
                field.name: getattr(self, field.name)
                for field in dataclasses.fields(self)
                if field.name != "queued_timeout"
            }
        )

    def given(self, name: str) -> bool:
        return getattr(self, name, None) is not None


_FLAG_NAMES = {"disk_size_gb": "disk_size", "timeout_minutes": "timeout"}


def parse_cloudbuild_options(raw: Mapping[str, Any], where: str) -> CloudBuildOptions:
    """`[cloudbuild]` of an image.toml; `where` prefixes every error (file and section)."""
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
        kind = known[key].type
        expected: type = bool if kind in ("bool", bool) else int if kind in ("int", int) else str
        wrong = not isinstance(value, expected) or (expected is not bool and isinstance(value, bool))
        if wrong:
            article = {bool: "true or false", int: "an integer", str: "a string"}[expected]
            raise ConfigError(f"{where}: {key} must be {article}")
        values[key] = value
    check_options(values, lambda key: f"{where}: {key}")
    return CloudBuildOptions(**{**values, **normalised(values)})


def check_options(values: Mapping[str, Any], name: Callable[[str], str]) -> None:
    """Raise one ConfigError for the first value Cloud Build would refuse.

    `values` maps CloudBuildOptions field names to given values; `name(key)` says how the user
    wrote the key (`--timeout`, `images/x/image.toml: [cloudbuild]: timeout_minutes`).
    """
    machine = values.get("machine_type")
    if machine and machine not in MACHINE_TYPES and not values.get("worker_pool"):
        raise ConfigError(
            f"{name('machine_type')}: {machine!r} is not a Cloud Build machine type "
            f"({', '.join(MACHINE_TYPES)}); other machines need a private worker_pool"
        )
    timeout = values.get("timeout_minutes")
    if timeout is not None and not 1 <= timeout <= MAX_TIMEOUT_MINUTES:
        raise ConfigError(
            f"{name('timeout_minutes')}: {timeout} minutes is outside 1..{MAX_TIMEOUT_MINUTES} (24 h)"
        )
    disk = values.get("disk_size_gb")
    if disk is not None and not 0 <= disk <= MAX_DISK_SIZE_GB:
        raise ConfigError(
            f"{name('disk_size_gb')}: {disk} GB is outside 1..{MAX_DISK_SIZE_GB} (0: Cloud Build's default)"
        )
    pool = values.get("worker_pool")
    if pool and not _POOL.match(pool):
        raise ConfigError(
            f"{name('worker_pool')}: {pool!r} is not a private pool name "
            "(projects/PROJECT/locations/REGION/workerPools/NAME)"
        )
    region = values.get("region")
    if region and not _REGION.match(region):
        raise ConfigError(
            f"{name('region')}: {region!r} is not a Cloud Build region (e.g. us-central1, global)"
        )
    account = values.get("service_account")
    if account and not (_EMAIL.match(account) or _ACCOUNT_NAME.match(account)):
        raise ConfigError(
            f"{name('service_account')}: {account!r} is neither a service account email nor "
            "projects/PROJECT/serviceAccounts/EMAIL"
        )
    bucket = values.get("logs_bucket")
    if bucket and not _BUCKET_NAME.match(bucket.removeprefix("gs://").partition("/")[0]):
        raise ConfigError(f"{name('logs_bucket')}: {bucket!r} is not gs://BUCKET or gs://BUCKET/PREFIX")
    logging = values.get("logging")
    if logging and logging not in LOGGING_MODES:
        raise ConfigError(f"{name('logging')}: {logging!r} is not one of {', '.join(LOGGING_MODES)}")


def normalised(values: Mapping[str, Any]) -> dict[str, Any]:
    """The values written the one way Cloud Build reads them (logs bucket as gs://...)."""
    bucket = values.get("logs_bucket")
    if bucket and not bucket.startswith("gs://"):
        return {"logs_bucket": f"gs://{bucket}"}
    return {}


def service_account_name(account: str, project: str) -> str:
    """`projects/P/serviceAccounts/EMAIL`, the form Cloud Build takes, from an email or that form.

    An account email names its own project (`x@P.iam.gserviceaccount.com`); other emails are
    taken to live in the build's `project`.
    """
    if account.startswith("projects/"):
        return account
    domain = account.partition("@")[2]
    owner = (
        domain.removesuffix(".iam.gserviceaccount.com")
        if domain.endswith(".iam.gserviceaccount.com")
        else project
    )
    return f"projects/{owner}/serviceAccounts/{account}"

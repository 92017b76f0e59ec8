"""What is submitted to Cloud Build for one image: the one place a build body is put together.

Pure: the body is the REST API's `Build` JSON (camelCase, enums by name), so what is checked here is
exactly what goes on the wire. It starts from the committed `cloudbuild/<image>.yaml` with the
image's substitutions, then every build option is taken from the first of: a command-line flag,
the image's `[cloudbuild]` in image.toml, `[cloudbuild]` in cascade.toml (service account and
logging only), the YAML itself, and finally Cloud Build's default (60 minutes for the timeout).
Everything Cloud Build would refuse is refused here first, with one line naming where the value
came from.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

from imagecascade.cloud import cloudbuild_config
from imagecascade.core.backend import BuildRequest
from imagecascade.core.build_options import (
    DEFAULT_TIMEOUT_MINUTES,
    MACHINE_TYPES,
    MAX_DISK_SIZE_GB,
    MAX_TIMEOUT_MINUTES,
    NO_BUCKET_LOGGING,
    CloudBuildFlags,
    check_options,
    normalised,
    service_account_name,
)
from imagecascade.core.context_tar import plan_packing
from imagecascade.core.declaration import ImageSpec
from imagecascade.core.dockerfile import buildkit_features, read_dockerfile
from imagecascade.core.plan import PlannedImage
from imagecascade.core.refusals import Refusal
from imagecascade.core.settings import Settings
from imagecascade.errors import ConfigError

DOCKER_NETWORK = "--network=cloudbuild"
_FLAGS = {
    "machine_type": "--machine-type",
    "disk_size_gb": "--disk-size",
    "timeout_minutes": "--timeout",
    "worker_pool": "--worker-pool",
    "region": "--region",
    "service_account": "--service-account",
    "logs_bucket": "--logs-bucket",
    "logging": "--logging",
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Submission:
    """One image's build, ready to submit once its source is added (`with_source`)."""

    body: dict[str, Any]  # the REST `Build` without `source`
    region: str  # "global" or the region whose endpoint receives it
    lookup_tags: tuple[str, ...]  # the tags an equivalent ongoing build carries
    notes: tuple[str, ...]  # lines for the user: which timeout won, what a pool ignores
    logging: str  # options.logging as submitted ("" = Cloud Build's default, LEGACY)
    queued_timeout: float | None  # --queued-timeout, seconds from createTime
    config_path: Path

    def with_source(self, bucket: str, name: str, generation: int, submission_tag: str) -> dict[str, Any]:
        """The body with its pinned source and the tag that finds this very submission again."""
        source = {"storageSource": {"bucket": bucket, "object": name, "generation": str(generation)}}
        return {**self.body, "source": source, "tags": [*self.body["tags"], submission_tag]}


def secret_versions(spec: ImageSpec, settings: Settings) -> dict[str, str]:
    """The image's declared secrets that have a Secret Manager version (image.toml over cascade.toml)."""
    mapping = {**settings.cloudbuild_secrets, **spec.cloudbuild.secrets}
    return {key: mapping[key] for key in spec.secrets if key in mapping}


def secret_refusals(image: PlannedImage, settings: Settings) -> tuple[Refusal, ...]:
    """A required secret without a Secret Manager version stops the image before submitting."""
    versions = secret_versions(image.spec, settings)
    return tuple(
        Refusal(
            f"required secret {secret_id!r} has no Secret Manager version for Cloud Build",
            f'set {secret_id} = "projects/PROJECT/secrets/NAME/versions/latest" under '
            "[cloudbuild.secrets] in cascade.toml or the image's image.toml",
        )
        for secret_id in image.spec.required_secrets
        if secret_id not in versions
    )


def registry_tag(registry: str) -> str:
    """A build tag naming the target registry (tags cannot hold `/` or `:`, so it is a digest)."""
    return "registry-" + hashlib.sha256(registry.encode()).hexdigest()[:16]


def build_submission(request: BuildRequest, settings: Settings, flags: CloudBuildFlags) -> Submission:
    """The checked body for `request`; ConfigError (one line) for anything Cloud Build refuses."""
    image = request.image
    path = cloudbuild_config.config_path(settings.root, image.name)
    shown = _shown(path, settings.root)
    config = cloudbuild_config.load_config(path)
    substitutions = cloudbuild_config.image_substitutions(
        tag=image.tag, registry=request.registry, build_args=request.build_args, labels=request.labels
    )
    cloudbuild_config.check_substitutions(path, config, substitutions)
    merged = {**config.get("substitutions", {}), **substitutions}
    resolved = cloudbuild_config.apply_substitutions(config, merged)
    _check_resolved(path, resolved, request)
    lookup_tags = ("imagecascade", image.name, f"hash-{image.tag}", registry_tag(request.registry))
    tag_problems = cloudbuild_config.tag_problems(
        [*resolved.get("tags", []), *lookup_tags[3:], "submission-x"]
    )
    if tag_problems:
        raise ConfigError(f"{path}: {'; '.join(tag_problems)}")

    body = {key: value for key, value in config.items() if key != "substitutions"}
    # Secrets reach the docker step from Secret Manager (availableSecrets + secretEnv), never as
    # values here; a Dockerfile with BuildKit syntax builds with DOCKER_BUILDKIT=1.
    buildkit = bool(buildkit_features(read_dockerfile(image.spec.dockerfile)))
    body = cloudbuild_config.with_secrets(
        path, body, secret_versions(image.spec, settings), buildkit=buildkit
    )
    body["substitutions"] = merged
    body["tags"] = [*(config.get("tags") or []), lookup_tags[3]]
    options = dict(config.get("options") or {})
    image_toml = f"{_shown(image.spec.declaration_path, settings.root)} [cloudbuild]"
    pick = _Picker(flags, image.spec.cloudbuild, settings, image_toml, shown)
    notes: list[str] = []

    timeout, origin = pick("timeout_minutes", _yaml_minutes(config, "timeout", shown))
    seconds = (
        timeout * 60
        if origin != shown
        else cloudbuild_config.duration_seconds(config["timeout"], f"{shown}: timeout")
    )
    if timeout == 0:
        seconds, origin = DEFAULT_TIMEOUT_MINUTES * 60, "the default"
    if seconds > MAX_TIMEOUT_MINUTES * 60 or seconds <= 0:
        raise ConfigError(f"{origin}: timeout {_clock(seconds)} is outside Cloud Build's range (up to 24 h)")
    body["timeout"] = _duration(seconds)
    notes.append(f"timeout {_clock(seconds)} from {origin}")
    _check_step_timeouts(config, seconds, shown)
    if flags.queued_timeout is not None:
        body["queueTtl"] = _duration(flags.queued_timeout)
    elif "queueTtl" in config:
        cloudbuild_config.duration_seconds(config["queueTtl"], f"{shown}: queueTtl")

    pool, pool_origin = pick("worker_pool", _yaml_pool(options))
    region, region_origin = pick("region", "", settings_value=settings.cloudbuild_region)
    if pool:
        pool_region = pool.split("/")[3]
        if region_origin not in ("cascade.toml", "the default") and region and region != pool_region:
            raise ConfigError(
                f"{region_origin}: region {region} conflicts with the private pool {pool} ({pool_origin}): "
                f"a pool's builds run in its own region, {pool_region}"
            )
        region = pool_region
        options["pool"] = {"name": pool}
        options.pop("workerPool", None)
    region = region or "global"

    machine, machine_origin = pick("machine_type", str(options.get("machineType") or ""))
    disk, disk_origin = pick("disk_size_gb", int(options.get("diskSizeGb") or 0))
    if pool:
        for what, value, where in (
            ("machine type", machine, machine_origin),
            ("disk size", disk, disk_origin),
        ):
            if value:
                notes.append(f"{what} {value} ({where}) ignored: the private pool {pool} decides the machine")
        options.pop("machineType", None)
        options.pop("diskSizeGb", None)
    else:
        if machine and machine not in MACHINE_TYPES:
            raise ConfigError(
                f"{machine_origin}: machine type {machine!r} is not one of {', '.join(MACHINE_TYPES)}"
            )
        if not 0 <= disk <= MAX_DISK_SIZE_GB:
            raise ConfigError(
                f"{disk_origin}: disk size {disk} GB is above Cloud Build's {MAX_DISK_SIZE_GB} GB"
            )
        if machine:
            options["machineType"] = machine
        if disk:
            options["diskSizeGb"] = str(disk)

    account, account_origin = pick("service_account", str(config.get("serviceAccount") or ""))
    logs_bucket, _ = pick("logs_bucket", str(config.get("logsBucket") or ""))
    logging, _ = pick("logging", str(options.get("logging") or ""))
    check_options(
        {"service_account": account, "logs_bucket": logs_bucket, "logging": logging}, lambda key: shown
    )
    logs_bucket = normalised({"logs_bucket": logs_bucket}).get("logs_bucket", logs_bucket)
    bucket_behavior = options.get("defaultLogsBucketBehavior")
    if (
        account
        and not logs_bucket
        and logging not in NO_BUCKET_LOGGING
        and bucket_behavior != "REGIONAL_USER_OWNED_BUCKET"
    ):
        raise ConfigError(
            f"{account_origin}: a build with service account {account} needs somewhere for its log: "
            "pass --logs-bucket gs://BUCKET (a bucket of yours) or --logging CLOUD_LOGGING_ONLY, or set "
            "logs_bucket or logging in [cloudbuild]; Cloud Build refuses serviceAccount without logsBucket "
            "or options.logging CLOUD_LOGGING_ONLY/NONE"
        )
    if account:
        body["serviceAccount"] = service_account_name(account, settings.cloudbuild_project)
    if logs_bucket:
        body["logsBucket"] = logs_bucket
    if logging:
        options["logging"] = logging
    if options:
        body["options"] = options
    return Submission(
        body=body,
        region=region,
        lookup_tags=lookup_tags,
        notes=tuple(notes),
        logging=logging,
        queued_timeout=flags.queued_timeout,
        config_path=path,
    )


class _Picker:
    """The first value set among flag, image.toml, cascade.toml and the YAML, with where it came from."""

    def __init__(
        self, flags: CloudBuildFlags, image: Any, settings: Settings, image_toml: str, yaml_shown: str
    ) -> None:
        self._flags = flags
        self._image = image
        self._defaults = settings.cloudbuild_defaults()
        self._image_toml = image_toml
        self._yaml = yaml_shown

    def __call__(self, name: str, yaml_value: Any, settings_value: Any = None) -> tuple[Any, str]:
        flag = getattr(self._flags, name)
        if flag not in (None, "", 0):
            return flag, _FLAGS[name]
        own = getattr(self._image, name)
        if own:
            return own, f"{self._image_toml} {name}"
        default = settings_value if settings_value is not None else self._defaults.get(name)
        if default and default != "global":
            return default, "cascade.toml"
        if yaml_value:
            return yaml_value, self._yaml
        empty: Any = 0 if isinstance(yaml_value, int) else ""
        return empty, "the default"


def _check_resolved(path: Path, resolved: dict[str, Any], request: BuildRequest) -> None:
    image = request.image
    listed = [str(item) for item in resolved.get("images") or []]
    if listed != list(request.references):
        raise ConfigError(
            f"{path}: images: must list {', '.join(request.references)} (the hash tag first, then "
            f"latest); with these substitutions it lists {', '.join(listed) or 'none'}"
        )
    expected_tags = {"imagecascade", image.name, f"hash-{image.tag}"}
    if not expected_tags <= set(resolved.get("tags") or []):
        raise ConfigError(f"{path}: tags: must include imagecascade, {image.name} and hash-${{_TAG}}")
    dockerfile = plan_packing(
        image.spec.context, image.spec.dockerfile, image.inputs.files, any_side_name=False
    ).dockerfile_name
    for step in resolved["steps"]:
        args = [str(arg) for arg in step.get("args") or []]
        if not args or args[0] != "build" or not str(step.get("name", "")).endswith("docker"):
            continue
        files = [arg.partition("=")[2] for arg in args if arg.startswith("--file=")]
        if files and files != [dockerfile]:
            raise ConfigError(
                f"{path}: the docker step must read --file={dockerfile} (the Dockerfile's path in the source)"
            )
        if DOCKER_NETWORK not in args:
            raise ConfigError(
                f"{path}: the docker build step must pass {DOCKER_NETWORK}, so that RUN steps can use the "
                "build's service account (a private package index in Artifact Registry)"
            )


def _yaml_minutes(config: dict[str, Any], key: str, shown: str) -> int:
    """A marker that the YAML sets `key` (its value is read in seconds by the caller)."""
    if key not in config:
        return 0
    seconds = cloudbuild_config.duration_seconds(config[key], f"{shown}: {key}")
    return max(1, round(seconds / 60))


def _yaml_pool(options: dict[str, Any]) -> str:
    pool = options.get("pool")
    name = pool.get("name") if isinstance(pool, dict) else None
    return str(name or options.get("workerPool") or "")


def _check_step_timeouts(config: dict[str, Any], build_seconds: float, shown: str) -> None:
    for index, step in enumerate(config["steps"]):
        if "timeout" in step:
            seconds = cloudbuild_config.duration_seconds(step["timeout"], f"{shown}: steps[{index}].timeout")
            if seconds > build_seconds:
                raise ConfigError(
                    f"{shown}: steps[{index}].timeout {_clock(seconds)} is longer than the build's "
                    f"{_clock(build_seconds)}"
                )


def _duration(seconds: float) -> str:
    return f"{seconds:.9f}".rstrip("0").rstrip(".") + "s"


def _clock(seconds: float) -> str:
    minutes, second = divmod(int(seconds), 60)
    hours, minute = divmod(minutes, 60)
    return f"{hours}:{minute:02d}:{second:02d}"


def _shown(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)

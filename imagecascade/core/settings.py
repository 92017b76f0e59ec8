"""Repository-wide settings from the committed `cascade.toml`, overridable per command."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from imagecascade.core.build_options import check_options, normalised
from imagecascade.core.secrets import SecretSource, check_secret_version
from imagecascade.core.tomlfile import read_toml
from imagecascade.errors import ConfigError

SETTINGS_FILE = "cascade.toml"
IMAGES_DIR = "images"
LOCK_FILE = "images.lock.json"
CACHE_DIR = ".cache/imagecascade"
# What the tool writes into the repository besides its cache: never part of any build context.
BUILD_LOG_DIR = "reports/build-logs"
SMOKE_JUNIT_FILE = "reports/smoke-junit.xml"
SecretFiles = Literal["warn", "error"]
DEFAULT_PUSH_TIMEOUT = 300.0  # seconds a push may go without progress

# section -> key -> (Settings field, type)
_KNOWN: dict[str, dict[str, tuple[str, type]]] = {
    "registry": {"url": ("registry", str), "push_timeout": ("push_timeout", float)},
    "build": {
        "jobs": ("jobs", int),
        "secret_files": ("secret_files", str),
        "builder": ("builder", str),
        "docker_cli": ("docker_cli", str),
    },
    "cloudbuild": {
        "project": ("cloudbuild_project", str),
        "region": ("cloudbuild_region", str),
        "bucket": ("cloudbuild_bucket", str),
        "service_account": ("cloudbuild_service_account", str),
        "logs_bucket": ("cloudbuild_logs_bucket", str),
        "logging": ("cloudbuild_logging", str),
        "secrets": ("cloudbuild_secrets", dict),
    },
}
BUILDERS = ("auto", "buildkit", "classic")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    """Values every command shares; the empty string means "not configured"."""

    root: Path
    registry: str = ""
    jobs: int = 2
    secret_files: SecretFiles = "warn"  # what a sent file that looks like a credential is
    cloudbuild_project: str = ""
    cloudbuild_region: str = "global"
    cloudbuild_bucket: str = ""  # "" = gcloud's default staging bucket, see default_source_bucket
    # Defaults for every image's build, overridden by image.toml and flags (see build_options).
    cloudbuild_service_account: str = ""
    cloudbuild_logs_bucket: str = ""
    cloudbuild_logging: str = ""
    # secret id -> Secret Manager version, for builds on Cloud Build
    cloudbuild_secrets: Mapping[str, str] = dataclasses.field(default_factory=dict)
    builder: str = "auto"  # auto | buildkit | classic
    docker_cli: str = ""  # the docker CLI that drives BuildKit; "" = IMAGECASCADE_DOCKER_CLI, else PATH
    # secret id -> where its value lives on this machine (--secret, cascade.local.toml); never committed
    secrets: Mapping[str, SecretSource] = dataclasses.field(default_factory=dict)
    push_timeout: float = DEFAULT_PUSH_TIMEOUT

    @property
    def images_dir(self) -> Path:
        return self.root / IMAGES_DIR

    @property
    def lock_path(self) -> Path:
        return self.root / LOCK_FILE

    @property
    def cache_dir(self) -> Path:
        return self.root / CACHE_DIR

    def source_bucket(self, region: str) -> tuple[str, bool]:
        """(bucket for source tarballs, whether it is the default one) for a build in `region`.

        The default is named as gcloud names it (googlecloudsdk/api_lib/cloudbuild/
        staging_bucket_util.py): the project id with `:` and `.` turned into `_` and `google`
        into `elgoog` (domain-scoped ids like `example.com:proj` give valid bucket names), then
        `_cloudbuild`, or `_<region>_cloudbuild` for a regional build, created in that region.
        """
        if self.cloudbuild_bucket:
            return self.cloudbuild_bucket, False
        if not self.cloudbuild_project:
            return "", True
        safe = self.cloudbuild_project.replace(":", "_").replace(".", "_").replace("google", "elgoog")
        if region and region != "global":
            return f"{safe}_{region}_cloudbuild", True
        return f"{safe}_cloudbuild", True

    def cloudbuild_defaults(self) -> dict[str, str]:
        """The repository-wide build options of cascade.toml, as CloudBuildOptions fields."""
        return {
            "service_account": self.cloudbuild_service_account,
            "logs_bucket": self.cloudbuild_logs_bucket,
            "logging": self.cloudbuild_logging,
        }

    def with_overrides(self, **overrides: Any) -> Settings:
        """Apply command-line flags; None means the flag was not given."""
        given = {key: value for key, value in overrides.items() if value is not None}
        if "registry" in given:
            given["registry"] = check_registry(str(given["registry"]).rstrip("/"), "--registry")
        if "builder" in given:
            check_builder(str(given["builder"]), "--builder")
        return dataclasses.replace(self, **given)


# Docker's reference grammar (distribution/reference, regexp.go): a registry host, then lowercase
# path components separated by `/`.
_DOMAIN = re.compile(
    r"^(?:localhost|\[[0-9a-fA-F:.]+\]|(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
    r"(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*)(?::[0-9]+)?$"
)
_PATH_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")


def check_registry(value: str, where: str) -> str:
    """`value` when `<value>/<image>:<tag>` is a valid image reference, else ConfigError naming `where`.

    `value` is `HOST[:PORT][/PATH...]` (e.g. `us-docker.pkg.dev/project/repo`, `127.0.0.1:5000/team`)
    or a Docker Hub namespace; the rule is Docker's own reference grammar (distribution/reference):
    path components are lowercase letters and digits joined by `.`, `_`, `__` or dashes.
    """
    if not value:
        return value  # not configured: images stay in the local engine
    if "://" in value:
        raise ConfigError(
            f"{where}: {value!r}: write the registry without a scheme, e.g. "
            f"{value.split('://', 1)[1] or '127.0.0.1:5000/team'!r}"
        )
    parts = value.split("/")
    first = parts[0]
    # The image name always follows, so a first part that looks like a host is one (as in Docker).
    host = "." in first or ":" in first or first == "localhost" or first.startswith("[")
    if host and not _DOMAIN.match(first):
        raise ConfigError(f"{where}: {value!r}: {first!r} is not a registry host[:port]")
    for component in parts[1:] if host else parts:
        if not _PATH_COMPONENT.match(component):
            why = "must be lowercase" if component.lower() != component else "is not a valid path component"
            raise ConfigError(
                f"{where}: {value!r}: repository path {component!r} {why} "
                "(lowercase letters and digits, joined by '.', '_' or '-')"
            )
    return value


def check_builder(value: str, where: str) -> str:
    if value not in BUILDERS:
        raise ConfigError(f"{where}: unknown builder {value!r} (known: {', '.join(BUILDERS)})")
    return value


def find_root(start: Path) -> Path:
    """The nearest folder at or above `start` holding `cascade.toml` or `images/`."""
    start = start.resolve()
    for folder in (start, *start.parents):
        if (folder / SETTINGS_FILE).is_file() or (folder / IMAGES_DIR).is_dir():
            return folder
    raise ConfigError(f"{start}: no {SETTINGS_FILE} or {IMAGES_DIR}/ here or in any parent folder")


def load_settings(root: Path) -> Settings:
    """Read `cascade.toml` under `root` (absent file: defaults)."""
    path = root / SETTINGS_FILE
    if not path.exists():
        return Settings(root=root)
    data = read_toml(path)
    values: dict[str, Any] = {}
    for section, content in data.items():
        if section not in _KNOWN:
            raise ConfigError(f"{path}: unknown section [{section}] (known: {', '.join(_KNOWN)})")
        if not isinstance(content, dict):
            raise ConfigError(f"{path}: [{section}] must be a table")
        for key, value in content.items():
            if key not in _KNOWN[section]:
                known = ", ".join(_KNOWN[section])
                raise ConfigError(f"{path}: unknown key {section}.{key} (known: {known})")
            field, expected = _KNOWN[section][key]
            accepted = (int, float) if expected is float else expected  # TOML writes 300 and 300.0
            if not isinstance(value, accepted) or isinstance(value, bool):
                kind = {dict: "a table", float: "a number", int: "an integer", str: "a string"}[expected]
                raise ConfigError(f"{path}: {section}.{key} must be {kind}")
            values[field] = float(value) if isinstance(value, int | float) and expected is float else value
    if "registry" in values:
        values["registry"] = check_registry(values["registry"].rstrip("/"), f"{path}: registry.url")
    if values.get("jobs", 1) < 1:
        raise ConfigError(f"{path}: build.jobs must be at least 1")
    if values.get("secret_files", "warn") not in ("warn", "error"):
        raise ConfigError(f'{path}: build.secret_files must be "warn" or "error"')
    if "builder" in values:
        check_builder(values["builder"], f"{path}: build.builder")
    for secret_id, version in values.get("cloudbuild_secrets", {}).items():
        check_secret_version(secret_id, version, f"{path}: cloudbuild.secrets")
    cloud = {
        "region": values.get("cloudbuild_region", ""),
        **{key: values.get(f"cloudbuild_{key}", "") for key in ("service_account", "logs_bucket", "logging")},
    }
    check_options(cloud, lambda key: f"{path}: cloudbuild.{key}")
    values.update({f"cloudbuild_{key}": value for key, value in normalised(cloud).items()})
    if not 0 < values.get("push_timeout", 1.0) < float("inf"):
        raise ConfigError(f"{path}: registry.push_timeout must be a positive number of seconds")
    return Settings(root=root, **values)

"""The committed Cloud Build configs, `cloudbuild/<image>.yaml`: loading, substitutions, checks.

Pure: no google code. The same file is what `gcloud builds submit --config` reads by hand and what
the Cloud Build backend submits through the API, so both are checked here the way Cloud Build
checks them: every user substitution a config uses must be provided, and every provided one must
be used (Cloud Build rejects unused ones unless `substitutionOption: ALLOW_LOOSE`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from imagecascade.errors import ConfigError

CONFIG_DIR = "cloudbuild"

# Substitutions Cloud Build fills in itself; a config may use them without anyone providing them.
BUILTIN_SUBSTITUTIONS = frozenset(
    {
        "PROJECT_ID",
        "PROJECT_NUMBER",
        "BUILD_ID",
        "LOCATION",
        "TRIGGER_NAME",
        "TRIGGER_BUILD_CONFIG_PATH",
        "COMMIT_SHA",
        "REVISION_ID",
        "SHORT_SHA",
        "REPO_NAME",
        "REPO_FULL_NAME",
        "BRANCH_NAME",
        "TAG_NAME",
        "REF_NAME",
        "SERVICE_ACCOUNT_EMAIL",
        "SERVICE_ACCOUNT",
    }
)
# `$$` is a literal dollar; `$NAME` and `${NAME}` are substitutions (Cloud Build's own grammar).
_REFERENCE = re.compile(r"\$\$|\$\{([A-Za-z0-9_]+)\}|\$([A-Za-z0-9_]+)")
_USER_KEY = re.compile(r"^_[A-Z0-9_]+$")
OCI_PREFIX = "org.opencontainers.image."


def config_path(root: Path, image: str) -> Path:
    return root / CONFIG_DIR / f"{image}.yaml"


def load_config(path: Path) -> dict[str, Any]:
    """The parsed config; a missing, unreadable or malformed file is a ConfigError."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as error:
        raise ConfigError(
            f"{path}: missing (the Cloud Build config of image {path.stem}; copy another one in "
            f"{CONFIG_DIR}/ and adapt it)"
        ) from error
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read: {error}") from error
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: invalid YAML: {error}") from error
    if not isinstance(data, dict) or not isinstance(data.get("steps"), list) or not data["steps"]:
        raise ConfigError(f"{path}: a Cloud Build config needs a non-empty `steps:` list")
    substitutions = data.get("substitutions", {})
    if not isinstance(substitutions, dict) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in substitutions.items()
    ):
        raise ConfigError(f"{path}: `substitutions:` must map names to strings")
    return data


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [text for item in value.values() for text in _strings(item)]
    if isinstance(value, list):
        return [text for item in value for text in _strings(item)]
    return []


def used_substitutions(config: Mapping[str, Any]) -> set[str]:
    """Every substitution name the config refers to (built-in and user-defined)."""
    body = {key: value for key, value in config.items() if key != "substitutions"}
    names: set[str] = set()
    for text in _strings(body):
        for match in _REFERENCE.finditer(text):
            name = match.group(1) or match.group(2)
            if name:
                names.add(name)
    return names


def substitution_problems(config: Mapping[str, Any], provided: Mapping[str, str]) -> list[str]:
    """What Cloud Build would reject: used but not provided, provided but not used, bad names."""
    available = {**config.get("substitutions", {}), **provided}
    used = used_substitutions(config)
    problems = []
    for name in sorted(used - set(available) - BUILTIN_SUBSTITUTIONS):
        problems.append(
            f"uses ${name}, which is not provided"
            if name.startswith("_")
            else f"uses ${name}, which is neither built in nor a user substitution (those start with _)"
        )
    for name in sorted(set(available) - used):
        problems.append(f"substitution {name} is provided but never used")
    for name in sorted(available):
        if not _USER_KEY.match(name):
            problems.append(f"substitution {name} must start with _ and hold only A-Z, 0-9 and _")
    return problems


def check_substitutions(path: Path, config: Mapping[str, Any], provided: Mapping[str, str]) -> None:
    problems = substitution_problems(config, provided)
    if problems:
        raise ConfigError(f"{path}: {'; '.join(problems)}")


def apply_substitutions(value: Any, substitutions: Mapping[str, str]) -> Any:
    """`value` with `$_X`/`${_X}` replaced and `$$` unescaped; built-ins and unknown names stay."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(2)
        return substitutions.get(name, match.group(0))

    if isinstance(value, str):
        return _REFERENCE.sub(replace, value)
    if isinstance(value, Mapping):
        return {key: apply_substitutions(item, substitutions) for key, item in value.items()}
    if isinstance(value, list):
        return [apply_substitutions(item, substitutions) for item in value]
    return value


def build_arg_substitution(arg: str) -> str:
    """`MAX_JOBS` → `_MAX_JOBS`: each build arg (BASE_IMAGE included) travels as one substitution."""
    return "_" + re.sub(r"[^A-Z0-9]+", "_", arg.upper())


def label_substitution(key: str) -> str:
    """`org.opencontainers.image.created` → `_OCI_CREATED`, `imagecascade.hash` → `_LABEL_IMAGECASCADE_HASH`.

    One substitution per label, because a substitution cannot expand into several arguments.
    """
    if key.startswith(OCI_PREFIX):
        return "_OCI_" + re.sub(r"[^A-Z0-9]+", "_", key[len(OCI_PREFIX) :].upper())
    return "_LABEL_" + re.sub(r"[^A-Z0-9]+", "_", key.upper())


def image_substitutions(
    *,
    tag: str,
    registry: str,
    build_args: Mapping[str, str],
    labels: Mapping[str, str],
) -> dict[str, str]:
    """The substitutions one image's build is submitted with.

    `_TAG` is the freshness hash tag, `_REGISTRY` where both tags are pushed, `_<ARG>` each build
    arg (`_BASE_IMAGE` the exact parent or base reference), and one substitution per label.
    """
    result = {"_TAG": tag, "_REGISTRY": registry}
    origin = {"_TAG": "the hash tag", "_REGISTRY": "the registry"}
    pairs = [(build_arg_substitution(arg), value, f"build arg {arg}") for arg, value in build_args.items()]
    pairs += [(label_substitution(key), value, f"label {key}") for key, value in labels.items()]
    for name, value, what in pairs:
        if name in result:
            raise ConfigError(f"{what} and {origin[name]} both map to the Cloud Build substitution {name}")
        result[name] = value
        origin[name] = what
    return dict(sorted(result.items()))


def declared_build_args(config: Mapping[str, Any]) -> set[str]:
    """Build args the config's docker steps pass (`--build-arg NAME=...` or `--build-arg=NAME=...`)."""
    names = set()
    for step in config.get("steps", []):
        args = [str(arg) for arg in (step.get("args") or [])] if isinstance(step, Mapping) else []
        for index, arg in enumerate(args):
            value = None
            if arg == "--build-arg" and index + 1 < len(args):
                value = args[index + 1]
            elif arg.startswith("--build-arg="):
                value = arg[len("--build-arg=") :]
            if value is not None:
                names.add(value.partition("=")[0])
    return names


def secret_env(secret_id: str) -> str:
    """`pip_conf` → `IMAGECASCADE_SECRET_PIP_CONF`: the variable a Secret Manager version arrives in."""
    return "IMAGECASCADE_SECRET_" + re.sub(r"[^A-Z0-9]+", "_", secret_id.upper())


def with_secrets(
    path: Path, config: Mapping[str, Any], versions: Mapping[str, str], *, buildkit: bool = False
) -> dict[str, Any]:
    """`config` whose docker build steps receive `versions` (secret id → Secret Manager version).

    Each secret is listed once in `availableSecrets.secretManager` with its own variable; every
    docker build step names the variables in `secretEnv`, passes `--secret id=ID,env=VAR` and
    builds with BuildKit (`DOCKER_BUILDKIT=1`, also set without secrets when `buildkit`: the
    Dockerfile uses BuildKit syntax). Cloud Build hands the values to the step's environment only,
    so neither the config, the substitutions nor the build record holds one. Raises ConfigError
    when the config has no docker build step or two ids share a variable.
    """
    result = dict(config)
    if not versions and not buildkit:
        return result
    names: dict[str, str] = {}
    for secret_id in sorted(versions):
        env = secret_env(secret_id)
        if env in names:
            raise ConfigError(f"secrets {names[env]} and {secret_id} both map to the variable {env}")
        names[env] = secret_id
    steps = [dict(step) if isinstance(step, Mapping) else step for step in config.get("steps", [])]
    found = False
    for step in steps:
        if not isinstance(step, dict):
            continue
        args = [str(arg) for arg in step.get("args") or []]
        if (
            not str(step.get("name", "")).rstrip("/").split("/")[-1].startswith("docker")
            or "build" not in args[:2]
        ):
            continue
        found = True
        at = args.index("build") + 1
        step["args"] = [*args[:at], *(f"--secret=id={names[env]},env={env}" for env in names), *args[at:]]
        if names:
            step["secretEnv"] = sorted({*(step.get("secretEnv") or []), *names})
        env_list = [item for item in step.get("env") or [] if not str(item).startswith("DOCKER_BUILDKIT=")]
        step["env"] = [*env_list, "DOCKER_BUILDKIT=1"]
    if not found and not versions:
        return result  # no docker build step to switch to BuildKit: the config builds otherwise
    if not found:
        raise ConfigError(
            f"{path}: no docker build step to pass the secrets {', '.join(sorted(versions))} to"
        )
    result["steps"] = steps
    if not names:
        return result
    available = dict(result.get("availableSecrets") or {})
    listed = [item for item in available.get("secretManager") or [] if item.get("env") not in names]
    available["secretManager"] = listed + [
        {"versionName": versions[secret_id], "env": env} for env, secret_id in names.items()
    ]
    result["steps"] = steps
    result["availableSecrets"] = available
    return result

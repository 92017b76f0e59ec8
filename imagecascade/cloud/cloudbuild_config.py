"""The committed Cloud Build configs, `cloudbuild/<image>.yaml`: loading, substitutions, checks.

Pure: no google code. The same file is what `gcloud builds submit --config` reads by hand and what
the Cloud Build backend submits through the API, so both are checked here the way Cloud Build
checks them. The substitution grammar and the checks are ported from Cloud Build's open-source
local builder (GoogleCloudPlatform/cloud-build-local, `subst/subst.go` and `validate/validate.go`):

- `$$` is a literal `$`; `$NAME` and `${NAME}` are substitutions only when NAME matches
  `[A-Z_][A-Z0-9_]*`, so shell code such as `$f`, `$1`, `${name}` or `$(cmd)` is left alone;
- a used name that is neither provided nor built in is refused (`$HOME`: write `$$HOME`);
- a used user substitution (`_X`) that is not provided, or a provided one that is never used, is
  refused unless `options.substitutionOption: ALLOW_LOOSE` (then a missing one is empty);
- substitutions apply to the steps' name, args, env, dir and entrypoint, to `images`, `tags`,
  `artifacts` and secret version names, nowhere else.

Built-ins that only a trigger fills (`$COMMIT_SHA`, `$SHORT_SHA`, ...) are refused with the
reason: a build of uploaded source leaves them empty, so a tag like `app:$SHORT_SHA` would be
`app:`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from imagecascade.errors import ConfigError

CONFIG_DIR = "cloudbuild"

# Substitutions Cloud Build fills in itself for a build submitted with uploaded source.
BUILTIN_SUBSTITUTIONS = frozenset(
    {"PROJECT_ID", "PROJECT_NUMBER", "BUILD_ID", "LOCATION", "SERVICE_ACCOUNT_EMAIL", "SERVICE_ACCOUNT"}
)
# Built-ins that only a trigger (a source repository) fills; empty here.
TRIGGER_SUBSTITUTIONS = frozenset(
    {
        "COMMIT_SHA",
        "SHORT_SHA",
        "REVISION_ID",
        "REPO_NAME",
        "REPO_FULL_NAME",
        "BRANCH_NAME",
        "TAG_NAME",
        "REF_NAME",
        "TRIGGER_NAME",
        "TRIGGER_BUILD_CONFIG_PATH",
    }
)
_REFERENCE = re.compile(r"\$\$|\$\{([A-Z_][A-Z0-9_]*)\}|\$([A-Z_][A-Z0-9_]*)")
_USER_KEY = re.compile(r"^_[A-Z0-9_]+$")
_BUILD_TAG = re.compile(r"^[\w][\w.-]{0,127}$")  # distribution/reference's tag grammar
_DURATION = re.compile(r"^([0-9]+)(?:\.([0-9]{1,9}))?s$")
MAX_SUBSTITUTIONS = 100
MAX_SUBSTITUTION_KEY = 100
MAX_SUBSTITUTION_VALUE = 4000
MAX_TAGS = 64
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
    if not all(isinstance(step, dict) for step in data["steps"]):
        raise ConfigError(f"{path}: every entry of `steps:` must be a mapping (name, args, ...)")
    substitutions = data.get("substitutions", {})
    if not isinstance(substitutions, dict) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in substitutions.items()
    ):
        raise ConfigError(f"{path}: `substitutions:` must map names to strings")
    if "options" in data and not isinstance(data["options"], dict):
        raise ConfigError(f"{path}: `options:` must be a mapping")
    return data


def is_loose(config: Mapping[str, Any]) -> bool:
    """`options.substitutionOption: ALLOW_LOOSE`: missing and unused substitutions are allowed."""
    return (config.get("options") or {}).get("substitutionOption") == "ALLOW_LOOSE"


def _map_templates(config: Mapping[str, Any], change: Callable[[str], str]) -> dict[str, Any]:
    """`config` with `change` applied to every string of the fields Cloud Build substitutes in."""

    def each(value: Any) -> Any:
        if isinstance(value, str):
            return change(value)
        if isinstance(value, list):
            return [each(item) for item in value]
        return value

    result = dict(config)
    steps = []
    for step in config.get("steps") or []:
        step = dict(step)
        for key in ("name", "args", "env", "dir", "entrypoint"):
            if key in step:
                step[key] = each(step[key])
        steps.append(step)
    result["steps"] = steps
    for key in ("images", "tags"):
        if key in config:
            result[key] = each(config[key])
    artifacts = config.get("artifacts")
    if isinstance(artifacts, Mapping):
        artifacts = dict(artifacts)
        if "images" in artifacts:
            artifacts["images"] = each(artifacts["images"])
        objects = artifacts.get("objects")
        if isinstance(objects, Mapping):
            artifacts["objects"] = {
                key: each(value) if key in ("location", "paths") else value for key, value in objects.items()
            }
        result["artifacts"] = artifacts
    secrets = config.get("availableSecrets")
    if isinstance(secrets, Mapping) and isinstance(secrets.get("secretManager"), list):
        result["availableSecrets"] = {
            **secrets,
            "secretManager": [
                {**item, "versionName": each(item.get("versionName"))} if isinstance(item, Mapping) else item
                for item in secrets["secretManager"]
            ],
        }
    return result


def _template_strings(config: Mapping[str, Any]) -> Iterator[str]:
    found: list[str] = []

    def record(text: str) -> str:
        found.append(text)
        return text

    _map_templates(config, record)
    return iter(found)


def used_substitutions(config: Mapping[str, Any]) -> set[str]:
    """Every substitution name the config refers to (built-in and user-defined)."""
    names: set[str] = set()
    for text in _template_strings(config):
        for match in _REFERENCE.finditer(text):
            name = match.group(1) or match.group(2)
            if name:
                names.add(name)
    return names


def substitution_problems(config: Mapping[str, Any], provided: Mapping[str, str]) -> list[str]:
    """What Cloud Build would refuse (and the trigger-only built-ins this backend refuses)."""
    available = {**config.get("substitutions", {}), **provided}
    used = used_substitutions(config)
    loose = is_loose(config)
    problems = []
    for name in sorted(used - set(available)):
        if name in BUILTIN_SUBSTITUTIONS:
            continue
        if name in TRIGGER_SUBSTITUTIONS:
            problems.append(
                f"uses ${name}, which only a build trigger fills: a build of uploaded source leaves "
                "it empty (the git revision is the _OCI_REVISION substitution)"
            )
        elif not _USER_KEY.match(name):
            problems.append(
                f"uses ${name}, which is not a Cloud Build built-in substitution "
                f"(user substitutions start with _; write $${name} for a shell variable)"
            )
        elif not loose:
            problems.append(f"uses ${name}, which is not provided")
    if not loose:
        for name in sorted(set(available) - used):
            problems.append(f"substitution {name} is provided but never used")
    for name in sorted(available):
        if not _USER_KEY.match(name):
            problems.append(f"substitution {name} must start with _ and hold only A-Z, 0-9 and _")
        elif len(name) > MAX_SUBSTITUTION_KEY:
            problems.append(f"substitution {name[:20]}... is longer than {MAX_SUBSTITUTION_KEY} characters")
        if len(available[name]) > MAX_SUBSTITUTION_VALUE:
            problems.append(f"substitution {name} is longer than {MAX_SUBSTITUTION_VALUE} characters")
    if len(available) > MAX_SUBSTITUTIONS:
        problems.append(f"{len(available)} substitutions; Cloud Build takes at most {MAX_SUBSTITUTIONS}")
    return problems


def check_substitutions(path: Path, config: Mapping[str, Any], provided: Mapping[str, str]) -> None:
    problems = substitution_problems(config, provided)
    if problems:
        raise ConfigError(f"{path}: {'; '.join(problems)}")


def apply_substitutions(config: Mapping[str, Any], substitutions: Mapping[str, str]) -> dict[str, Any]:
    """`config` as Cloud Build will run it: user substitutions replaced and `$$` unescaped in the
    templated fields; built-ins stay for Cloud Build to fill; with ALLOW_LOOSE a missing user
    substitution becomes empty, as on Cloud Build. `substitutions:` itself is left as it is.
    """
    loose = is_loose(config)

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(2)
        if name in substitutions:
            return substitutions[name]
        return "" if loose and _USER_KEY.match(name) else match.group(0)

    return _map_templates(config, lambda text: _REFERENCE.sub(replace, text))


def tag_problems(tags: list[Any]) -> list[str]:
    """Build tags Cloud Build refuses (after substitution)."""
    problems = [
        f"tag {tag!r} is not [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}"
        for tag in tags
        if not _BUILD_TAG.match(str(tag))
    ]
    if len(tags) > MAX_TAGS:
        problems.append(f"{len(tags)} tags; Cloud Build takes at most {MAX_TAGS}")
    return problems


def duration_seconds(value: Any, where: str) -> float:
    """A Cloud Build duration (`"21600s"`, `"3.5s"`) in seconds; ConfigError naming `where` else."""
    match = _DURATION.match(value) if isinstance(value, str) else None
    if match is None:
        raise ConfigError(f'{where}: {value!r} is not a duration in seconds like "3600s"')
    return int(match.group(1)) + (int(match.group(2).ljust(9, "0")) / 1e9 if match.group(2) else 0.0)


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

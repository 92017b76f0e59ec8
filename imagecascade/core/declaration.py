"""Image declarations: `images/<name>/Dockerfile` plus `images/<name>/image.toml`."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from imagecascade.core import buildkit_syntax, dockerfile
from imagecascade.core.artifacts import Artifact, parse_artifacts
from imagecascade.core.build_options import CloudBuildOptions, parse_cloudbuild_options
from imagecascade.core.checks import SmokeChecks, parse_smoke_checks
from imagecascade.core.python_locks import PythonLock, parse_python_locks
from imagecascade.core.secrets import check_id
from imagecascade.core.settings import Settings
from imagecascade.core.tomlfile import read_toml
from imagecascade.errors import ConfigError

DECLARATION_FILE = "image.toml"
DEFAULT_PLATFORM = "linux/amd64"

# A Docker repository path component (distribution/reference's grammar).
_IMAGE_NAME = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_PLATFORM = re.compile(r"^[a-z0-9]+/[a-z0-9_]+(?:/[a-z0-9]+)?$")
_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
# A build arg name as Dockerfiles can use it in `ARG NAME` and `${NAME}`.
_BUILD_ARG_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_REFERENCE = re.compile(
    r"^(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
    r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::[\w][\w.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$"
)

_KEYS = {
    "description",
    "parent",
    "base",
    "build_args",
    "platform",
    "context",
    "dockerfile",
    "target",
    "upstream_build_args",
    "required_build_args",
    "inputs",
    "artifacts",
    "python_locks",
    "smoke",
    "cloudbuild",
    "secrets",
    "required_secrets",
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class ImageSpec:
    """One image as declared; paths are absolute, relations by name."""

    name: str
    folder: Path
    dockerfile: Path
    context: Path
    parent: str | None
    base: str | None
    description: str = ""
    build_args: Mapping[str, str] = dataclasses.field(default_factory=dict)
    platform: str = DEFAULT_PLATFORM
    target: str | None = None
    # Build args whose values are external image references (e.g. a builder stage's base):
    # `invoke upstream` pins them like `base`, so an upstream move rebuilds the lineage.
    upstream_build_args: tuple[str, ...] = ()
    # Build args without which the image cannot be built (a checksum nobody recorded yet): while
    # one is empty or absent, `invoke plan` says "cannot build" and the cascade refuses the image.
    required_build_args: tuple[str, ...] = ()
    # Ids of the BuildKit secrets the Dockerfile mounts; never hashed (their values change nothing
    # in the image). Required ones (`required_secrets`, or `required=true` on the mount) must
    # have a source, or the image is refused before building.
    secrets: tuple[str, ...] = ()
    required_secrets: tuple[str, ...] = ()
    # Build arg name -> another image of this repository. The arg receives that image's exact
    # hash reference, and its freshness hash goes into this image's hash like the parent's.
    inputs: Mapping[str, str] = dataclasses.field(default_factory=dict)
    artifacts: tuple[Artifact, ...] = ()  # downloads checked against a SHA-256 build arg
    python_locks: tuple[PythonLock, ...] = ()  # `nox -s lock` resolves these; never hashed as such
    smoke: SmokeChecks = dataclasses.field(default_factory=SmokeChecks)
    cloudbuild: CloudBuildOptions = dataclasses.field(default_factory=CloudBuildOptions)

    @property
    def declaration_path(self) -> Path:
        return self.folder / DECLARATION_FILE

    @property
    def dependencies(self) -> tuple[str, ...]:
        """The images of this repository this one is built from: the parent, then each input."""
        return ((self.parent,) if self.parent is not None else ()) + tuple(self.inputs.values())

    @property
    def unpinned_artifacts(self) -> list[Artifact]:
        """The artifacts whose SHA-256 build arg is still empty."""
        return [artifact for artifact in self.artifacts if not artifact.sha256(self.build_args)]

    @property
    def base_is_pinned(self) -> bool:
        return self.base is not None and bool(_DIGEST.search(self.base))

    @property
    def unpinned(self) -> list[str]:
        """The keys (`base`, build arg names) holding external references without a digest."""
        keys = ["base"] if self.base is not None and not self.base_is_pinned else []
        return keys + [key for key in self.upstream_build_args if not is_pinned(self.build_args[key])]


def is_pinned(reference: str) -> bool:
    return bool(_DIGEST.search(reference))


def _string(path: Path, data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{path}: {key} must be a string, not {type(value).__name__}")
    return value


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _inputs(
    declaration: Path,
    data: Mapping[str, Any],
    build_args: Mapping[str, str],
    parent: str | None,
    parsed: dockerfile.Dockerfile,
) -> dict[str, str]:
    """`[inputs]`: build arg name -> image name, checked on its own (existence by load_images)."""
    raw = data.get("inputs", {})
    if not isinstance(raw, dict):
        raise ConfigError(f"{declaration}: [inputs] must be a table of build arg name = image name")
    declared = parsed.global_args
    inputs: dict[str, str] = {}
    for key, value in raw.items():
        if not isinstance(value, str):
            raise ConfigError(
                f"{declaration}: inputs.{key} must be an image name (a string), not {type(value).__name__}"
            )
        if not _BUILD_ARG_NAME.match(key):
            raise ConfigError(f"{declaration}: inputs.{key}: {key!r} is not a valid build arg name")
        if key == "BASE_IMAGE":
            raise ConfigError(f"{declaration}: inputs.BASE_IMAGE: BASE_IMAGE is set from `parent`/`base`")
        if key in build_args:
            raise ConfigError(
                f"{declaration}: build arg {key} is declared in both [build_args] and [inputs]; keep one"
            )
        if not _IMAGE_NAME.match(value):
            raise ConfigError(f"{declaration}: inputs.{key}: {value!r} is not an image name of images/")
        if value == declaration.parent.name:
            raise ConfigError(f"{declaration}: inputs.{key}: an image cannot be its own input")
        if value == parent:
            raise ConfigError(
                f"{declaration}: inputs.{key}: {value} is already the parent (BASE_IMAGE); "
                "an image is either the parent or an input"
            )
        if key not in declared:
            raise ConfigError(
                f"{declaration}: inputs.{key}: the Dockerfile declares no `ARG {key}` before its first "
                f"FROM, so `FROM ${{{key}}}` cannot use the input"
            )
        inputs[key] = value
    return dict(sorted(inputs.items()))


def load_image(folder: Path, root: Path) -> ImageSpec:
    """Read and check one image folder (relations to other images are checked by load_images)."""
    name = folder.name
    if not _IMAGE_NAME.match(name):
        raise ConfigError(
            f"{folder}: folder name {name!r} is not a valid image name "
            "(lower-case letters and digits, separated by '.', '_', '__' or '-')"
        )
    declaration = folder / DECLARATION_FILE
    if not declaration.is_file():
        raise ConfigError(f"{declaration}: missing (every image folder needs an {DECLARATION_FILE})")
    data = read_toml(declaration)
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise ConfigError(
            f"{declaration}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
            f"(known: {', '.join(sorted(_KEYS))})"
        )
    parent = _string(declaration, data, "parent")
    base = _string(declaration, data, "base")
    if (parent is None) == (base is None):
        raise ConfigError(f"{declaration}: declare exactly one of `parent` or `base`")
    if base is not None and not _REFERENCE.match(base):
        raise ConfigError(f"{declaration}: base {base!r} is not a valid image reference")
    build_args = data.get("build_args", {})
    if not isinstance(build_args, dict):
        raise ConfigError(f"{declaration}: build_args must be a table of strings")
    for key, value in build_args.items():
        if not isinstance(value, str):
            raise ConfigError(
                f"{declaration}: build_args.{key} must be a string, not {type(value).__name__} "
                f'(write {key} = "{value}")'
            )
        if key == "BASE_IMAGE":
            raise ConfigError(f"{declaration}: build_args.BASE_IMAGE is set from `parent`/`base`")
    platform = _string(declaration, data, "platform") or DEFAULT_PLATFORM
    if not _PLATFORM.match(platform):
        raise ConfigError(f"{declaration}: platform {platform!r} is not of the form os/arch[/variant]")
    context_value = _string(declaration, data, "context") or "."
    context = (folder / context_value).resolve()
    if not _inside(context, root.resolve()):
        raise ConfigError(f"{declaration}: context {context_value!r} is outside the repository")
    if not context.is_dir():
        raise ConfigError(f"{declaration}: context {context_value!r} is not a folder")
    dockerfile_value = _string(declaration, data, "dockerfile") or "Dockerfile"
    dockerfile_path = (folder / dockerfile_value).resolve()
    if not _inside(dockerfile_path, root.resolve()):
        raise ConfigError(f"{declaration}: dockerfile {dockerfile_value!r} is outside the repository")
    if not dockerfile_path.is_file():
        raise ConfigError(f"{dockerfile_path}: missing (the Dockerfile of image {name})")
    parsed = dockerfile.read_dockerfile(dockerfile_path)
    target = _string(declaration, data, "target")
    problem = dockerfile.base_wiring_problem(parsed, target)
    if problem:
        raise ConfigError(f"{dockerfile_path}: {problem}")
    upstream_build_args = data.get("upstream_build_args", [])
    if not isinstance(upstream_build_args, list) or not all(isinstance(k, str) for k in upstream_build_args):
        raise ConfigError(f"{declaration}: upstream_build_args must be a list of build arg names")
    for key in upstream_build_args:
        if key not in build_args:
            raise ConfigError(f"{declaration}: upstream_build_args names {key!r}, which is not in build_args")
        if not _REFERENCE.match(build_args[key]):
            raise ConfigError(
                f"{declaration}: build_args.{key} {build_args[key]!r} is not a valid image reference"
            )
    required_build_args = data.get("required_build_args", [])
    if not isinstance(required_build_args, list) or not all(
        isinstance(key, str) and _BUILD_ARG_NAME.match(key) for key in required_build_args
    ):
        raise ConfigError(f"{declaration}: required_build_args must be a list of build arg names")
    if "BASE_IMAGE" in required_build_args:
        raise ConfigError(f"{declaration}: required_build_args: BASE_IMAGE is always set from parent/base")
    secrets, required_secrets = _secrets(declaration, data, parsed)
    inputs = _inputs(declaration, data, build_args, parent, parsed)
    for key in required_build_args:
        if key in inputs:
            raise ConfigError(
                f"{declaration}: required_build_args: {key} is an input, always set from [inputs]"
            )
    description = _string(declaration, data, "description") or ""
    for section in ("smoke", "cloudbuild"):
        if section in data and not isinstance(data[section], dict):
            raise ConfigError(f"{declaration}: [{section}] must be a table")
    return ImageSpec(
        name=name,
        folder=folder,
        dockerfile=dockerfile_path,
        context=context,
        parent=parent,
        base=base,
        description=description,
        build_args=dict(sorted(build_args.items())),
        platform=platform,
        target=target,
        upstream_build_args=tuple(upstream_build_args),
        required_build_args=tuple(dict.fromkeys(required_build_args)),
        secrets=secrets,
        required_secrets=required_secrets,
        inputs=inputs,
        artifacts=parse_artifacts(data.get("artifacts", []), build_args, f"{declaration}: artifacts"),
        python_locks=parse_python_locks(data.get("python_locks", []), folder, f"{declaration}: python_locks"),
        smoke=parse_smoke_checks(data.get("smoke", {}), f"{declaration}: [smoke]"),
        cloudbuild=parse_cloudbuild_options(data.get("cloudbuild", {}), f"{declaration}: [cloudbuild]"),
    )


def _id_list(declaration: Path, data: Mapping[str, Any], key: str) -> list[str]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigError(f"{declaration}: {key} must be a list of secret ids")
    for item in value:
        check_id(item, f"{declaration}: {key}")
    duplicates = sorted({item for item in value if value.count(item) > 1})
    if duplicates:
        raise ConfigError(f"{declaration}: {key} names {duplicates[0]!r} twice")
    return list(value)


def _secrets(
    declaration: Path, data: Mapping[str, Any], parsed: dockerfile.Dockerfile
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(declared ids, required ids): every id the Dockerfile mounts must be declared."""
    declared = _id_list(declaration, data, "secrets")
    required = _id_list(declaration, data, "required_secrets")
    declared += [item for item in required if item not in declared]
    mounts = buildkit_syntax.secret_mounts(parsed)
    for mount in mounts:
        if mount.id not in declared:
            raise ConfigError(
                f"{parsed.source}: line {mount.line}: mounts secret {mount.id!r}, which "
                f'{declaration.name} does not declare (add secrets = ["{mount.id}"])'
            )
        if mount.required and mount.id not in required:
            required.append(mount.id)
    return tuple(sorted(declared)), tuple(sorted(required))


def load_images(settings: Settings) -> dict[str, ImageSpec]:
    """Every image under `images/`, checked, in dependency order (parents first, then by name)."""
    images_dir = settings.images_dir
    if not images_dir.is_dir():
        raise ConfigError(f"{images_dir}: missing (the folder that holds one folder per image)")
    specs: dict[str, ImageSpec] = {}
    for folder in sorted(images_dir.iterdir()):
        if not folder.is_dir() or folder.name.startswith("."):
            continue
        spec = load_image(folder, settings.root)
        specs[spec.name] = spec
    for spec in specs.values():
        if spec.parent is not None and spec.parent not in specs:
            raise ConfigError(
                f"{spec.declaration_path}: unknown parent {spec.parent!r} "
                f"(no folder {images_dir.name}/{spec.parent})"
            )
        for key, name in spec.inputs.items():
            if name not in specs:
                raise ConfigError(
                    f"{spec.declaration_path}: inputs.{key}: unknown image {name!r} "
                    f"(no folder {images_dir.name}/{name})"
                )
    from imagecascade.core.graph import dependency_order

    return {name: specs[name] for name in dependency_order(specs)}

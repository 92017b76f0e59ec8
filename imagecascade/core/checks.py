"""Smoke-check declarations from the `[smoke]` table of image.toml, and their inheritance.

Pure and light: the pre-commit hook imports this through declaration.py, so `packaging` is
imported only inside the functions that validate specifiers.

    [smoke]
    inherit = true              # run the parent's checks too (default)
    python = "python3"          # interpreter in the image that runs the probe
    timeout_seconds = 120       # for all in-container checks together, counted from the probe's start
    max_size_gb = 20            # the image's size (decimal GB, as `docker images` shows it)
    imports = ["torch"]
    pip_check = true
    [smoke.versions]            # distribution -> PEP 440 specifier
    torch = "==2.6.0"
    [[smoke.commands]]          # `name` is the key a child overrides
    name = "torchrun-help"
    run = ["torchrun", "--help"]
    output = "usage"            # regex searched in all of stdout+stderr (first 64 MB)
    timeout_seconds = 30        # this command's own limit (default: what is left of the image's)
    gpu = false                 # true: only where the engine provides GPUs
    [[smoke.files]]             # `path` is the key a child overrides
    path = "/usr/local/bin/torchrun"
    executable = true
    exists = true               # false: must be absent
    [smoke.env]                 # variable -> regex the value must fully match
    [smoke.labels]              # label -> regex the value must fully match (host side)
    [smoke.config]              # user, non_root, entrypoint, cmd, workdir (host side; non_root in the probe)
    [smoke.cuda]                # torch_cuda, cudnn, arch_list, nccl; GPU-only: available, min_devices, matmul

`{name}` in an expected value (labels, env, output, config) stands for the image being checked,
so a parent's `"org.opencontainers.image.title" = "{name}"` holds in every child.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from imagecascade.errors import ConfigError

DEFAULT_PYTHON = "python3"
DEFAULT_TIMEOUT_SECONDS = 120
NAME_PLACEHOLDER = "{name}"

_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*$")
# PEP 508 distribution names.
_DISTRIBUTION = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ARCH = re.compile(r"^(?:sm|compute)_[0-9]+[a-z]?$")
_COMMAND_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclasses.dataclass(frozen=True, kw_only=True)
class CommandCheck:
    """A command that must exit 0, optionally printing something that matches `output`."""

    name: str
    run: tuple[str, ...]
    output: str | None = None
    timeout_seconds: int | None = None
    gpu: bool = False


@dataclasses.dataclass(frozen=True, kw_only=True)
class FileCheck:
    """A path that must exist (optionally executable), or must be absent."""

    path: str
    exists: bool = True
    executable: bool | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConfigChecks:
    """Expectations on the image config; None means "not checked"."""

    user: str | None = None
    non_root: bool | None = None
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    workdir: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class CudaChecks:
    """PyTorch/CUDA expectations; available, min_devices and matmul need a GPU."""

    torch_cuda: str | None = None
    cudnn: str | None = None
    arch_list: tuple[str, ...] | None = None
    nccl: bool | None = None
    available: bool | None = None
    min_devices: int | None = None
    matmul: bool | None = None

    @property
    def declared(self) -> bool:
        return any(getattr(self, field.name) is not None for field in dataclasses.fields(self))

    @property
    def declared_without_gpu(self) -> bool:
        checks = (self.torch_cuda, self.cudnn, self.arch_list, self.nccl)
        return any(check is not None for check in checks)

    @property
    def needs_gpu(self) -> bool:
        return bool(self.available) or self.min_devices is not None or bool(self.matmul)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SmokeChecks:
    """One image's smoke checks; scalars left None take the parent's value, then the default."""

    inherit: bool = True
    python: str | None = None
    timeout_seconds: int | None = None
    max_size_gb: float | None = None
    imports: tuple[str, ...] = ()
    pip_check: bool | None = None
    versions: Mapping[str, str] = dataclasses.field(default_factory=dict)
    commands: tuple[CommandCheck, ...] = ()
    files: tuple[FileCheck, ...] = ()
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    config: ConfigChecks = dataclasses.field(default_factory=ConfigChecks)
    cuda: CudaChecks = dataclasses.field(default_factory=CudaChecks)

    @property
    def interpreter(self) -> str:
        return self.python or DEFAULT_PYTHON

    @property
    def timeout(self) -> int:
        return self.timeout_seconds or DEFAULT_TIMEOUT_SECONDS

    @property
    def declares_nothing(self) -> bool:
        """True when there is nothing to check: no check of any kind, only settings."""
        return not (
            self.imports
            or self.pip_check
            or self.versions
            or self.commands
            or self.files
            or self.env
            or self.labels
            or self.max_size_gb is not None
            or any(getattr(self.config, field.name) is not None for field in dataclasses.fields(self.config))
            or self.cuda.declared
        )

    def for_image(self, name: str) -> SmokeChecks:
        """These checks with `{name}` in expected values replaced by `name` (regex-escaped in regexes)."""
        pattern = re.escape(name)

        def regex(text: str) -> str:
            return text.replace(NAME_PLACEHOLDER, pattern)

        def literal(text: str) -> str:
            return text.replace(NAME_PLACEHOLDER, name)

        def literals(values: tuple[str, ...] | None) -> tuple[str, ...] | None:
            return None if values is None else tuple(literal(value) for value in values)

        config = self.config
        return dataclasses.replace(
            self,
            commands=tuple(
                dataclasses.replace(command, output=None if command.output is None else regex(command.output))
                for command in self.commands
            ),
            env={key: regex(value) for key, value in self.env.items()},
            labels={key: regex(value) for key, value in self.labels.items()},
            config=dataclasses.replace(
                config,
                user=None if config.user is None else literal(config.user),
                workdir=None if config.workdir is None else literal(config.workdir),
                entrypoint=literals(config.entrypoint),
                cmd=literals(config.cmd),
            ),
        )


class HasSmoke(Protocol):
    @property
    def parent(self) -> str | None: ...

    @property
    def smoke(self) -> SmokeChecks: ...


def effective_checks(specs: Mapping[str, HasSmoke], name: str) -> SmokeChecks:
    """The checks image `name` must pass: its ancestors' merged with its own, nearest wins."""
    own = specs[name].smoke
    parent = specs[name].parent
    if not own.inherit or parent is None or parent not in specs:
        return own
    return merge(effective_checks(specs, parent), own)


def merge(parent: SmokeChecks, child: SmokeChecks) -> SmokeChecks:
    """Child entries override the parent's entry with the same key; imports are a union."""
    return SmokeChecks(
        inherit=child.inherit,
        python=_pick(parent.python, child.python),
        timeout_seconds=_pick(parent.timeout_seconds, child.timeout_seconds),
        max_size_gb=_pick(parent.max_size_gb, child.max_size_gb),
        imports=tuple(dict.fromkeys((*parent.imports, *child.imports))),
        pip_check=_pick(parent.pip_check, child.pip_check),
        versions={**parent.versions, **child.versions},
        commands=_merge_keyed(parent.commands, child.commands, lambda command: command.name),
        files=_merge_keyed(parent.files, child.files, lambda file: file.path),
        env={**parent.env, **child.env},
        labels={**parent.labels, **child.labels},
        config=_merge_fields(parent.config, child.config),
        cuda=_merge_fields(parent.cuda, child.cuda),
    )


_T = TypeVar("_T")


def _pick(parent: _T | None, child: _T | None) -> _T | None:
    return parent if child is None else child


def _merge_keyed(parent: Sequence[_T], child: Sequence[_T], key: Callable[[_T], str]) -> tuple[_T, ...]:
    merged = {key(entry): entry for entry in parent}
    merged.update((key(entry), entry) for entry in child)
    return tuple(merged.values())


_Fields = TypeVar("_Fields", ConfigChecks, CudaChecks)


def _merge_fields(parent: _Fields, child: _Fields) -> _Fields:
    overrides = {
        field.name: getattr(child, field.name)
        for field in dataclasses.fields(child)
        if getattr(child, field.name) is not None
    }
    return dataclasses.replace(parent, **overrides)


def parse_smoke_checks(raw: Mapping[str, Any], where: str) -> SmokeChecks:
    """Validate the `[smoke]` table strictly; `where` prefixes every error message."""
    _known_keys(raw, where, _SMOKE_KEYS)
    timeout = _optional(raw, "timeout_seconds", int, where)
    if timeout is not None and timeout < 1:
        raise ConfigError(f"{where}: timeout_seconds must be at least 1")
    python = _optional(raw, "python", str, where)
    if python is not None and not python.strip():
        raise ConfigError(f"{where}: python must not be empty")
    max_size = raw.get("max_size_gb")
    if max_size is not None and (
        isinstance(max_size, bool) or not isinstance(max_size, int | float) or not 0 < max_size < math.inf
    ):
        raise ConfigError(f"{where}: max_size_gb must be a positive number of GB, not {max_size!r}")
    imports = _string_list(raw, "imports", where) or ()
    for module in imports:
        if not _MODULE.match(module):
            raise ConfigError(f"{where}: imports: {module!r} is not a module name")
    return SmokeChecks(
        inherit=_optional(raw, "inherit", bool, where) is not False,
        python=python,
        timeout_seconds=timeout,
        max_size_gb=None if max_size is None else float(max_size),
        imports=tuple(dict.fromkeys(imports)),
        pip_check=_optional(raw, "pip_check", bool, where),
        versions=_versions(raw, where),
        commands=_commands(raw, where),
        files=_files(raw, where),
        env=_patterns(raw, "env", _ENV_NAME, "an environment variable name", where),
        labels=_patterns(raw, "labels", None, "", where),
        config=_config(raw, where),
        cuda=_cuda(raw, where),
    )


_SMOKE_KEYS = (
    "inherit",
    "python",
    "timeout_seconds",
    "max_size_gb",
    "imports",
    "pip_check",
    "versions",
    "commands",
    "files",
    "env",
    "labels",
    "config",
    "cuda",
)
_COMMAND_KEYS = ("name", "run", "output", "timeout_seconds", "gpu")
_FILE_KEYS = ("path", "exists", "executable")
_CONFIG_KEYS = tuple(field.name for field in dataclasses.fields(ConfigChecks))
_CUDA_KEYS = tuple(field.name for field in dataclasses.fields(CudaChecks))

_TYPE_NAMES: dict[type, str] = {bool: "true or false", int: "an integer", str: "a string"}


def _known_keys(raw: Mapping[str, Any], where: str, known: Sequence[str]) -> None:
    unknown = [key for key in raw if key not in known]
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(known)})")


def _type_name(value: Any) -> str:
    return {bool: "boolean", int: "integer", str: "string", float: "float", list: "array", dict: "table"}.get(
        type(value), type(value).__name__
    )


def _optional(raw: Mapping[str, Any], key: str, expected: type[_T], where: str) -> _T | None:
    value = raw.get(key)
    if value is None:
        return None
    # bool is an int in Python; `timeout_seconds = true` is still a mistake.
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: {key} must be {_TYPE_NAMES[expected]}, not {_type_name(value)}")
    return value


def _string_list(raw: Mapping[str, Any], key: str, where: str) -> tuple[str, ...] | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigError(f"{where}: {key} must be an array of strings")
    return tuple(value)


def _table(raw: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: {key} must be a table, not {_type_name(value)}")
    return value


def _regex(pattern: str, where: str) -> None:
    try:
        re.compile(pattern)
    except re.error as error:
        raise ConfigError(f"{where}: {pattern!r} is not a valid regular expression: {error}") from error


def _specifier(text: str, where: str) -> None:
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    try:
        SpecifierSet(text)
    except InvalidSpecifier as error:
        raise ConfigError(
            f"{where}: {text!r} is not a PEP 440 version specifier like '==2.6.0' or '>=4.53': {error}"
        ) from error


def _versions(raw: Mapping[str, Any], where: str) -> dict[str, str]:
    table = _table(raw, "versions", where)
    versions: dict[str, str] = {}
    for distribution, specifier in table.items():
        if not _DISTRIBUTION.match(distribution):
            raise ConfigError(f"{where}: versions: {distribution!r} is not a distribution name")
        if not isinstance(specifier, str):
            raise ConfigError(
                f"{where}: versions.{distribution} must be a string specifier, not {_type_name(specifier)}"
            )
        _specifier(specifier, f"{where}: versions.{distribution}")
        versions[distribution] = specifier
    return versions


def _patterns(
    raw: Mapping[str, Any], key: str, name_pattern: re.Pattern[str] | None, name_kind: str, where: str
) -> dict[str, str]:
    patterns: dict[str, str] = {}
    for name, pattern in _table(raw, key, where).items():
        if name_pattern is not None and not name_pattern.match(name):
            raise ConfigError(f"{where}: {key}: {name!r} is not {name_kind}")
        if not isinstance(pattern, str):
            raise ConfigError(f"{where}: {key}.{name} must be a string (a regex), not {_type_name(pattern)}")
        _regex(pattern, f"{where}: {key}.{name}")
        patterns[name] = pattern
    return patterns


def _entries(raw: Mapping[str, Any], key: str, where: str) -> list[tuple[str, Mapping[str, Any]]]:
    value = raw.get(key, [])
    if not isinstance(value, list) or not all(isinstance(entry, dict) for entry in value):
        raise ConfigError(f"{where}: {key} must be an array of tables ([[smoke.{key}]])")
    return [(f"{where}: {key}[{index}]", entry) for index, entry in enumerate(value)]


def _commands(raw: Mapping[str, Any], where: str) -> tuple[CommandCheck, ...]:
    commands: dict[str, CommandCheck] = {}
    for at, entry in _entries(raw, "commands", where):
        _known_keys(entry, at, _COMMAND_KEYS)
        name = _optional(entry, "name", str, at)
        if name is None:
            raise ConfigError(f"{at}: name is required (the key a child image overrides)")
        if not _COMMAND_NAME.match(name):
            raise ConfigError(f"{at}: name {name!r} must be letters, digits, '.', '_' or '-'")
        if name in commands:
            raise ConfigError(f"{at}: duplicate command name {name!r}")
        run = _string_list(entry, "run", at)
        if not run:
            raise ConfigError(f"{at}: run is required: a non-empty array of strings (argv, no shell)")
        output = _optional(entry, "output", str, at)
        if output is not None:
            _regex(output, f"{at}: output")
        timeout = _optional(entry, "timeout_seconds", int, at)
        if timeout is not None and timeout < 1:
            raise ConfigError(f"{at}: timeout_seconds must be at least 1")
        commands[name] = CommandCheck(
            name=name,
            run=run,
            output=output,
            timeout_seconds=timeout,
            gpu=bool(_optional(entry, "gpu", bool, at)),
        )
    return tuple(commands.values())


def _files(raw: Mapping[str, Any], where: str) -> tuple[FileCheck, ...]:
    files: dict[str, FileCheck] = {}
    for at, entry in _entries(raw, "files", where):
        _known_keys(entry, at, _FILE_KEYS)
        path = _optional(entry, "path", str, at)
        if path is None or not path.startswith("/"):
            raise ConfigError(f"{at}: path is required and must be absolute")
        if path in files:
            raise ConfigError(f"{at}: duplicate path {path!r}")
        exists = _optional(entry, "exists", bool, at)
        executable = _optional(entry, "executable", bool, at)
        if exists is False and executable is not None:
            raise ConfigError(f"{at}: executable makes no sense with exists = false")
        files[path] = FileCheck(path=path, exists=exists is not False, executable=executable)
    return tuple(files.values())


def _config(raw: Mapping[str, Any], where: str) -> ConfigChecks:
    table = _table(raw, "config", where)
    at = f"{where}: config"
    _known_keys(table, at, _CONFIG_KEYS)
    return ConfigChecks(
        user=_optional(table, "user", str, at),
        non_root=_optional(table, "non_root", bool, at),
        entrypoint=_string_list(table, "entrypoint", at),
        cmd=_string_list(table, "cmd", at),
        workdir=_optional(table, "workdir", str, at),
    )


def _cuda(raw: Mapping[str, Any], where: str) -> CudaChecks:
    table = _table(raw, "cuda", where)
    at = f"{where}: cuda"
    _known_keys(table, at, _CUDA_KEYS)
    cudnn = _optional(table, "cudnn", str, at)
    if cudnn is not None:
        _specifier(cudnn, f"{at}.cudnn")
    arch_list = _string_list(table, "arch_list", at)
    for arch in arch_list or ():
        if not _ARCH.match(arch):
            raise ConfigError(f"{at}.arch_list: {arch!r} is not a CUDA architecture like 'sm_80'")
    min_devices = _optional(table, "min_devices", int, at)
    if min_devices is not None and min_devices < 1:
        raise ConfigError(f"{at}.min_devices must be at least 1")
    return CudaChecks(
        torch_cuda=_optional(table, "torch_cuda", str, at),
        cudnn=cudnn,
        arch_list=arch_list,
        nccl=_optional(table, "nccl", bool, at),
        available=_optional(table, "available", bool, at),
        min_devices=min_devices,
        matmul=_optional(table, "matmul", bool, at),
    )

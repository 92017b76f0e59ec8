"""Dockerfiles read with BuildKit's own parser, and the checks this project makes on top.

Parsing is the `dockerfile` package (PyPI): BuildKit's Go parser, compiled, so continuation
lines, comments, a UTF-8 BOM, the `escape` directive, heredocs and JSON forms read exactly as
Docker reads them. On top of its instructions this module checks this project's rules (`ARG
BASE_IMAGE` before the first FROM, the built stage derived from `${BASE_IMAGE}`) and lists the
builder features a Dockerfile needs (`buildkit_features`).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Literal

import dockerfile as buildkit_parser

from imagecascade.errors import ConfigError

BASE_IMAGE_ARG = "BASE_IMAGE"
_BASE_IMAGE_REFS = ("${BASE_IMAGE}", "$BASE_IMAGE")
# Invalid UTF-8 bytes travel through the Go parser as private-use characters and come back as
# surrogateescape characters (a Python str holding lone surrogates would crash the extension).
_ESCAPED_BYTES = {0xDC80 + offset: 0xF780 + offset for offset in range(128)}
_UNESCAPED_BYTES = {value: key for key, value in _ESCAPED_BYTES.items()}
# BuildKit's parser directives (frontend/dockerfile/parser/directives.go).
_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")
_DIRECTIVES = ("syntax", "escape", "check")
# The build args BuildKit defines by itself for FROM lines; the classic builder leaves them empty.
_PLATFORM_ARGS = re.compile(
    r"\$\{?(BUILDPLATFORM|BUILDOS|BUILDARCH|BUILDVARIANT|TARGETPLATFORM|TARGETOS|TARGETARCH|TARGETVARIANT)\b"
)


@dataclasses.dataclass(frozen=True)
class Instruction:
    keyword: str  # upper-case, e.g. "FROM"; for ONBUILD the keyword is "ONBUILD"
    arguments: tuple[str, ...]  # the words after the flags (one string for shell-form RUN/CMD)
    line: int  # 1-based line where the instruction starts
    flags: tuple[str, ...] = ()  # e.g. ("--mount=type=cache,target=/root/.cache",)
    json: bool = False
    heredocs: int = 0  # how many heredocs (`<<EOF`) the instruction reads
    end_line: int = 0
    original: str = ""
    sub_keyword: str | None = None  # ONBUILD's instruction, upper-case

    def flag_names(self) -> list[str]:
        """`--mount=x` → `mount`: the flags by name, lower-case."""
        return [flag.removeprefix("--").partition("=")[0].lower() for flag in self.flags]


@dataclasses.dataclass(frozen=True)
class Stage:
    source: str  # what FROM names: an image reference, a stage name or a variable
    name: str | None  # as written; Docker compares stage names case-insensitively
    line: int
    platform: str | None = None  # the --platform flag's value


@dataclasses.dataclass(frozen=True)
class Dockerfile:
    """One parsed Dockerfile; `source` names it in messages."""

    source: str
    instructions: tuple[Instruction, ...]
    directives: tuple[tuple[str, str, int], ...] = ()  # (name, value, line), names lower-case

    @property
    def stages(self) -> list[Stage]:
        return [_stage_of(item) for item in self.instructions if item.keyword == "FROM"]

    @property
    def global_args(self) -> dict[str, int]:
        """The ARG names declared before the first FROM, with their lines."""
        names: dict[str, int] = {}
        for item in self.instructions:
            if item.keyword == "FROM":
                break
            if item.keyword == "ARG":
                for word in item.arguments:
                    names.setdefault(word.partition("=")[0], item.line)
        return names

    @property
    def syntax(self) -> tuple[str, int] | None:
        """The `# syntax=` directive's value and line (the frontend image BuildKit would run)."""
        for name, value, line in self.directives:
            if name == "syntax":
                return value, line
        return None


def _escape_invalid_utf8(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("utf-8", "surrogateescape").translate(_ESCAPED_BYTES)


def _unescape(text: str) -> str:
    return text.translate(_UNESCAPED_BYTES) if any("\uf780" <= c <= "\uf7ff" for c in text) else text


def parse_dockerfile(data: bytes, source: str) -> Dockerfile:
    """Parse Dockerfile bytes as BuildKit does; ConfigError names `source` for what its parser refuses.

    A Dockerfile without FROM is refused too. Instruction-level mistakes (an unknown instruction,
    a RUN before FROM) are left to the builder: they fail that image's build, not the whole plan.
    """
    if b"\0" in data:
        raise ConfigError(f"{source}: holds a NUL byte; not a Dockerfile")
    text = _escape_invalid_utf8(data)
    try:
        commands = buildkit_parser.parse_string(text)
    except buildkit_parser.GoParseError as error:
        raise ConfigError(f"{source}: {error}") from error
    instructions = tuple(_instruction_of(command) for command in commands)
    if not any(item.keyword == "FROM" for item in instructions):
        raise ConfigError(f"{source}: has no FROM instruction")
    return Dockerfile(source, instructions, _directives(text))


def read_dockerfile(path: Path) -> Dockerfile:
    """Read and parse the Dockerfile at `path`; ConfigError names the file (and line)."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error}") from error
    return parse_dockerfile(data, str(path))


def _instruction_of(command: buildkit_parser.Command) -> Instruction:
    keyword = command.cmd.upper()
    return Instruction(
        keyword=keyword,
        arguments=tuple(_unescape(word) for word in command.value),
        line=command.start_line,
        flags=tuple(_unescape(flag) for flag in command.flags),
        json=command.json,
        heredocs=len(command.heredocs),
        end_line=command.end_line,
        original=_unescape(command.original),
        sub_keyword=command.sub_cmd.upper() if command.sub_cmd else None,
    )


def _directives(text: str) -> tuple[tuple[str, str, int], ...]:
    found: list[tuple[str, str, int]] = []
    for number, line in enumerate(text.removeprefix("\ufeff").splitlines(), start=1):
        match = _DIRECTIVE.match(line)
        name = match.group(1).lower() if match else ""
        if not match or name not in _DIRECTIVES or any(name == seen for seen, _, _ in found):
            break
        found.append((name, match.group(2) if match else "", number))
    return tuple(found)


def _stage_of(instruction: Instruction) -> Stage:
    words = instruction.arguments
    platform = None
    for flag in instruction.flags:
        name, _, value = flag.removeprefix("--").partition("=")
        if name.lower() == "platform":
            platform = value
    return Stage(
        source=words[0] if words else "",
        name=words[2] if len(words) == 3 else None,
        line=instruction.line,
        platform=platform,
    )


def base_wiring_problem(parsed: Dockerfile, target: str | None = None) -> str | None:
    """Why the Dockerfile does not take its base from `ARG BASE_IMAGE`, or None when it does.

    The stage that is built (`target`, else the last) is followed back through named stages to
    the first stage it derives from, which must be `FROM ${BASE_IMAGE}`; `ARG BASE_IMAGE` must be
    declared before the first FROM so that it is usable there. Other stages may come from
    anywhere, other build args included (`FROM ${WHEELS_IMAGE} AS wheels`). A built stage
    `FROM scratch` is accepted when another stage derives from `${BASE_IMAGE}`: an image that holds
    only what was made on its base need not carry the base.
    """
    if BASE_IMAGE_ARG not in parsed.global_args:
        return "must declare `ARG BASE_IMAGE` before its first FROM"
    all_stages = parsed.stages
    by_name: dict[str, Stage] = {}
    for stage in all_stages:
        if stage.name:
            by_name.setdefault(stage.name.lower(), stage)
    if target is not None:
        if target.lower() not in by_name:
            return f"has no stage named {target!r} (the image's `target`)"
        stage = by_name[target.lower()]
    else:
        stage = all_stages[-1]
    seen: set[str] = set()
    # A stage can only derive from a stage named above it; a name used before it is defined is
    # an image reference to Docker.
    while stage.source.lower() in by_name and stage.source.lower() not in seen:
        parent = by_name[stage.source.lower()]
        if parent.line >= stage.line:
            break
        seen.add(stage.source.lower())
        stage = parent
    if stage.source.lower() == "scratch" and any(item.source in _BASE_IMAGE_REFS for item in all_stages):
        return None  # an image of what was made on the base (wheels for another image's COPY --from)
    if stage.source not in _BASE_IMAGE_REFS:
        return (
            f"line {stage.line}: the built stage derives from {stage.source!r}; "
            "it must derive from `FROM ${BASE_IMAGE}`"
        )
    return None


def copy_sources(parsed: Dockerfile) -> list[tuple[Instruction, list[str]]]:
    """For each COPY/ADD that reads the build context: its source paths (not --from, heredocs, URLs)."""
    found: list[tuple[Instruction, list[str]]] = []
    for item in parsed.instructions:
        if item.keyword not in ("COPY", "ADD") or item.heredocs:
            continue
        if "from" in item.flag_names():
            continue
        sources = [path for path in item.arguments[:-1] if "://" not in path and not path.startswith("git@")]
        found.append((item, sources))
    return found


Needs = Literal["buildkit", "newer-frontend"]
NEEDS_TEXT = {
    "buildkit": "BuildKit",
    "newer-frontend": "BuildKit with a Dockerfile frontend newer than Engine 20.10's built-in one",
}
# Flags each builder reads, measured on Engine 20.10 (classic builder and built-in BuildKit).
_CLASSIC_FLAGS = {"FROM": {"platform"}, "COPY": {"from", "chown"}, "ADD": {"chown"}}
_HEALTHCHECK_FLAGS = {"interval", "timeout", "start-period", "retries"}
_BUILTIN_BUILDKIT_FLAGS = {"RUN": {"mount"}, "COPY": {"chmod"}, "ADD": {"chmod"}}


@dataclasses.dataclass(frozen=True, kw_only=True)
class BuildKitFeature:
    """Something in a Dockerfile that the classic builder cannot build."""

    line: int
    feature: str  # as the user wrote it: "RUN --mount", "COPY --link", "heredoc in RUN", ...
    needs: Needs  # "buildkit": any BuildKit, Engine 20.10's included; "newer-frontend": dockerfile 1.4+

    def describe(self) -> str:
        return f"line {self.line}: {self.feature} needs {NEEDS_TEXT[self.needs]}"


def buildkit_features(parsed: Dockerfile) -> list[BuildKitFeature]:
    """Every use of syntax that only BuildKit builds, in file order, with what it needs.

    Measured on Engine 20.10: the classic builder refuses every RUN flag, COPY/ADD flags other
    than --from/--chown, heredocs, and leaves BuildKit's platform args empty in FROM; its built-in
    BuildKit frontend reads RUN --mount and COPY/ADD --chmod (octal) but not heredocs, --link,
    --parents, --exclude, --checksum, --keep-git-dir, RUN --network/--security/--device.
    """
    features: list[BuildKitFeature] = []
    for item in parsed.instructions:
        features += _features_of(item, "")
        if item.keyword == "ONBUILD" and item.sub_keyword:
            trigger = item.original.split(None, 1)[1] if len(item.original.split(None, 1)) > 1 else ""
            try:
                commands = buildkit_parser.parse_string(trigger.translate(_ESCAPED_BYTES))
            except buildkit_parser.GoParseError:
                commands = ()
            for command in commands:
                inner = dataclasses.replace(_instruction_of(command), line=item.line)
                features += _features_of(inner, "ONBUILD ")
    return features


def _features_of(item: Instruction, prefix: str) -> list[BuildKitFeature]:
    features = []
    keyword = item.keyword
    for name, flag in zip(item.flag_names(), item.flags, strict=True):
        if keyword == "HEALTHCHECK" and name in _HEALTHCHECK_FLAGS:
            continue
        if name in _CLASSIC_FLAGS.get(keyword, set()):
            continue
        needs: Needs = "newer-frontend"
        if name in _BUILTIN_BUILDKIT_FLAGS.get(keyword, set()):
            octal = name != "chmod" or re.fullmatch(r"[0-7]+", flag.partition("=")[2]) is not None
            needs = "buildkit" if octal else "newer-frontend"
        features.append(BuildKitFeature(line=item.line, feature=f"{prefix}{keyword} --{name}", needs=needs))
    if item.heredocs:
        features.append(
            BuildKitFeature(line=item.line, feature=f"{prefix}heredoc in {keyword}", needs="newer-frontend")
        )
    if keyword == "FROM":
        for text in (*item.flags, *item.arguments):
            match = _PLATFORM_ARGS.search(text)
            if match:
                feature = f"${match.group(1)} in FROM"
                features.append(BuildKitFeature(line=item.line, feature=feature, needs="buildkit"))
                break
    return features

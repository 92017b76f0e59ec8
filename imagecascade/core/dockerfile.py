"""Just enough Dockerfile parsing to check the `BASE_IMAGE` wiring and list COPY sources."""

from __future__ import annotations

import dataclasses
import re

_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z]+)\s*=\s*(\S+)\s*$")
_BASE_IMAGE_REFS = ("${BASE_IMAGE}", "$BASE_IMAGE")


@dataclasses.dataclass(frozen=True)
class Instruction:
    keyword: str  # upper-case, e.g. "FROM"
    arguments: str
    line: int  # 1-based line where the instruction starts


@dataclasses.dataclass(frozen=True)
class Stage:
    source: str  # what FROM names: an image reference, a stage name or a variable
    name: str | None
    line: int


def parse_instructions(text: str) -> list[Instruction]:
    """Logical instructions with continuations joined; comments and heredoc bodies dropped."""
    lines = text.splitlines()
    escape = "\\"
    start = 0
    # Parser directives may only appear at the very top, before any comment or instruction.
    for index, line in enumerate(lines):
        match = _DIRECTIVE.match(line.strip())
        if not match:
            break
        if match.group(1).lower() == "escape":
            escape = match.group(2)
        start = index + 1
    result: list[Instruction] = []
    pending: list[str] = []
    first_line = 0
    heredoc_end: str | None = None
    for number, raw in enumerate(lines[start:], start=start + 1):
        if heredoc_end is not None:
            if raw.strip() == heredoc_end:
                heredoc_end = None
            continue
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # comment lines inside a continuation are ignored by Docker
        if not pending:
            first_line = number
        if stripped.endswith(escape):
            pending.append(stripped[: -len(escape)])
            continue
        pending.append(stripped)
        logical = " ".join(part.strip() for part in pending if part.strip())
        pending = []
        keyword, _, arguments = logical.partition(" ")
        result.append(Instruction(keyword.upper(), arguments.strip(), first_line))
        heredoc = re.search(r"<<-?\s*[\"']?([A-Za-z_][A-Za-z0-9_]*)[\"']?", arguments)
        if heredoc and keyword.upper() in ("RUN", "COPY", "ADD"):
            heredoc_end = heredoc.group(1)
    if pending:
        logical = " ".join(part.strip() for part in pending if part.strip())
        keyword, _, arguments = logical.partition(" ")
        result.append(Instruction(keyword.upper(), arguments.strip(), first_line))
    return result


def _stage_of(instruction: Instruction) -> Stage:
    words = [word for word in instruction.arguments.split() if not word.startswith("--")]
    source = words[0] if words else ""
    name = words[2] if len(words) >= 3 and words[1].lower() == "as" else None
    return Stage(source=source, name=name, line=instruction.line)


def stages(text: str) -> list[Stage]:
    return [_stage_of(item) for item in parse_instructions(text) if item.keyword == "FROM"]


def base_wiring_problem(text: str, target: str | None = None) -> str | None:
    """Why the Dockerfile does not take its base from `ARG BASE_IMAGE`, or None when it does.

    The stage that is built (`target`, else the last) is followed back through named stages to
    the first stage it derives from, which must be `FROM ${BASE_IMAGE}`, and `ARG BASE_IMAGE`
    must be declared before the first FROM so that it is usable there.
    """
    instructions = parse_instructions(text)
    froms = [index for index, item in enumerate(instructions) if item.keyword == "FROM"]
    if not froms:
        return "has no FROM instruction"
    global_args = {
        item.arguments.split("=", 1)[0].strip() for item in instructions[: froms[0]] if item.keyword == "ARG"
    }
    if "BASE_IMAGE" not in global_args:
        return "must declare `ARG BASE_IMAGE` before its first FROM"
    all_stages = [_stage_of(instructions[index]) for index in froms]
    by_name = {stage.name.lower(): stage for stage in all_stages if stage.name}
    if target is not None:
        if target.lower() not in by_name:
            return f"has no stage named {target!r} (the image's `target`)"
        stage = by_name[target.lower()]
    else:
        stage = all_stages[-1]
    seen: set[str] = set()
    while stage.source.lower() in by_name and stage.source.lower() not in seen:
        seen.add(stage.source.lower())
        stage = by_name[stage.source.lower()]
    if stage.source not in _BASE_IMAGE_REFS:
        return (
            f"line {stage.line}: the built stage derives from {stage.source!r}; "
            "it must derive from `FROM ${BASE_IMAGE}`"
        )
    return None


def copy_sources(text: str) -> list[tuple[Instruction, list[str]]]:
    """For each COPY/ADD that reads the build context: its source paths (not --from copies)."""
    found: list[tuple[Instruction, list[str]]] = []
    for item in parse_instructions(text):
        if item.keyword not in ("COPY", "ADD"):
            continue
        arguments = item.arguments
        if "<<" in arguments:
            continue
        if arguments.startswith("["):
            import json

            words = [str(word) for word in json.loads(arguments)]
        else:
            words = arguments.split()
        if any(word.startswith("--from") for word in words):
            continue
        paths = [word for word in words if not word.startswith("--")]
        sources = [path for path in paths[:-1] if "://" not in path]
        found.append((item, sources))
    return found

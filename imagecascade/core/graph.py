"""The cascade as a graph: order, descendants, and drawings for terminals and docs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal, Protocol

from imagecascade.errors import ConfigError

GraphFormat = Literal["tree", "mermaid", "dot"]


class HasParent(Protocol):
    @property
    def parent(self) -> str | None: ...


def dependency_order(specs: Mapping[str, HasParent]) -> list[str]:
    """Parents before children; siblings by name. A cycle is a ConfigError naming its members."""
    order: list[str] = []
    state: dict[str, Literal["visiting", "done"]] = {}

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            cycle = [*path[path.index(name) :], name]
            location = getattr(specs[name], "declaration_path", name)
            raise ConfigError(f"{location}: parent cycle {' -> '.join(cycle)}")
        state[name] = "visiting"
        parent = specs[name].parent
        if parent is not None and parent in specs:
            visit(parent, [*path, name])
        state[name] = "done"
        order.append(name)

    for name in sorted(specs):
        visit(name, [])
    # Stable, readable order: by depth first would split lineages; instead keep each lineage
    # contiguous by walking roots in name order and children in name order.
    children = children_of(specs)
    result: list[str] = []

    def walk(name: str) -> None:
        result.append(name)
        for child in children.get(name, []):
            walk(child)

    for name in order:
        if specs[name].parent is None or specs[name].parent not in specs:
            walk(name)
    return result


def children_of(specs: Mapping[str, HasParent]) -> dict[str, list[str]]:
    children: dict[str, list[str]] = {}
    for name in sorted(specs):
        parent = specs[name].parent
        if parent is not None:
            children.setdefault(parent, []).append(name)
    return children


def descendants(specs: Mapping[str, HasParent], name: str) -> list[str]:
    """Every image below `name`, in dependency order."""
    children = children_of(specs)
    found: list[str] = []
    pending = list(children.get(name, []))
    while pending:
        child = pending.pop(0)
        found.append(child)
        pending.extend(children.get(child, []))
    return found


def ancestors(specs: Mapping[str, HasParent], name: str) -> list[str]:
    """Every image above `name`, root first."""
    chain: list[str] = []
    parent = specs[name].parent
    while parent is not None and parent in specs:
        chain.insert(0, parent)
        parent = specs[parent].parent
    return chain


def render(
    specs: Mapping[str, HasParent],
    labels: Mapping[str, str],
    stale: Iterable[str],
    fmt: GraphFormat,
) -> str:
    """Draw the cascade. `labels` gives each image's caption (e.g. its short hash)."""
    stale_set = set(stale)
    names = dependency_order(specs)
    children = children_of(specs)
    external = {name: getattr(specs[name], "base", None) for name in names if specs[name].parent is None}
    if fmt == "tree":
        lines: list[str] = []

        def draw(name: str, prefix: str, last: bool, top: bool) -> None:
            mark = " [stale]" if name in stale_set else ""
            caption = f"{name} {labels.get(name, '')}".rstrip() + mark
            if top:
                lines.append(f"{external[name] or '(no base)'}")
                lines.append(f"└── {caption}")
                prefix = "    "
            else:
                lines.append(f"{prefix}{'└── ' if last else '├── '}{caption}")
                prefix += "    " if last else "│   "
            kids = children.get(name, [])
            for index, child in enumerate(kids):
                draw(child, prefix, index == len(kids) - 1, False)

        for name in names:
            if specs[name].parent is None:
                draw(name, "", True, True)
        return "\n".join(lines)
    if fmt == "mermaid":
        out = ["graph TD"]
        ids = {name: f"n{index}" for index, name in enumerate(names)}
        for index, (name, base) in enumerate(external.items()):
            out.append(f'  b{index}["{base}"]:::external --> {ids[name]}')
        for name in names:
            mark = " (stale)" if name in stale_set else ""
            out.append(f'  {ids[name]}["{name} {labels.get(name, "")}{mark}"]')
            parent = specs[name].parent
            if parent is not None:
                out.append(f"  {ids[parent]} --> {ids[name]}")
            if name in stale_set:
                out.append(f"  class {ids[name]} stale")
        out.append("  classDef stale fill:#fdd,stroke:#c00")
        out.append("  classDef external fill:#eee,stroke:#999,stroke-dasharray:3")
        return "\n".join(out)
    if fmt == "dot":
        out = ["digraph cascade {", "  rankdir=TB;", "  node [shape=box];"]
        for name, base in external.items():
            out.append(f'  "{base}" [style=dashed];')
            out.append(f'  "{base}" -> "{name}";')
        for name in names:
            style = ' style=filled fillcolor="#ffdddd"' if name in stale_set else ""
            mark = " (stale)" if name in stale_set else ""
            out.append(f'  "{name}" [label="{name}\\n{labels.get(name, "")}{mark}"{style}];')
            parent = specs[name].parent
            if parent is not None:
                out.append(f'  "{parent}" -> "{name}";')
        out.append("}")
        return "\n".join(out)
    raise ConfigError(f"--format: unknown graph format {fmt!r} (tree, mermaid, dot)")

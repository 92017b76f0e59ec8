"""The cascade as a graph: order, ancestors and descendants, and drawings for terminals and docs.

Each image depends on its parent (the image it is built `FROM`) and on its inputs (images whose
exact hash references it receives as build args, to `COPY --from`). Both kinds of edge order the
builds and move hashes; only parent edges make the tree that lineages and smoke checks follow.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal, Protocol

from imagecascade.errors import ConfigError

GraphFormat = Literal["tree", "mermaid", "dot"]


class Node(Protocol):
    @property
    def parent(self) -> str | None: ...

    @property
    def inputs(self) -> Mapping[str, str]: ...


def edges(spec: Node) -> list[tuple[str, str]]:
    """(image, how) for each image `spec` depends on: `parent`, then `input ARG` in arg order."""
    found = [(spec.parent, "parent")] if spec.parent is not None else []
    return found + [(image, f"input {arg}") for arg, image in sorted(spec.inputs.items())]


def _check_acyclic(specs: Mapping[str, Node]) -> None:
    state: dict[str, Literal["visiting", "done"]] = {}

    def visit(name: str, trail: list[tuple[str, str]]) -> None:
        # trail: (image, how it depends on the next image of the trail), from the walk's start.
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            cycle = trail[[image for image, _ in trail].index(name) :]
            location = getattr(specs[name], "declaration_path", name)
            if all(how == "parent" for _, how in cycle):
                raise ConfigError(f"{location}: parent cycle {' -> '.join([*(i for i, _ in cycle), name])}")
            chain = "".join(f"{image} -({how})-> " for image, how in cycle) + name
            raise ConfigError(f"{location}: cycle through inputs {chain}")
        state[name] = "visiting"
        for dependency, how in edges(specs[name]):
            if dependency in specs:
                visit(dependency, [*trail, (name, how)])
        state[name] = "done"

    for name in sorted(specs):
        visit(name, [])


def children_of(specs: Mapping[str, Node]) -> dict[str, list[str]]:
    """Parent -> its children by name (parent edges only: the tree of lineages)."""
    children: dict[str, list[str]] = {}
    for name in sorted(specs):
        parent = specs[name].parent
        if parent is not None:
            children.setdefault(parent, []).append(name)
    return children


def dependency_order(specs: Mapping[str, Node]) -> list[str]:
    """Every image after its parent and its inputs; lineages kept together where the inputs allow.

    A cycle (through parents, inputs or both) is a ConfigError naming its members.
    """
    _check_acyclic(specs)
    # Roots in the order a depth-first walk from the names (sorted) first finishes them, each
    # followed by its whole lineage; then shifted only where an input must come earlier.
    finished: dict[str, None] = {}  # insertion-ordered set

    def finish(name: str) -> None:
        if name in finished:
            return
        for dependency, _ in edges(specs[name]):
            if dependency in specs:
                finish(dependency)
        finished[name] = None

    for name in sorted(specs):
        finish(name)
    children = children_of(specs)
    walk: list[str] = []

    def visit(name: str) -> None:
        walk.append(name)
        for child in children.get(name, []):
            visit(child)

    for name in finished:
        if specs[name].parent is None or specs[name].parent not in specs:
            visit(name)
    # Stable topological order: always take the first image of the lineage walk whose
    # dependencies are placed, so an input's lineage moves up only as far as it must.
    placed: set[str] = set()
    order: list[str] = []
    remaining = list(walk)
    while remaining:
        for index, name in enumerate(remaining):
            if all(dependency in placed or dependency not in specs for dependency, _ in edges(specs[name])):
                order.append(name)
                placed.add(name)
                del remaining[index]
                break
        else:  # pragma: no cover - _check_acyclic has ruled this out
            raise ConfigError(f"cycle among {', '.join(remaining)}")
    return order


def descendants(specs: Mapping[str, Node], name: str) -> list[str]:
    """Every image built from `name`, through parents or inputs, in dependency order."""
    below: set[str] = set()
    for candidate in dependency_order(specs):
        if any(dependency == name or dependency in below for dependency, _ in edges(specs[candidate])):
            below.add(candidate)
    return [candidate for candidate in dependency_order(specs) if candidate in below]


def ancestors(specs: Mapping[str, Node], name: str) -> list[str]:
    """Every image `name` is built from (parents and inputs, transitively), in dependency order."""
    above: set[str] = set()
    pending = [dependency for dependency, _ in edges(specs[name]) if dependency in specs]
    while pending:
        dependency = pending.pop()
        if dependency not in above:
            above.add(dependency)
            pending.extend(found for found, _ in edges(specs[dependency]) if found in specs)
    return [candidate for candidate in dependency_order(specs) if candidate in above]


def _input_note(spec: Node) -> str:
    return ", ".join(f"{arg}={image}" for arg, image in sorted(spec.inputs.items()))


def render(
    specs: Mapping[str, Node],
    labels: Mapping[str, str],
    stale: Iterable[str],
    fmt: GraphFormat,
) -> str:
    """Draw the cascade. `labels` gives each image's caption (e.g. its short hash).

    Parent edges are the tree's branches (solid arrows); input edges are drawn apart: `⇠ ARG=image`
    after the caption in the tree, dotted labelled arrows in mermaid and dashed ones in dot.
    """
    stale_set = set(stale)
    names = dependency_order(specs)
    children = children_of(specs)
    external = {name: getattr(specs[name], "base", None) for name in names if specs[name].parent is None}
    if fmt == "tree":
        lines: list[str] = []

        def draw(name: str, prefix: str, last: bool, top: bool) -> None:
            mark = " [stale]" if name in stale_set else ""
            note = f" ⇠ {_input_note(specs[name])}" if specs[name].inputs else ""
            caption = f"{name} {labels.get(name, '')}".rstrip() + mark + note
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
            for dependency, how in edges(specs[name]):
                if dependency not in ids:
                    continue
                if how == "parent":
                    out.append(f"  {ids[dependency]} --> {ids[name]}")
                else:
                    out.append(f'  {ids[dependency]} -.->|"{how}"| {ids[name]}')
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
            for dependency, how in edges(specs[name]):
                if dependency not in specs:
                    continue
                if how == "parent":
                    out.append(f'  "{dependency}" -> "{name}";')
                else:
                    out.append(f'  "{dependency}" -> "{name}" [style=dashed arrowhead=empty label="{how}"];')
        out.append("}")
        return "\n".join(out)
    raise ConfigError(f"--format: unknown graph format {fmt!r} (tree, mermaid, dot)")

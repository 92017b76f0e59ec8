"""Terminal output (rich): tables and drawings. Only entry points import this module."""

from __future__ import annotations

from collections.abc import Mapping

from rich.console import Console
from rich.table import Table

from imagecascade.plan import Plan


def console() -> Console:
    return Console(highlight=False, soft_wrap=False)


def plan_table(plan: Plan, build_states: Mapping[str, tuple[str, str]]) -> Table:
    table = Table(title=f"images ({plan.settings.registry or 'local engine store'})")
    for column in ("image", "parent / base", "tag", "lock", "build", "reasons"):
        table.add_column(column, overflow="fold")
    for image in plan.images:
        spec = image.spec
        if spec.parent:
            origin = spec.parent
        else:
            origin = f"{spec.base}" + ("" if spec.base_is_pinned else " [yellow](unpinned)[/]")
        lock = "[green]current[/]" if image.locked else "[red]stale[/]"
        state, detail = build_states.get(image.name, ("unknown", "not looked up"))
        colour = {"present": "green", "missing": "yellow"}.get(state, "red")
        build = f"[{colour}]{state}[/]" + (f" ({detail})" if state == "unknown" else "")
        table.add_row(image.name, origin, image.tag, lock, build, "; ".join(image.reasons))
    return table

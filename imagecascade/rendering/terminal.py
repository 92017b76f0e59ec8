"""Terminal output (rich): tables and drawings. Only entry points import this module."""

from __future__ import annotations

import datetime
import os
import time
from collections.abc import Mapping, Sequence

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from imagecascade.core.backend import BuildEvent
from imagecascade.core.cascade import CascadeResult
from imagecascade.core.plan import Plan
from imagecascade.core.refusals import describe

# Wide enough that piped and CI output never wraps: tables are as wide as their content.
UNWRAPPED_WIDTH = 100_000


def plain_output(is_terminal: bool, environ: Mapping[str, str] | None = None) -> bool:
    """Plain lines (no live table, no wrapping) when not on a terminal or when `CI` is set."""
    environ = os.environ if environ is None else environ
    return not is_terminal or environ.get("CI", "").lower() not in ("", "0", "false")


def console(*, stderr: bool = False) -> Console:
    """A console for the entry points: wrapped to the terminal, or unwrapped for pipes and CI logs."""
    probe = Console(stderr=stderr)
    plain = plain_output(probe.is_terminal)
    return Console(highlight=False, soft_wrap=False, stderr=stderr, width=UNWRAPPED_WIDTH if plain else None)


def plan_table(plan: Plan, build_states: Mapping[str, tuple[str, str]], backend: str = "local") -> Table:
    """Every image; `backend` decides where a missing one would be built (the "builds on" column)."""
    from imagecascade.core.placement import builds_on

    table = Table(title=f"images ({plan.settings.registry or 'local engine store'})")
    for column in ("image", "parent / base, inputs", "tag", "lock", "build", "builds on", "reasons"):
        table.add_column(column, overflow="fold", no_wrap=column in ("image", "tag"))
    for image in plan.images:
        spec = image.spec
        unpinned = f" [yellow](unpinned: {', '.join(spec.unpinned)})[/]" if spec.unpinned else ""
        inputs = "".join(f"\n⇠ {arg}={name}" for arg, name in spec.inputs.items())
        unpinned += "".join(
            f" [yellow](unpinned artifact {item.name})[/]" for item in spec.unpinned_artifacts
        )
        origin = f"{spec.parent or spec.base}{unpinned}{inputs}"
        lock = "[green]current[/]" if image.locked else "[red]stale[/]"
        state, detail = build_states.get(image.name, ("unknown", "not looked up"))
        colour = {"present": "green", "missing": "yellow"}.get(state, "red")
        build = f"[{colour}]{state}[/]"
        if state == "missing" and detail:
            build += f": {escape(detail)}"  # why: what the target holds instead
        elif state == "present" and detail:  # `:latest` elsewhere
            build += f" [yellow]({escape(detail)})[/]"
        elif state == "unknown" and detail == "--offline":
            build += " (--offline)"  # other reasons are printed once below the table
        if image.cannot_build and state != "present":
            build += f"; [red]{escape(describe(image.cannot_build))}[/]"
        where = "-" if state == "present" else _WHERE[builds_on(spec, backend)]
        table.add_row(image.name, origin, image.tag, lock, build, where, "; ".join(image.reasons))
    return table


_WHERE = {"local": "local engine", "cloudbuild": "Cloud Build"}


def plan_fixes(plan: Plan, build_states: Mapping[str, tuple[str, str]]) -> list[str]:
    """One line per image that is not built and cannot be: each reason with what fixes it."""
    return [
        f"{image.name}: cannot build: {refusal.reason}; fix: {refusal.fix}"
        for image in plan.images
        if build_states.get(image.name, ("unknown", ""))[0] != "present"
        for refusal in image.cannot_build
    ]


class CascadeReporter:
    """Shows build events: a live table per image on a terminal, plain timestamped lines elsewhere.

    Use as a context manager around the run; call it with each BuildEvent.
    """

    def __init__(self, out: Console, names: Sequence[str], *, live: bool) -> None:
        self._out = out
        self._rows: dict[str, _Row] = {name: _Row() for name in names}
        self._live: Live | None = (
            Live(_LiveTable(self._rows), console=out, refresh_per_second=4, transient=False) if live else None
        )

    def __enter__(self) -> CascadeReporter:
        if self._live is not None:
            self._live.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._live is not None:
            self._live.stop()

    def __call__(self, event: BuildEvent) -> None:
        row = self._rows.setdefault(event.image, _Row())
        if event.kind == "started":
            row.started = time.monotonic()
            row.status = "building"
        elif event.kind == "step":
            row.step = f"{event.step}/{event.steps}" if event.step is not None else ""
            row.detail = event.message
        elif event.kind == "state":
            if row.started is None:  # the decision: present, or queued with the reason
                row.status = "present" if event.message.startswith("present") else "queued"
            row.detail = event.message
        elif event.kind == "pushed":
            row.detail = f"pushed {event.message}"
        elif event.kind == "finished":
            row.status = event.message.split(" ", 1)[0].rstrip(":")
            row.detail = event.message
            row.finished = time.monotonic()
        elif event.kind == "log" and self._live is not None:
            row.detail = event.message
        if self._live is None:
            self._print_line(event)

    def _print_line(self, event: BuildEvent) -> None:
        """One plain line per event; a step's output lines as `HH:MM:SS image | line`."""
        stamp = datetime.datetime.now().strftime("%H:%M:%S")
        if event.kind == "log":
            line = f"{stamp} {event.image} | {event.message}"
        elif event.kind == "step":
            counted = f"step {event.step}/{event.steps}" if event.step is not None else "step"
            line = f"{stamp} {event.image}: {counted}: {event.message}"
        else:
            line = f"{stamp} {event.image}: {event.message}"
        self._out.print(line, markup=False, highlight=False, soft_wrap=True)


class _Row:
    def __init__(self) -> None:
        self.status = "waiting"
        self.step = ""
        self.detail = ""
        self.started: float | None = None
        self.finished: float | None = None

    def elapsed(self) -> str:
        if self.started is None:
            return ""
        return f"{(self.finished or time.monotonic()) - self.started:.0f} s"


class _LiveTable:
    def __init__(self, rows: Mapping[str, _Row]) -> None:
        self._rows = rows

    def __rich__(self) -> Table:
        table = Table(box=None, pad_edge=False)
        widest = max((len(name) for name in self._rows), default=5)
        table.add_column("image", no_wrap=True, min_width=widest)
        table.add_column("status", no_wrap=True, min_width=9)
        table.add_column("step", no_wrap=True, min_width=5, justify="right")
        table.add_column("elapsed", no_wrap=True, min_width=7, justify="right")
        table.add_column("now", no_wrap=True, overflow="ellipsis", ratio=1)
        for name, row in self._rows.items():
            table.add_row(name, _colour_status(row.status), row.step, row.elapsed(), Text(row.detail))
        return table


def _colour_status(status: str) -> Text:
    colour = {"built": "green", "present": "green", "building": "cyan", "failed": "red", "blocked": "yellow"}
    return Text(status, style=colour.get(status, ""))


def dry_run_table(result: CascadeResult, why: Mapping[str, str] | None = None) -> Table:
    """What a run would do; `why` adds, per missing image, what the target holds instead."""
    table = Table(title=f"cascade --dry-run ({result.target}): nothing was built")
    for column in ("image", "would", "why", "reference"):
        table.add_column(column, overflow="fold")
    for item in result.results:
        action = {"would build": "[yellow]build[/]", "present": "[green]keep[/]"}.get(
            item.outcome, f"[red]{item.outcome}[/]"
        )
        if item.outcome == "present" and ":latest" in item.reason:
            action = "[yellow]move :latest[/]"
        reason = f"{item.reason}; {why[item.name]}" if why and why.get(item.name) else item.reason
        table.add_row(item.name, action, escape(reason), item.reference)
    return table


def summary_table(result: CascadeResult) -> Table:
    table = Table(title=f"cascade ({result.target})")
    for column in ("image", "action", "duration", "reference / reason"):
        table.add_column(column, overflow="fold")
    colour = {
        "built": "green",
        "present": "green",
        "failed": "red",
        "refused": "red",
        "blocked": "yellow",
        "cancelled": "yellow",
    }
    for item in result.results:
        duration = f"{item.duration:.1f} s" if item.outcome in ("built", "failed", "cancelled") else ""
        detail = item.reference if item.outcome in ("built", "present") else item.reason
        if item.latest_moved:
            detail += " (:latest moved here)"
        # Text: reasons quote config keys like [cloudbuild], which are not markup.
        table.add_row(item.name, f"[{colour.get(item.outcome, '')}]{item.outcome}[/]", duration, Text(detail))
    return table


def refusal_fixes(result: CascadeResult) -> list[str]:
    """One line per refused image: what makes it buildable."""
    return [
        f"{item.name}: {item.reason}; fix: {'; '.join(item.fixes)}" for item in result.results if item.fixes
    ]


def failure_logs(result: CascadeResult) -> list[str]:
    """For each failed build: its failing step's last lines and where the complete log is."""
    lines: list[str] = []
    for item in result.results:
        if item.outcome != "failed":
            continue
        where = f" (complete log: {item.log_path})" if item.log_path else ""
        if item.log_tail:
            lines.append(f"--- {item.name}: the failing step's last output{where} ---")
            lines.extend(item.log_tail)
        elif where:
            lines.append(f"--- {item.name}: complete log: {item.log_path} ---")
    return lines

"""The smoke table and summary lines, on a rich console."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from imagecascade.smoke.results import ImageReport, plain_text


def smoke_console() -> Any:
    """A console on stderr: colours only on a terminal, never one escape sequence elsewhere;
    unwrapped in pipes and CI logs (`terminal.plain_output`), like the tasks' output."""
    from rich.console import Console

    from imagecascade.rendering.terminal import UNWRAPPED_WIDTH, plain_output

    terminal = sys.stderr.isatty()
    return Console(
        stderr=True,
        width=UNWRAPPED_WIDTH if plain_output(terminal) else None,
        color_system="auto" if terminal else None,
        force_terminal=terminal,
        highlight=False,
        soft_wrap=False,
    )


def error_line(message: str) -> Any:
    from rich.text import Text

    return Text.assemble(("error: ", "red"), plain_text(message))


def human_size(size: int | None) -> str:
    """Bytes as `docker images` shows them: three significant digits, decimal units (61.9MB)."""
    if size is None:
        return "?"
    value = float(size)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.3g}{unit}"
        value /= 1000
    raise AssertionError("unreachable")


def render_reports(console: Any, reports: Sequence[ImageReport]) -> None:
    from rich.table import Table
    from rich.text import Text

    table = Table(title="smoke checks")
    for column in ("image", "size", "check", "result", "message"):
        table.add_column(column)
    styles = {"pass": "green", "fail": "bold red", "skip": "yellow"}
    for report in reports:
        for index, result in enumerate(report.results):
            message = result.message.removeprefix(f"{result.image}: ")
            status = Text(result.status, style=styles[result.status])
            last = index == len(report.results) - 1
            image, size = (result.image, human_size(report.size)) if index == 0 else ("", "")
            table.add_row(Text(image), size, Text(result.check), status, Text(message), end_section=last)
    console.print(table)
    # One unwrapped line per failure as well: what CI logs and grep need.
    for report in reports:
        for result in report.results:
            if result.status == "fail":
                console.print(Text(result.message), soft_wrap=True)
    passed, failed, skipped = (
        sum(report.count(status) for report in reports) for status in ("pass", "fail", "skip")
    )
    console.print(f"{passed} passed, {failed} failed, {skipped} skipped in {len(reports)} images")

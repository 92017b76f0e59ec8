"""The smoke table and summary lines, on a rich console."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from imagecascade.smoke.results import ImageReport


def render_reports(console: Any, reports: Sequence[ImageReport]) -> None:
    from rich.table import Table
    from rich.text import Text

    table = Table(title="smoke checks")
    for column in ("image", "check", "result", "message"):
        table.add_column(column)
    styles = {"pass": "green", "fail": "bold red", "skip": "yellow"}
    for report in reports:
        for index, result in enumerate(report.results):
            message = result.message.removeprefix(f"{result.image}: ")
            status = Text(result.status, style=styles[result.status])
            last = index == len(report.results) - 1
            image = result.image if index == 0 else ""
            table.add_row(image, result.check, status, Text(message), end_section=last)
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

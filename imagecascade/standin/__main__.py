"""`nox -s standin` runs `python -m imagecascade.standin`: arguments, progress, tables, exit code."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from imagecascade.core.backend import BuildEvent
from imagecascade.errors import CascadeError


def _size(size: int | None) -> str:
    return f"{size / 1e9:.2f} GB" if size else "-"


def main(argv: Sequence[str] | None = None) -> int:
    """`nox -s standin -- [--pip-conf PATH] [--ca-bundle PATH]`: builds what is missing, then checks."""
    parser = argparse.ArgumentParser(
        prog="nox -s standin --",
        description="Build arr-ml-stack and arr-trainer from their real Dockerfiles on a stand-in "
        "parent (Debian 12, Python 3.11, torch 2.6.0 from PyPI) and smoke-check them on the CPU.",
    )
    parser.add_argument(
        "--pip-conf",
        help="pip configuration passed as the pip_conf secret (default: PIP_CONFIG_FILE, else your "
        "~/.config/pip/pip.conf; '' for none)",
    )
    parser.add_argument(
        "--ca-bundle",
        help="CA bundle passed as the ca_bundle secret (default: PIP_CERT, REQUESTS_CA_BUNDLE, "
        "SSL_CERT_FILE, else /etc/ssl/certs/ca-certificates.crt; '' for none)",
    )
    args = parser.parse_args(argv)

    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from imagecascade.core.settings import find_root
    from imagecascade.engines.engine import Engine
    from imagecascade.rendering.smoke_table import render_reports
    from imagecascade.signals import termination_as_interrupt
    from imagecascade.standin.session import run_session, runner_secrets

    console = Console(stderr=True, width=None if sys.stderr.isatty() else 160, highlight=False)

    def say(message: str) -> None:
        console.print(Text(f"{time.strftime('%H:%M:%S')} {message}"), soft_wrap=True)

    def on_event(event: BuildEvent) -> None:
        if event.kind in ("started", "step", "finished", "pushed") or (
            event.kind == "state" and not event.message.startswith(("[internal]", "copy /context"))
        ):
            say(f"{event.image}: {event.message}")

    try:
        root = find_root(Path.cwd())
        secrets = runner_secrets(os.environ, args.pip_conf, args.ca_bundle)
        for source in secrets.values():
            say(f"secret {source.id}: {source.describe()}")
        engine = Engine.from_environment()
        try:
            with termination_as_interrupt():
                result = run_session(root, engine, secrets, on_event=on_event, on_stage=say)
        finally:
            engine.close()
    except KeyboardInterrupt:
        console.print("interrupted: unfinished images were left untagged")
        return 130
    except CascadeError as error:
        console.print(Text.assemble(("error: ", "red"), str(error)), soft_wrap=True)
        return error.exit_code
    table = Table(title="stand-in builds")
    for column in ("image", "outcome", "build time", "size", "reference / reason"):
        table.add_column(column)
    if result.base_seconds is not None:
        table.add_row("(debian base)", "made", f"{result.base_seconds:.0f} s", "", "mmdebstrap, offline")
    for image in result.images:
        seconds = f"{image.seconds:.0f} s" if image.outcome == "built" else ""
        detail = image.reference if image.outcome in ("built", "present") else image.reason
        table.add_row(image.name, image.outcome, seconds, _size(image.size_bytes), Text(detail))
    console.print(table)
    for item in result.cascade.results:
        if item.outcome == "failed" and item.log_tail:
            console.print(Text(f"--- {item.name}: last lines of the build log ---"))
            for line in item.log_tail:
                console.print(Text(line), soft_wrap=True)
    if result.smoke:
        render_reports(console, result.smoke)
    for note in result.notes:
        console.print(Text(note), soft_wrap=True)
    console.print(Text(f"full build logs: {result.logs}"), soft_wrap=True)
    smoke_failed = any(report.failed for report in result.smoke)
    return 0 if result.cascade.ok and not smoke_failed else 1


if __name__ == "__main__":
    raise SystemExit(main())

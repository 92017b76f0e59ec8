"""`nox -s smoke` runs `python -m imagecascade.smoke`: arguments, table, JUnit file, exit code."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from imagecascade.errors import CascadeError
from imagecascade.smoke.runner import JUNIT_PATH, SmokeEvent, find_targets, run_smoke


def main(argv: Sequence[str] | None = None) -> int:
    """`nox -s smoke -- [--registry REF] [--require-gpu] [IMAGE ...]`."""
    parser = argparse.ArgumentParser(
        prog="nox -s smoke --", description="Verify built images inside containers."
    )
    parser.add_argument("images", nargs="*", metavar="IMAGE", help="images to check (default: all)")
    parser.add_argument(
        "--registry", help="check REGISTRY/name:tag (pulled from there when not in the engine)"
    )
    parser.add_argument("--require-gpu", action="store_true", help="fail GPU checks instead of skipping them")
    parser.add_argument(
        "--junit", type=Path, help=f"JUnit XML path (default: {JUNIT_PATH} under the repository)"
    )
    args = parser.parse_args(argv)

    from rich.text import Text

    from imagecascade.core.settings import find_root, load_settings
    from imagecascade.engines.engine import Engine
    from imagecascade.rendering.smoke_table import render_reports
    from imagecascade.rendering.terminal import console as make_console
    from imagecascade.smoke.junit import write_junit

    # Unwrapped in CI logs and pipes: references and messages stay on one line.
    console = make_console(stderr=True)
    try:
        root = find_root(Path.cwd())
        settings = load_settings(root).with_overrides(registry=args.registry)
        engine = Engine.from_environment()
        try:
            targets = find_targets(settings, engine, args.images, pull=engine.pull_image)

            def on_event(event: SmokeEvent) -> None:
                if event.kind == "started":
                    console.print(f"smoke {event.target.name} [dim]({event.target.reference})[/dim]")

            reports = run_smoke(engine, targets, require_gpu=args.require_gpu, on_event=on_event)
        finally:
            engine.close()
    except CascadeError as error:
        console.print(Text.assemble(("error: ", "red"), str(error)), highlight=False, soft_wrap=True)
        return error.exit_code
    junit_path = args.junit or root / JUNIT_PATH
    write_junit(reports, junit_path)
    render_reports(console, reports)
    console.print(f"JUnit report: {junit_path}")
    return 1 if any(report.failed for report in reports) else 0


if __name__ == "__main__":
    raise SystemExit(main())

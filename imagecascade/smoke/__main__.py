"""`nox -s smoke` runs `python -m imagecascade.smoke`: arguments, table, JUnit file, exit code.

Exit codes: 0 every check passed (or was skipped), 1 a check failed, 2 bad input, 3 the engine
failed, 4 an image is not built, 130 stopped by Ctrl-C, SIGTERM or SIGHUP (its container removed,
the JUnit report written with what was finished).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imagecascade.core.settings import SMOKE_JUNIT_FILE
from imagecascade.errors import INTERRUPTED, CascadeError, ConfigError
from imagecascade.signals import interrupt_name, termination_as_interrupt
from imagecascade.smoke.runner import NO_CHECKS, SmokeEvent, SmokeTarget, find_targets, run_smoke

if TYPE_CHECKING:
    from imagecascade.smoke.results import ImageReport

JUNIT_PATH = Path(SMOKE_JUNIT_FILE)


def main(argv: Sequence[str] | None = None) -> int:
    """`nox -s smoke -- [--registry REF] [--require-gpu] [--strict] [--junit PATH] [IMAGE ...]`."""
    parser = argparse.ArgumentParser(
        prog="nox -s smoke --", description="Verify built images inside containers."
    )
    parser.add_argument("images", nargs="*", metavar="IMAGE", help="images to check (default: all)")
    parser.add_argument(
        "--registry", help="check REGISTRY/name:tag (pulled from there when not in the engine)"
    )
    parser.add_argument("--require-gpu", action="store_true", help="fail GPU checks instead of skipping them")
    parser.add_argument(
        "--strict", action="store_true", help="fail an image that declares no checks instead of warning"
    )
    parser.add_argument(
        "--junit", type=Path, help=f"JUnit XML path (default: {JUNIT_PATH} under the repository)"
    )
    args = parser.parse_args(argv)

    from imagecascade.rendering.smoke_table import smoke_console

    console = smoke_console()
    with termination_as_interrupt():
        try:
            return _run(args, console)
        except KeyboardInterrupt as interrupt:
            console.print(f"interrupted by {interrupt_name(interrupt)}: nothing was checked")
            return INTERRUPTED


def _run(args: argparse.Namespace, console: Any) -> int:
    from imagecascade.core.settings import find_root, load_settings
    from imagecascade.engines.engine import Engine
    from imagecascade.rendering.smoke_table import error_line, render_reports
    from imagecascade.smoke.session import SmokeSession

    reports: list[ImageReport] = []
    running: list[SmokeTarget] = []

    def on_event(event: SmokeEvent) -> None:
        if event.kind == "leftovers":
            count = len(event.removed)
            console.print(
                f"removed {count} smoke container{'s' if count > 1 else ''} left by an interrupted run"
            )
        elif event.kind == "started" and event.target is not None:
            running[:] = [event.target]
            console.print(f"smoke {event.target.name} ({event.target.reference})")
        elif event.kind == "finished" and event.report is not None:
            running.clear()
            reports.append(event.report)
            for result in event.report.results:
                if result.check == NO_CHECKS and result.status == "skip":
                    console.print(f"warning: {result.message}", markup=False, highlight=False)

    try:
        root = find_root(Path.cwd())
        settings = load_settings(root).with_overrides(registry=args.registry)
        junit_path = args.junit or root / JUNIT_PATH
        engine = Engine.from_environment()
        try:
            targets = find_targets(settings, engine, args.images, pull=engine.pull_image)
            try:
                run_smoke(
                    engine,
                    targets,
                    SmokeSession.for_repository(root),
                    require_gpu=args.require_gpu,
                    strict=args.strict,
                    on_event=on_event,
                )
            except KeyboardInterrupt as interrupt:
                name = interrupt_name(interrupt)
                stopped = (
                    (running[0].name, f"stopped by {name} before its checks finished") if running else None
                )
                render_reports(console, reports)
                written = _write_report(console, reports, junit_path, interrupted=stopped)
                console.print(
                    f"interrupted by {name}: the running check's container was removed"
                    + (f"; JUnit report (finished images only): {junit_path}" if written else "")
                )
                return INTERRUPTED
        finally:
            engine.close()
    except CascadeError as error:
        console.print(error_line(str(error)))
        return error.exit_code
    render_reports(console, reports)
    if not _write_report(console, reports, junit_path):
        return ConfigError.exit_code
    console.print(f"JUnit report: {junit_path}")
    return 1 if any(report.failed for report in reports) else 0


def _write_report(
    console: Any, reports: list[ImageReport], path: Path, *, interrupted: tuple[str, str] | None = None
) -> bool:
    """Write the JUnit file; one error line (no traceback) when the path cannot be written."""
    from imagecascade.rendering.smoke_table import error_line
    from imagecascade.smoke.junit import write_junit

    try:
        write_junit(reports, path, interrupted=interrupted)
    except OSError as error:
        console.print(error_line(f"cannot write the JUnit report {path}: {error.strerror or error}"))
        return False
    return True


if __name__ == "__main__":
    raise SystemExit(main())

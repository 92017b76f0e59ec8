"""The `check-freshness-hashes` pre-commit hook: fail when the lock file's hashes are stale.

Only the pure core is imported here: no docker, google or rich, so every commit stays fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from imagecascade.core.lock import write_lock
from imagecascade.core.plan import FIX_COMMAND, Plan, compute_plan, stale_lines
from imagecascade.core.settings import find_root, load_settings
from imagecascade.errors import CascadeError


def check_hashes(root: Path, out: TextIO, *, fix_hint: bool) -> int:
    """Print one line per stale image; 0 when the lock is current, 1 when not."""
    plan = compute_plan(load_settings(root))
    show_warnings(plan)
    lines = stale_lines(plan)
    for line in lines:
        print(line, file=out)
    if lines and fix_hint:
        print(f"the lock file {plan.settings.lock_path.name} is stale: run `{FIX_COMMAND}`", file=out)
    return 1 if lines else 0


def write_hashes(root: Path, out: TextIO) -> int:
    """Rewrite the lock file from the images; a broken lock file is replaced, not an error."""
    plan = compute_plan(load_settings(root), ignore_broken_lock=True)
    show_warnings(plan)
    changed = write_lock(plan.settings.lock_path, plan.lock_entries())
    for line in stale_lines(plan):
        print(line, file=out)
    moved = sum(1 for image in plan.images if not image.locked)
    gone = len(plan.removed)
    if changed:
        what = f"{moved} of {len(plan.images)} images changed" + (f", {gone} removed" if gone else "")
        print(f"{plan.settings.lock_path.name}: updated ({what})", file=out)
    else:
        print(f"{plan.settings.lock_path.name}: already current ({len(plan.images)} images)", file=out)
    return 0


def show_warnings(plan: Plan, err: TextIO | None = None) -> None:
    """One line each on stderr: what the plan had to discard or repair."""
    for line in plan.warnings:
        print(f"warning: {line}", file=err or sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="check-freshness-hashes", description=__doc__)
    parser.add_argument("filenames", nargs="*", help="ignored: every image is checked")
    parser.add_argument("--root", type=Path, help="repository root (default: found from the cwd)")
    args = parser.parse_args(argv)
    try:
        root = args.root.resolve() if args.root else find_root(Path.cwd())
        return check_hashes(root, sys.stdout, fix_hint=True)
    except CascadeError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code


if __name__ == "__main__":
    raise SystemExit(main())

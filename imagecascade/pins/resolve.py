"""Ask pip's resolver, without installing, whether requirements resolve for an image's Python and platform.

`nox -s resolve` runs `python -m imagecascade.pins.resolve`: arr-ml-stack's requirements together
with the torch its parent builds, for the image's Python (3.10) and glibc (Ubuntu 22.04: 2.35)
on x86_64. pip downloads metadata (and wheels without separate metadata) but installs nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

DEFAULT_REQUIREMENTS = Path("images/arr-ml-stack/requirements.txt")
DEFAULT_PINS = ("torch==2.6.0",)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Target:
    """The interpreter and platform of the image the requirements are for."""

    python_version: str = "3.10"
    glibc: tuple[int, int] = (2, 35)
    arch: str = "x86_64"

    def platforms(self) -> list[str]:
        """Every manylinux tag this glibc accepts, most specific first.

        pip does not expand `--platform manylinux_2_35_x86_64` to the older tags (torch 2.6.0,
        for one, is tagged manylinux1), so each is passed explicitly.
        """
        major, minor = self.glibc
        tags = [f"manylinux_{major}_{version}_{self.arch}" for version in range(minor, 4, -1)]
        legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
        tags += [f"{name}_{self.arch}" for version, name in legacy.items() if version <= minor]
        return tags


@dataclasses.dataclass(frozen=True)
class Resolved:
    name: str
    version: str
    requested: bool


@dataclasses.dataclass(frozen=True, kw_only=True)
class Resolution:
    ok: bool
    packages: tuple[Resolved, ...] = ()
    problem: str = ""  # pip's explanation when ok is False
    command: tuple[str, ...] = ()


def pip_command(
    requirements: Path,
    pins: Sequence[str],
    target: Target,
    *,
    report: Path,
    target_dir: Path,
    python: str = sys.executable,
) -> list[str]:
    """The `pip install --dry-run` that resolves for `target` without touching any environment.

    `--target` is required by pip with `--platform`/`--python-version`; nothing is written
    there on a dry run. `--only-binary=:all:` is also required by them: an sdist would have
    to be built on this machine to learn its dependencies.
    """
    command = [
        python, "-m", "pip", "install",
        "--dry-run", "--ignore-installed", "--quiet",
        "--report", str(report),
        "--target", str(target_dir),
        "--python-version", target.python_version,
        "--only-binary=:all:",
    ]  # fmt: skip
    for platform in target.platforms():
        command += ["--platform", platform]
    command += ["-r", str(requirements), *pins]
    return command


def parse_report(report: Mapping[str, Any]) -> list[Resolved]:
    """The packages of a pip installation report (format version 1), sorted by name."""
    packages = [
        Resolved(
            name=item["metadata"]["name"],
            version=item["metadata"]["version"],
            requested=bool(item.get("requested")),
        )
        for item in report.get("install", [])
    ]
    return sorted(packages, key=lambda package: package.name.lower())


def explain_failure(output: str) -> str:
    """pip's own explanation: the ERROR lines and the conflict description under them."""
    lines = [
        line for line in output.splitlines() if line.strip() and not line.startswith("WARNING: Location")
    ]
    start = next((index for index, line in enumerate(lines) if line.startswith("ERROR")), None)
    return "\n".join(lines[start:] if start is not None else lines[-20:])


def resolve(
    requirements: Path, pins: Sequence[str], target: Target, *, python: str = sys.executable
) -> Resolution:
    """Run pip's resolver for `target`; never installs anything."""
    with tempfile.TemporaryDirectory(prefix="imagecascade-resolve-") as scratch:
        report = Path(scratch) / "report.json"
        command = pip_command(
            requirements, pins, target, report=report, target_dir=Path(scratch) / "target", python=python
        )
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0 or not report.is_file():
            return Resolution(
                ok=False, problem=explain_failure(done.stdout + done.stderr), command=tuple(command)
            )
        data = json.loads(report.read_text(encoding="utf-8"))
    return Resolution(ok=True, packages=tuple(parse_report(data)), command=tuple(command))


def render(resolution: Resolution) -> str:
    """A plain table: name, version, and `*` for what was asked for directly."""
    width = max((len(package.name) for package in resolution.packages), default=4)
    rows = [f"{'package'.ljust(width)}  version      requested"]
    rows += [
        f"{package.name.ljust(width)}  {package.version.ljust(11)}  {'*' if package.requested else ''}"
        for package in resolution.packages
    ]
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m imagecascade.pins.resolve", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--requirements", type=Path, default=DEFAULT_REQUIREMENTS, help="requirements file to resolve"
    )
    parser.add_argument(
        "--pin",
        action="append",
        dest="pins",
        help=f"a requirement resolved together with the file (default: {' '.join(DEFAULT_PINS)})",
    )
    parser.add_argument("--python-version", default=Target.python_version, help="the image's Python X.Y")
    parser.add_argument("--glibc", default="2.35", help="the image's glibc X.Y (Ubuntu 22.04: 2.35)")
    args = parser.parse_args(argv)
    if not args.requirements.is_file():
        print(f"{args.requirements}: missing (run from the repository root)", file=sys.stderr)
        return 2
    major, _, minor = args.glibc.partition(".")
    target = Target(python_version=args.python_version, glibc=(int(major), int(minor)))
    pins = tuple(args.pins or DEFAULT_PINS)
    resolution = resolve(args.requirements, pins, target)
    where = f"Python {target.python_version}, manylinux glibc {args.glibc} {target.arch}"
    if not resolution.ok:
        print(f"{args.requirements} + {' '.join(pins)} does not resolve for {where}:", file=sys.stderr)
        print(resolution.problem, file=sys.stderr)
        return 1
    print(render(resolution))
    print(f"{args.requirements} + {' '.join(pins)} resolves for {where}: {len(resolution.packages)} packages")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Checks around the cascade: tests, lint, and smoke checks of the built images.

Thin on purpose: each session installs what it needs and runs one command; the logic lives in
the package (`python -m imagecascade.smoke` for the smoke checks).
"""

from __future__ import annotations

from pathlib import Path

import nox
import nox.command

nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["lint", "tests", "trainer"]

ROOT = Path(__file__).parent


def run_keeping_exit_code(session: nox.Session, *args: str, env: dict[str, str] | None = None) -> None:
    """Run a command and, when it fails, end nox with the command's own exit code (README's table:
    4 not built, 3 engine, 130 interrupted...), not nox's catch-all 1."""
    try:
        session.run(*args, env=env)
    except nox.command.CommandFailed as failed:
        code = getattr(failed, "return_code", None)
        raise SystemExit(code if isinstance(code, int) and code > 0 else 1) from None


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite without the trainer's torch tests (arguments after `--` go to pytest)."""
    session.install("-e", ".[dev]")
    session.run("python", "-m", "pytest", "-m", "not torch", *session.posargs)


@nox.session
def trainer(session: nox.Session) -> None:
    """Run the tests that need torch (the trainer's host tests) with the trainer extra installed."""
    session.install("-e", ".[dev,trainer]")
    session.run("python", "-m", "pytest", "-m", "torch", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Run ruff, mypy --strict and hadolint on every images/*/Dockerfile and standin/*/Dockerfile."""
    session.install("-e", ".[tasks,lint]")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    typed = ["imagecascade", *(name for name in ("tasks.py", "noxfile.py") if (ROOT / name).is_file())]
    session.run("mypy", "--strict", *typed)
    dockerfiles = sorted(
        str(path.relative_to(ROOT))
        for pattern in ("images/*/Dockerfile", "standin/*/Dockerfile")
        for path in ROOT.glob(pattern)
    )
    if dockerfiles:
        session.run("hadolint", *dockerfiles)


@nox.session
def smoke(session: nox.Session) -> None:
    """Verify the built images: `-- [--registry REF] [--require-gpu] [--strict] [--junit P] [IMAGE ...]`."""
    session.install(".[smoke]")
    run_keeping_exit_code(session, "python", "-m", "imagecascade.smoke", *session.posargs)


@nox.session
def standin(session: nox.Session) -> None:
    """On demand, not CI: arr-ml-stack and arr-trainer built on a stand-in torch parent, smoke-checked."""
    session.install(".[tasks]")
    run_keeping_exit_code(session, "python", "-m", "imagecascade.standin", *session.posargs)


@nox.session
def lock(session: nox.Session) -> None:
    """Resolve the images' stale Python locks with uv: `-- [--check] [--upgrade] [IMAGE ...]`."""
    session.install(".[lock]")
    # uv reads no pip configuration: a private index is UV_DEFAULT_INDEX (or UV_INDEX_URL).
    run_keeping_exit_code(session, "python", "-m", "imagecascade.pins.pylock", *session.posargs)

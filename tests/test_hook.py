"""The check-freshness-hashes hook: through main(), and through pre-commit in a real git repo."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from image_repo import write_cascade

from imagecascade.core.hook import main, write_hashes

REPOSITORY = Path(__file__).resolve().parents[1]


def _stale_leaf(root: Path) -> None:
    (root / "images/a1x/leaf.txt").write_text("changed")


def _stale_root(root: Path) -> None:
    (root / "images/a/a.txt").write_text("changed")


def _no_lock(root: Path) -> None:
    (root / "images.lock.json").unlink()


def _nothing(root: Path) -> None:
    pass


HOOK_CASES = [
    ("current", _nothing, 0, []),
    ("leaf changed", _stale_leaf, 1, ["a1x: "]),
    ("root changed", _stale_root, 1, ["a: ", "a1: ", "a1x: ", "a2: "]),
    (
        "no lock file",
        _no_lock,
        1,
        ["a: (none) → ", "a1: (none)", "a1x: (none)", "a2: (none)", "other: (none)", "other-child: (none)"],
    ),
]


@pytest.mark.parametrize(("case", "change", "code", "prefixes"), HOOK_CASES, ids=[c[0] for c in HOOK_CASES])
def test_main(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    case: str,
    change,
    code: int,
    prefixes: list[str],  # type: ignore[no-untyped-def]
) -> None:
    root = write_cascade(tmp_path)
    write_hashes(root, io.StringIO())
    change(root)
    assert main(["--root", str(root)]) == code
    lines = capsys.readouterr().out.splitlines()
    if code == 0:
        assert lines == []
        return
    assert len(lines) == len(prefixes) + 1
    for line, prefix in zip(lines, prefixes, strict=False):
        assert line.startswith(prefix), line
    assert lines[-1].endswith("run `invoke hashes --write`")


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


def _git_repo(tmp_path: Path, config: str) -> Path:
    root = write_cascade(tmp_path / "repo")
    write_hashes(root, io.StringIO())
    (root / ".pre-commit-config.yaml").write_text(config)
    _git(root, "init", "-q")
    _git(root, "-c", "user.email=t@example.invalid", "-c", "user.name=t", "add", ".")
    _git(root, "-c", "user.email=t@example.invalid", "-c", "user.name=t", "commit", "-qm", "init")
    return root


def _pre_commit(root: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home")}
    return subprocess.run(
        [sys.executable, "-m", "pre_commit", *args], cwd=root, env=env, capture_output=True, text=True
    )


def test_pre_commit_run_rejects_a_stale_commit(tmp_path: Path) -> None:
    config = (
        "repos:\n- repo: local\n  hooks:\n  - id: check-freshness-hashes\n    name: freshness\n"
        f"    entry: {sys.executable} -m imagecascade.core.hook\n    language: system\n"
        "    pass_filenames: false\n    always_run: true\n"
    )
    root = _git_repo(tmp_path, config)
    clean = _pre_commit(root, tmp_path, "run", "--all-files")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    _stale_leaf(root)
    stale = _pre_commit(root, tmp_path, "run", "--all-files")
    assert stale.returncode == 1
    assert "a1x: " in stale.stdout and "run `invoke hashes --write`" in stale.stdout


def test_published_hook_definition_installs_and_runs(tmp_path: Path) -> None:
    """`.pre-commit-hooks.yaml` as a consumer repository would use it (pre-commit try-repo)."""
    root = _git_repo(tmp_path, "repos: []\n")
    _stale_root(root)
    result = _pre_commit(root, tmp_path, "try-repo", str(REPOSITORY), "check-freshness-hashes", "--all-files")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "a: " in result.stdout
    assert "changed a.txt" in result.stdout


def test_this_repositorys_lock_is_current(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--root", str(REPOSITORY)]) == 0, capsys.readouterr().out

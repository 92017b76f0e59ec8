"""What the tool writes into a repository stays out of git and out of every build context."""

from __future__ import annotations

import subprocess
from pathlib import Path

from imagecascade.core.build_log import BuildLog, log_path
from imagecascade.core.plan import compute_plan
from imagecascade.core.run_lock import exclusive_cascade
from imagecascade.core.settings import load_settings
from tests.image_repo import write_file, write_image


def _root_context_repo(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "cascade.toml").write_text("")
    write_image(
        root,
        "whole",
        'base = "127.0.0.1:5000/base:1"\ncontext = "../.."\ndockerfile = "Dockerfile"\n',
        {},
        dockerfile="ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY . /repo\n",
    )
    write_file(root / "src" / "main.py", "print('hi')\n")
    return root


def test_the_tools_own_output_never_moves_a_repository_root_context(tmp_path: Path) -> None:
    root = _root_context_repo(tmp_path / "repo")
    before = compute_plan(load_settings(root)).get("whole").hash  # writes the digest cache
    with BuildLog("whole", log_path(root, "whole", "0" * 16), lambda event: None) as log:
        log.output("a build's output\n")
    write_file(root / "reports" / "smoke-junit.xml", "<testsuites/>")
    with exclusive_cascade(load_settings(root).cache_dir, lambda message: None):
        pass
    assert (root / "reports" / "build-logs").is_dir() and (root / ".cache" / "imagecascade").is_dir()
    assert compute_plan(load_settings(root)).get("whole").hash == before
    write_file(root / "src" / "main.py", "print('changed')\n")  # the context itself still counts
    assert compute_plan(load_settings(root)).get("whole").hash != before


def test_git_ignores_what_the_tool_writes_without_being_told(tmp_path: Path) -> None:
    root = _root_context_repo(tmp_path / "repo")
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    compute_plan(load_settings(root))
    with BuildLog("whole", log_path(root, "whole", "0" * 16), lambda event: None) as log:
        log.output("output\n")
    with exclusive_cascade(load_settings(root).cache_dir, lambda message: None):
        pass
    status = subprocess.run(
        ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=all"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert ".cache" not in status and "build-logs" not in status, status
    assert "images/whole/Dockerfile" in status  # the repository's own files are untouched

"""A smoke run stopped from outside leaves no container: SIGTERM and SIGHUP clean up like Ctrl-C, a
container whose run was killed outright stops by itself at its deadline, and the next run of the
repository removes it. `docker ps -a` (the real CLI) is the judge.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from junit_schemas import assert_valid_junit
from smoke_repo import built, unique, write

from imagecascade.engines.engine import Engine
from imagecascade.smoke.session import SmokeSession

pytestmark = pytest.mark.engine

HANG, SHORT, QUICK = unique("smoke-hang"), unique("smoke-hang-short"), unique("smoke-quick")
DOCKERFILE = "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nENV PYTHONPATH=/opt/site\nCOPY site /opt/site\n"


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, engine: Engine, base_image: str) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("smoke-interrupt")
    (root / "cascade.toml").write_text("")
    declarations = {
        HANG: '[smoke]\ntimeout_seconds = 120\nimports = ["skboom"]\n',
        SHORT: '[smoke]\ntimeout_seconds = 4\nimports = ["skboom"]\n',
        QUICK: '[smoke]\nimports = ["json"]\n',
    }
    for name, smoke in declarations.items():
        write(root / "images" / name / "image.toml", f'base = "{base_image}"\n{smoke}')
        write(root / "images" / name / "Dockerfile", DOCKERFILE)
        write(root / "images" / name / "site" / "skboom.py", "import time\ntime.sleep(600)\n")
    with built(engine, root) as done:
        yield done


def docker_ps(session: SmokeSession) -> list[str]:
    """`docker ps -a` lines (id and state) of this repository's smoke containers."""
    done = subprocess.run(
        ["docker", "ps", "-a", "--filter", f"label=imagecascade.repository={session.repository}",
         "--format", "{{.ID}} {{.State}}"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    return done.stdout.split("\n")[:-1]


def start_smoke(repo: Path, image: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "imagecascade.smoke", image],
        cwd=repo,
        env={**os.environ, "CI": "true"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_running_probe(session: SmokeSession, process: subprocess.Popen[str]) -> str:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        running = [line.split()[0] for line in docker_ps(session) if line.endswith(" running")]
        if running:
            return running[0]
        assert process.poll() is None, process.communicate()
        time.sleep(0.1)
    raise AssertionError("the probe's container never ran")


@pytest.mark.parametrize("sent", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_during_a_hanging_import_removes_the_container(repo: Path, sent: signal.Signals) -> None:
    session = SmokeSession.for_repository(repo)
    process = start_smoke(repo, HANG)
    wait_for_running_probe(session, process)
    time.sleep(0.5)  # well inside the import that hangs
    process.send_signal(sent)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert f"interrupted by {sent.name}" in err
    assert docker_ps(session) == []
    junit = assert_valid_junit(repo / "reports" / "smoke-junit.xml")
    error = junit.find(f"testsuite[@name='{HANG}']/testcase[@name='interrupted']/error")
    assert error is not None
    assert error.get("message") == f"stopped by {sent.name} before its checks finished"


def test_a_killed_runs_container_stops_itself_and_the_next_run_removes_it(
    repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    session = SmokeSession.for_repository(repo)
    process = start_smoke(repo, SHORT)
    container = wait_for_running_probe(session, process)
    started = time.monotonic()
    process.kill()  # SIGKILL: nothing in the process can clean up
    process.communicate(timeout=60)
    assert [line.split()[0] for line in docker_ps(session)] == [container]
    # The probe ends its container when timeout_seconds (4 s) is spent, whoever is left on the host.
    while any(line.endswith(" running") for line in docker_ps(session)):
        assert time.monotonic() - started < 4 + 15, "the container outlived its timeout_seconds"
        time.sleep(0.2)
    assert docker_ps(session) == [f"{container} exited"]

    from imagecascade.smoke.__main__ import main

    monkeypatch.chdir(repo)
    assert main([QUICK]) == 0
    assert "removed 1 smoke container left by an interrupted run" in capsys.readouterr().err
    assert docker_ps(session) == []

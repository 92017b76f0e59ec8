"""arr-vertex-launcher's package on the host: settings from the environment, the entrypoint's
fatal exits and idle stop (against a stand-in `wandb` script), and the spot patch applied by the
real .pth file to a stand-in `google.cloud.aiplatform.jobs` module written to tmp_path.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

FOLDER = Path(__file__).resolve().parent.parent / "images" / "arr-vertex-launcher"
SRC = FOLDER / "src"
# The package lives in its image folder, not in this repository's package; import it from there.
sys.path.insert(0, str(SRC))

from arr_vertex_launcher.config import (  # noqa: E402
    LauncherConfigError,
    agent_config,
    agent_environment,
    read_settings,
)
from arr_vertex_launcher.entrypoint import IdleTracker, main  # noqa: E402

COMPLETE = {
    "WANDB_API_KEY": "unused",
    "WANDB_ENTITY": "example-entity",
    "WANDB_LAUNCH_QUEUE": "gpu-spot, cpu",
    "VERTEX_PROJECT": "example-project",
    "VERTEX_REGION": "us-central1",
}


def env(**changes: str | None) -> dict[str, str]:
    merged: dict[str, str | None] = {**COMPLETE, **changes}
    return {key: value for key, value in merged.items() if value is not None}


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({}, "missing required environment variables WANDB_API_KEY, WANDB_ENTITY, WANDB_LAUNCH_QUEUE"),
        (env(VERTEX_REGION=None), "missing required environment variable VERTEX_REGION "),
        (env(WANDB_ENTITY="  "), "missing required environment variable WANDB_ENTITY "),
        (env(WANDB_LAUNCH_QUEUE=" , "), "WANDB_LAUNCH_QUEUE names no queue"),
        (env(VERTEX_REGION="central"), "is not a Google Cloud region"),
        (env(VERTEX_SPOT="maybe"), "VERTEX_SPOT='maybe' is not one of"),
        (env(LAUNCH_IDLE_TIMEOUT="soon"), "LAUNCH_IDLE_TIMEOUT='soon' is not a number"),
        (env(LAUNCH_IDLE_TIMEOUT="-1"), "LAUNCH_IDLE_TIMEOUT='-1' must be at least 0"),
        (env(LAUNCH_MAX_JOBS="1.5"), "LAUNCH_MAX_JOBS='1.5' is not a whole number"),
        (env(LAUNCH_BUILDER="buildah"), "LAUNCH_BUILDER='buildah' is not one of noop, docker, kaniko"),
    ],
)
def test_bad_environments_are_refused(environ: dict[str, str], message: str) -> None:
    with pytest.raises(LauncherConfigError) as raised:
        read_settings(environ)
    assert message in str(raised.value)


def test_agent_config_comes_from_the_environment() -> None:
    settings = read_settings(
        env(VERTEX_SPOT="1", LAUNCH_MAX_JOBS="3", LAUNCH_REGISTRY_URI="us-docker.pkg.dev/example-project/r")
    )
    assert agent_config(settings) == {
        "entity": "example-entity",
        "queues": ["gpu-spot", "cpu"],
        "max_jobs": 3,
        "environment": {"type": "gcp", "region": "us-central1"},
        "builder": {"type": "noop"},
        "registry": {"uri": "us-docker.pkg.dev/example-project/r"},
    }
    child = agent_environment(settings, env())
    assert child["GOOGLE_CLOUD_PROJECT"] == child["CLOUDSDK_CORE_PROJECT"] == "example-project"
    assert child["VERTEX_SPOT"] == "1"
    assert settings.idle_timeout == 0


def test_missing_environment_is_one_fatal_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([], environ={"WANDB_ENTITY": "example-entity"}) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("launcher-entrypoint: fatal: missing required environment variables WANDB_API_KEY,")


def test_print_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--print-config"], environ=env()) == 0
    assert json.loads(capsys.readouterr().out)["queues"] == ["gpu-spot", "cpu"]


@pytest.mark.parametrize(
    ("lines", "idle_at_10"),
    [
        ([], 10.0),
        ([(2.0, "agent polling on queues q, running 0 out of a maximum of 1 jobs")], 10.0),
        ([(4.0, "launch: agent got job {...}")], 6.0),
        ([(3.0, "agent running 1 out of a maximum of 1 jobs")], 0.0),
        ([(3.0, "running 1 out of a maximum of 1 jobs"), (7.0, "running 0 out of a maximum of 1 jobs")], 3.0),
    ],
)
def test_idle_tracker(lines: list[tuple[float, str]], idle_at_10: float) -> None:
    tracker = IdleTracker(now=0.0)
    for at, line in lines:
        tracker.observe(line, at)
    assert tracker.idle_for(10.0) == idle_at_10


def _fake_wandb(folder: Path, body: str) -> dict[str, str]:
    """A `wandb` on PATH that records its arguments and then runs `body` (sh)."""
    folder.mkdir()
    script = folder / "wandb"
    script.write_text(f'#!/bin/sh\necho "args: $*"\n{body}\n', encoding="utf-8")
    script.chmod(0o755)
    return env(PATH=f"{folder}{os.pathsep}{os.environ['PATH']}", HOME=str(folder.parent / "home"))


def test_the_agent_is_stopped_when_idle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    environ = _fake_wandb(
        tmp_path / "bin",
        'echo "agent polling on queues q, running 0 out of a maximum of 1 jobs"\nexec sleep 60',
    )
    started = time.monotonic()
    assert main([], environ={**environ, "LAUNCH_IDLE_TIMEOUT": "1"}) == 0
    assert time.monotonic() - started < 10
    out = capsys.readouterr().out
    assert "args: launch-agent --config " in out
    assert "no job for 1 s (LAUNCH_IDLE_TIMEOUT=1), stopping the agent" in out
    written = json.loads((tmp_path / "home" / ".config" / "wandb" / "launch-config.yaml").read_text())
    assert written["environment"] == {"type": "gcp", "region": "us-central1"}


def test_the_agents_exit_status_is_passed_on(tmp_path: Path) -> None:
    assert main([], environ=_fake_wandb(tmp_path / "bin", "exit 3")) == 3


# --- the spot patch, through the real .pth file -------------------------------------------------

FAKE_JOBS = """
class gca_custom_job_compat:
    class Scheduling:
        class Strategy:
            SPOT = "SPOT"
            ON_DEMAND = "ON_DEMAND"

CALLS = []

class CustomJob:
    def run(self, service_account=None, sync=True, scheduling_strategy=None):
        CALLS.append(("run", scheduling_strategy))

    def submit(self, *, timeout=None, scheduling_strategy=None):
        CALLS.append(("submit", scheduling_strategy))
"""

OLD_JOBS = """
class gca_custom_job_compat:
    class Scheduling:
        class Strategy:
            SPOT = "SPOT"

class CustomJob:
    def run(self, sync=True):
        pass

    def submit(self, timeout=None):
        pass
"""

SCENARIO = """
import json, site, sys
site.addsitedir(sys.argv[1])  # processes arr-vertex-spot.pth as the image's site-packages would
from google.cloud.aiplatform import jobs
from arr_vertex_launcher import spot
job = jobs.CustomJob()
job.run(None, True)
job.submit(timeout=5)
job.submit(scheduling_strategy="ON_DEMAND")
print(json.dumps({"calls": jobs.CALLS, "status": spot.status()}))
"""


def _site(tmp_path: Path, jobs_source: str) -> tuple[Path, dict[str, str]]:
    site_dir = tmp_path / "site-packages"
    site_dir.mkdir()
    shutil.copy(FOLDER / "arr-vertex-spot.pth", site_dir)
    # google and google.cloud are namespace packages, so this joins any real ones.
    package = tmp_path / "fake" / "google" / "cloud" / "aiplatform"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("from google.cloud.aiplatform import jobs\n")
    (package / "jobs.py").write_text(textwrap.dedent(jobs_source))
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "fake"), str(SRC)])}
    return site_dir, environ


def _python(code: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60, env=env
    )


@pytest.mark.parametrize(
    ("vertex_spot", "strategies", "active"),
    [
        ("1", ["SPOT", "SPOT", "ON_DEMAND"], True),
        ("true", ["SPOT", "SPOT", "ON_DEMAND"], True),
        ("0", [None, None, "ON_DEMAND"], False),
        (None, [None, None, "ON_DEMAND"], False),
    ],
)
def test_spot_patch_through_the_pth_file(
    tmp_path: Path, vertex_spot: str | None, strategies: list[str | None], active: bool
) -> None:
    site_dir, environ = _site(tmp_path, FAKE_JOBS)
    environ.pop("VERTEX_SPOT", None)
    if vertex_spot is not None:
        environ["VERTEX_SPOT"] = vertex_spot
    done = _python(SCENARIO, str(site_dir), env=environ)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    assert [strategy for _method, strategy in result["calls"]] == strategies
    assert result["status"]["active"] is active
    assert result["status"]["patched_methods"] == (["run", "submit"] if active else [])


def test_spot_check_fails_when_aiplatform_cannot_do_spot(tmp_path: Path) -> None:
    site_dir, environ = _site(tmp_path, OLD_JOBS)
    environ["VERTEX_SPOT"] = "1"
    code = "import site, sys, runpy; site.addsitedir(sys.argv[1]); "
    code += "sys.argv = ['spot_check', '--expect-active']; "
    code += "runpy.run_module('arr_vertex_launcher.spot_check', run_name='__main__')"
    done = _python(code, str(site_dir), env=environ)
    assert done.returncode == 1
    state = json.loads(done.stdout)
    assert state["requested"] is True and state["active"] is False
    assert "takes no scheduling_strategy" in state["problem"]


def test_spot_check_without_the_pth_file_is_not_active(tmp_path: Path) -> None:
    _site_dir, environ = _site(tmp_path, FAKE_JOBS)
    environ["VERTEX_SPOT"] = "1"
    done = _python(
        "import runpy, sys; sys.argv = ['spot_check', '--expect-active']; "
        "runpy.run_module('arr_vertex_launcher.spot_check', run_name='__main__')",
        env=environ,
    )
    assert done.returncode == 1
    assert json.loads(done.stdout)["hooked"] is False

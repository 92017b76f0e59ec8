"""Which containers a smoke run may remove: its repository's, left by runs that can no longer do it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from imagecascade.engines.containers import ContainerSummary
from imagecascade.smoke.session import (
    DEADLINE,
    OWNER,
    REPOSITORY,
    ROLE,
    RUN,
    SmokeSession,
    is_leftover,
    process_alive,
)

NOW = 1_800_000_000.0
ME = SmokeSession(repository="r1", run="now", owner="builder:100")


def container(**labels: str) -> ContainerSummary:
    base = {
        ROLE: "smoke",
        REPOSITORY: "r1",
        RUN: "earlier",
        OWNER: "builder:200",
        DEADLINE: str(int(NOW) + 60),
    }
    base.update(labels)
    return ContainerSummary(
        id="c", labels={key: value for key, value in base.items() if value != "-"}, state="running"
    )


@pytest.mark.parametrize(
    ("labels", "alive", "leftover"),
    [
        ({}, {200}, False),  # another run of this repository, alive, within its deadline
        ({}, set(), True),  # its process is gone from this host
        ({DEADLINE: str(int(NOW) - 1)}, {200}, True),  # alive, but past the time it would have removed it
        ({OWNER: "elsewhere:200"}, set(), False),  # another host: only its deadline can tell
        ({OWNER: "elsewhere:200", DEADLINE: str(int(NOW) - 1)}, set(), True),
        ({RUN: "now"}, set(), False),  # this run's own
        ({REPOSITORY: "r2"}, set(), False),  # another checkout's
        ({DEADLINE: "-", OWNER: "-"}, {200}, True),  # ours, but from a run that never said when it ends
        ({DEADLINE: "soon"}, {200}, True),
    ],
)
def test_is_leftover(labels: dict[str, str], alive: set[int], leftover: bool) -> None:
    assert is_leftover(container(**labels), ME, now=NOW, alive=lambda pid: pid in alive) is leftover


def test_labels_name_the_repository_run_owner_and_deadline(tmp_path: Path) -> None:
    session = SmokeSession.for_repository(tmp_path)
    again = SmokeSession.for_repository(tmp_path / ".")
    assert session.repository == again.repository and session.run != again.run
    assert SmokeSession.for_repository(tmp_path / "other").repository != session.repository
    labels = session.labels(NOW + 0.5)
    assert labels[ROLE] == "smoke" and labels[REPOSITORY] == session.repository
    assert labels[OWNER].endswith(f":{os.getpid()}") and labels[DEADLINE] == str(int(NOW) + 1)
    assert session.selector() == {ROLE: "smoke", REPOSITORY: session.repository}


def test_process_alive() -> None:
    assert process_alive(os.getpid())
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    assert not process_alive(int(finished.stdout))

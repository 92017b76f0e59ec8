"""Who owns a smoke container: the labels every one carries, and which leftovers a run removes.

Each container of a smoke run is labelled with the repository it checks (a digest of the
repository's path, so runs in different checkouts never touch each other's containers), the run,
the process that owns it (`host:pid`) and the wall-clock time by which its owner would have
removed it. A run interrupted beyond cleaning up (SIGKILL, a lost machine) leaves containers
behind; the next run of the same repository removes each one whose owner is gone (same host,
process not alive) or whose deadline has passed. A run still going elsewhere keeps its own.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

from imagecascade.engines.containers import ContainerSummary

ROLE = "imagecascade.role"
REPOSITORY = "imagecascade.repository"
RUN = "imagecascade.smoke-run"
OWNER = "imagecascade.owner"
DEADLINE = "imagecascade.deadline"


@dataclasses.dataclass(frozen=True)
class SmokeSession:
    """One smoke run's identity: `repository` names the checkout, `run` this run."""

    repository: str
    run: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex)
    owner: str = dataclasses.field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")

    @classmethod
    def for_repository(cls, root: Path) -> SmokeSession:
        """A session for the repository at `root` (its id: the first 16 hex digits of sha256(path))."""
        return cls(repository=hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16])

    def selector(self) -> dict[str, str]:
        """The labels every container of this repository's smoke runs carries."""
        return {ROLE: "smoke", REPOSITORY: self.repository}

    def labels(self, deadline: float) -> dict[str, str]:
        """Labels for a new container that this run removes by `deadline` (seconds since the epoch)."""
        return {**self.selector(), RUN: self.run, OWNER: self.owner, DEADLINE: str(int(deadline) + 1)}


class ContainerEngine(Protocol):
    def list_containers(self, labels: Mapping[str, str]) -> list[ContainerSummary]: ...

    def remove_container(self, container_id: str) -> None: ...


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_leftover(
    container: ContainerSummary,
    session: SmokeSession,
    *,
    now: float,
    alive: Callable[[int], bool] = process_alive,
) -> bool:
    """Whether `container` belongs to a run of this repository that can no longer remove it."""
    labels = container.labels
    if labels.get(REPOSITORY) != session.repository or labels.get(RUN) == session.run:
        return False
    host, _, pid = labels.get(OWNER, "").rpartition(":")
    our_host = session.owner.rpartition(":")[0]
    if host == our_host and pid.isdigit() and not alive(int(pid)):
        return True
    try:
        return float(labels.get(DEADLINE, "")) < now
    except ValueError:
        return True  # labelled as ours but not by a run that says when it ends


def remove_leftovers(
    engine: ContainerEngine, session: SmokeSession, *, now: float | None = None
) -> list[str]:
    """Remove this repository's containers left by earlier interrupted runs; their ids."""
    moment = time.time() if now is None else now
    removed = []
    for container in engine.list_containers(session.selector()):
        if is_leftover(container, session, now=moment):
            engine.remove_container(container.id)
            removed.append(container.id)
    return removed

"""File checks, observed through the engine: what the image holds, whatever the probe may read.

A probe running without capabilities, or as a non-root user, cannot look into a 0700 folder of
another user and would take "permission denied" for "absent". The engine reads the container's
filesystem itself (the archive API, on a container that is created but never started), so what
is seen is what the image holds; symlinks are followed in the container's root as a process in
it would follow them. When the engine cannot say, the check fails with "cannot tell".

Executable means executable by the user the image runs as (see RunsAs).
"""

from __future__ import annotations

import dataclasses
import posixpath
from collections.abc import Callable, Mapping
from typing import Literal, Protocol

from imagecascade.core.checks import FileCheck, SmokeChecks
from imagecascade.engines.containers import PathError, PathStat
from imagecascade.smoke.results import Status

# Linux follows at most 40 symlinks in one lookup (MAXSYMLINKS).
_MAX_LINKS = 40

Kind = Literal["file", "dir", "other", "missing", "broken-link", "loop", "unknown"]


@dataclasses.dataclass(frozen=True)
class FileFact:
    """What is at a path after following symlinks; `links` is the chain of targets followed.

    `reason` says why the engine could not tell (kind "unknown") or why the path is missing.
    """

    path: str
    kind: Kind
    mode: int | None = None
    owner: tuple[int, int] | None = None
    links: tuple[str, ...] = ()
    reason: str | None = None

    @property
    def exists(self) -> bool:
        return self.kind in ("file", "dir", "other")


class FileEngine(Protocol):
    def stat_path(self, container_id: str, path: str) -> PathStat | None: ...

    def path_owner(self, container_id: str, path: str) -> tuple[int, int]: ...


def observe_files(engine: FileEngine, container_id: str, checks: SmokeChecks) -> dict[str, FileFact]:
    """A FileFact for each declared path, read from a created container of the image."""
    return {
        check.path: observe_file(engine, container_id, check.path, owner=check.executable is not None)
        for check in checks.files
    }


def observe_file(engine: FileEngine, container_id: str, path: str, *, owner: bool) -> FileFact:
    links: list[str] = []
    current = path
    for _ in range(_MAX_LINKS + 1):
        try:
            found = engine.stat_path(container_id, current)
        except PathError as error:
            return _from_error(path, str(error), tuple(links))
        if found is None:
            kind: Kind = "broken-link" if links else "missing"
            return FileFact(path, kind, links=tuple(links))
        if found.kind != "symlink":
            break
        target = found.link_target or ""
        if not target:
            return FileFact(
                path, "unknown", links=tuple(links), reason=f"the engine gave no target for {current}"
            )
        # The engine resolves the target in the container's root already; a relative answer is not expected.
        current = target if target.startswith("/") else posixpath.join(posixpath.dirname(current), target)
        links.append(current)
    else:
        return FileFact(path, "loop", links=tuple(links))
    kind = found.kind if found.kind in ("file", "dir") else "other"
    fact = FileFact(path, kind, mode=found.mode, links=tuple(links))
    if owner and kind == "file":
        try:
            fact = dataclasses.replace(fact, owner=engine.path_owner(container_id, current))
        except PathError as error:
            return dataclasses.replace(fact, kind="unknown", reason=f"cannot read its owner: {error}")
    return fact


def _from_error(path: str, message: str, links: tuple[str, ...]) -> FileFact:
    if "too many links" in message:
        return FileFact(path, "loop", links=links, reason=message)
    if "not a directory" in message:
        return FileFact(path, "missing", links=links, reason="a folder on its way is a file")
    return FileFact(path, "unknown", links=links, reason=message)


@dataclasses.dataclass(frozen=True)
class RunsAs:
    """The user the image's processes run as, and which declared files it may execute.

    `may_execute` comes from the probe, which runs as that user: `os.access(path, X_OK)` is the
    kernel's own answer, folders on the way included. Root is judged by the bits (one x bit is
    enough), since the probe's root has no capabilities and a default container's has.
    """

    uid: int
    may_execute: Mapping[str, bool] = dataclasses.field(default_factory=dict)


_Add = Callable[[str, Status, str], None]


def judge_files(
    checks: SmokeChecks,
    facts: Mapping[str, FileFact],
    runs_as: RunsAs | None,
    unknown_user: str,
    add: _Add,
) -> None:
    """One result per file check; `unknown_user` says why `runs_as` is None, if it is."""
    for check in checks.files:
        fact = facts.get(check.path) or FileFact(check.path, "unknown", reason="it was not looked at")
        _judge(check, fact, runs_as, unknown_user, add)


def _judge(check: FileCheck, fact: FileFact, runs_as: RunsAs | None, unknown_user: str, add: _Add) -> None:
    name = f"file {check.path}"
    via = f" (via symlink to {fact.links[-1]})" if fact.links and fact.exists else ""
    if fact.kind == "unknown":
        add(name, "fail", f"file {check.path}: cannot tell: {fact.reason}")
        return
    if not check.exists:
        if fact.exists:
            add(name, "fail", f"file {check.path} exists ({_kind_text(fact)}){via}, expected absent")
        else:
            add(name, "pass", f"file {check.path} is absent{_absent_detail(fact)}")
        return
    if not fact.exists:
        add(name, "fail", f"file {check.path} is missing{_absent_detail(fact)}")
        return
    if check.executable is None:
        add(name, "pass", f"file {check.path} exists{via}")
        return
    if fact.kind != "file":
        verdict: Status = "pass" if check.executable is False else "fail"
        add(name, verdict, f"file {check.path} is not executable ({_kind_text(fact)}){via}")
        return
    assert fact.mode is not None and fact.owner is not None
    if runs_as is None:
        add(name, "fail", f"file {check.path}: cannot tell who may execute it: {unknown_user}")
        return
    who = "root" if runs_as.uid == 0 else f"uid {runs_as.uid}"
    allowed = bool(fact.mode & 0o111) if runs_as.uid == 0 else runs_as.may_execute.get(check.path)
    if allowed is None:
        add(
            name,
            "fail",
            f"file {check.path}: cannot tell whether {who} may execute it: the probe did not say",
        )
        return
    detail = f"mode {fact.mode:04o}, owner {fact.owner[0]}:{fact.owner[1]}"
    if allowed == check.executable:
        verb = "is executable" if allowed else "is not executable"
        add(name, "pass", f"file {check.path} {verb} by {who} ({detail}){via}")
    elif check.executable:
        add(name, "fail", f"file {check.path} is not executable by {who} ({detail}){via}")
    else:
        add(name, "fail", f"file {check.path} is executable by {who} ({detail}){via}, expected not")


def _kind_text(fact: FileFact) -> str:
    return {"file": "file", "dir": "a directory", "other": "not a regular file"}.get(fact.kind, fact.kind)


def _absent_detail(fact: FileFact) -> str:
    if fact.kind == "broken-link":
        return f" (a broken symlink to {fact.links[-1]})"
    if fact.kind == "loop":
        return " (a symlink loop)"
    if fact.reason:
        return f" ({fact.reason})"
    return ""

"""What the other checkouts of this repository still use, as far as git can tell: for `invoke prune`.

One Docker Engine is often shared by several checkouts of the same repository (git worktrees,
second clones), each with its own current images. Git knows some of them:

- the other worktrees (`git worktree list --porcelain`): each one's HEAD, and the hashes its
  images.lock.json records on disk;
- every local and remote-tracking branch: the hashes its images.lock.json records at its tip
  (`git for-each-ref`, then `git cat-file --batch`), the images a checkout of it would use;
- which commits this repository has (`git cat-file --batch-check`): an image whose revision
  label names a commit it does not have was built in another clone.

Hashes are read from a lock file's text (`"hash": "<64 hex>"`), so one with merge-conflict
markers still counts. Outside git (or when git fails) nothing is known: every answer is empty.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
from collections.abc import Iterable
from pathlib import Path

_HASH = re.compile(r'"hash"\s*:\s*"([0-9a-f]{64})"')
_COMMIT = re.compile(r"^[0-9a-f]{40}(?:[0-9a-f]{24})?$")


@dataclasses.dataclass(frozen=True)
class Worktree:
    """Another worktree of this repository: where it is and the commit it has checked out."""

    path: Path
    head: str  # "" when it has no commit yet


@dataclasses.dataclass(frozen=True)
class Checkouts:
    """What git says about the other checkouts, for one lock file path."""

    in_git: bool
    worktrees: tuple[Worktree, ...] = ()
    # freshness hash -> where it is recorded: `worktree /path`, `branch main`, `branch origin/x`
    recorded: dict[str, str] = dataclasses.field(default_factory=dict)


def read_checkouts(lock_path: Path) -> Checkouts:
    """The other worktrees of the repository holding `lock_path`, and where each freshness hash is
    recorded: in another worktree's lock file on disk, or at the tip of a local or remote-tracking
    branch (worktrees first, then branches by name). Never raises: outside git, `in_git` is False."""
    root = lock_path.parent
    top = _git(root, "rev-parse", "--show-toplevel")
    if top is None:
        return Checkouts(in_git=False)
    toplevel = Path(top.strip()).resolve()
    relative = lock_path.resolve().relative_to(toplevel).as_posix()
    recorded: dict[str, str] = {}
    worktrees = tuple(tree for tree in _worktrees(root) if tree.path.resolve() != toplevel)
    for tree in worktrees:
        try:
            text = (tree.path / relative).read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for found in _HASH.findall(text):
            recorded.setdefault(found, f"worktree {tree.path}")
    for ref, text in _branch_locks(root, relative):
        for found in _HASH.findall(text):
            recorded.setdefault(found, f"branch {ref}")
    return Checkouts(in_git=True, worktrees=worktrees, recorded=recorded)


def revision_commit(revision: str) -> str:
    """The commit an `org.opencontainers.image.revision` label names (`<sha>` or `<sha>-dirty`);
    "" for anything else (`unknown`, empty)."""
    commit = revision.removesuffix("-dirty")
    return commit if _COMMIT.match(commit) else ""


def missing_commits(root: Path, commits: Iterable[str]) -> set[str]:
    """Those of `commits` that the repository at `root` does not have (empty outside git)."""
    wanted = sorted(set(commits))
    if not wanted:
        return set()
    answer = _git(root, "cat-file", "--batch-check", stdin="".join(f"{commit}\n" for commit in wanted))
    if answer is None:
        return set()
    return {line.split()[0] for line in answer.splitlines() if line.endswith(" missing")}


def _worktrees(root: Path) -> list[Worktree]:
    answer = _git(root, "worktree", "list", "--porcelain")
    found: list[Worktree] = []
    path: Path | None = None
    head = ""
    for line in [*(answer or "").splitlines(), ""]:
        if line.startswith("worktree "):
            path, head = Path(line.removeprefix("worktree ")), ""
        elif line.startswith("HEAD "):
            head = line.removeprefix("HEAD ").strip()
        elif not line and path is not None:
            found.append(Worktree(path, "" if set(head) <= {"0"} else head))
            path = None
    return found


def _branch_locks(root: Path, relative: str) -> list[tuple[str, str]]:
    """(branch, text of its lock file at its tip) for every branch whose tip has one."""
    listed = _git(
        root, "for-each-ref", "--format=%(objectname) %(refname:short)", "refs/heads", "refs/remotes"
    )
    tips: dict[str, str] = {}
    for line in (listed or "").splitlines():
        commit, _, ref = line.partition(" ")
        if commit and ref and not ref.endswith("/HEAD"):
            tips.setdefault(commit, ref)
    if not tips:
        return []
    request = "".join(f"{commit}:{relative}\n" for commit in tips)
    try:
        done = subprocess.run(
            ["git", "-C", str(root), "cat-file", "--batch"],
            input=request.encode(),
            capture_output=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    output = done.stdout
    found = []
    position = 0
    for ref in tips.values():
        end = output.find(b"\n", position)
        if end < 0:
            break
        header = output[position:end].decode("utf-8", "replace").split()
        position = end + 1
        if len(header) == 3 and header[1] == "blob":
            size = int(header[2])
            found.append((ref, output[position : position + size].decode("utf-8", "replace")))
            position += size + 1
    return found


def _git(root: Path, *args: str, stdin: str | None = None) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(root), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None

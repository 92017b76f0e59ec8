"""The other checkouts of this repository on this machine, and what they use: for `invoke prune`.

One Docker Engine is often shared by several checkouts of the same repository (git worktrees,
second clones), each with its own current images. They are found two ways:

- git's own list of worktrees (`git worktree list --porcelain`);
- this tool's list of the checkouts that built on the local engine (`register_checkout`, a line
  per cascade root in `$XDG_CACHE_HOME/imagecascade/checkouts`, default `~/.cache/...`), of which
  those that share a root commit with this repository count (`git rev-list --max-parents=0 HEAD`).

For each, its current hashes are computed now from its files, as `invoke plan` there would (when
its declarations cannot be read, the images built from its HEAD commit count instead), and the
hashes its images.lock.json records on disk are read. The lock file at the tip of every local and
remote-tracking branch counts too (`git for-each-ref`, `git cat-file --batch`): what checking it out
would use. Hashes are read from a lock file's text (`"hash": "<64 hex>"`), so one with merge-conflict
markers still counts. Outside git only the registered checkouts are known, none of them confirmed
to be of this repository, so none counts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import re
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal

from imagecascade.core.plan import compute_plan
from imagecascade.core.settings import LOCK_FILE, load_settings
from imagecascade.errors import CascadeError

_HASH = re.compile(r'"hash"\s*:\s*"([0-9a-f]{64})"')
_COMMIT = re.compile(r"^[0-9a-f]{40}(?:[0-9a-f]{24})?$")


@dataclasses.dataclass(frozen=True)
class Checkout:
    """Another checkout of this repository, and what it uses now."""

    root: Path  # its cascade root (where its cascade.toml and images/ are)
    kind: Literal["worktree", "checkout"]
    head: str  # its HEAD commit, "" when unknown
    current: frozenset[str]  # its current freshness hashes
    problem: str = ""  # why its current hashes could not be computed ("" when they were)

    def __str__(self) -> str:
        return f"{self.kind} {self.root}"


@dataclasses.dataclass(frozen=True)
class Checkouts:
    """What is known about the other checkouts of the repository at one cascade root."""

    in_git: bool
    others: tuple[Checkout, ...] = ()
    # freshness hash -> the lock file that records it: `worktree /p`, `checkout /p`, `branch main`
    recorded: dict[str, str] = dataclasses.field(default_factory=dict)


def checkouts_file(environ: Mapping[str, str]) -> Path:
    """`$XDG_CACHE_HOME/imagecascade/checkouts`, or `~/.cache/imagecascade/checkouts`."""
    cache = environ.get("XDG_CACHE_HOME") or str(Path(environ.get("HOME") or Path.home()) / ".cache")
    return Path(cache) / "imagecascade" / "checkouts"


def register_checkout(root: Path, environ: Mapping[str, str]) -> None:
    """Add the cascade root `root` to this machine's list of checkouts that build here, once, and
    drop entries whose folder is gone. Under a file lock; never raises (the list only helps prune)."""
    entry = str(root.resolve())
    if "\n" in entry:
        return
    path = checkouts_file(environ)
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a+", encoding="utf-8", errors="surrogateescape") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            handle.seek(0)
            known = handle.read().splitlines()
            if entry in known:
                return
            kept = [line for line in known if line and Path(line).is_dir()]
            handle.seek(0)
            handle.truncate()
            handle.write("".join(f"{line}\n" for line in [*kept, entry]))


def read_checkouts(root: Path, environ: Mapping[str, str]) -> Checkouts:
    """The other checkouts of the repository whose cascade root is `root`, and where each freshness
    hash is recorded (other checkouts' lock files on disk first, then branch tips by name). Never
    raises: outside git, `in_git` is False and nothing is known."""
    root = root.resolve()
    top = _git(root, "rev-parse", "--show-toplevel")
    if top is None:
        return Checkouts(in_git=False)
    toplevel = Path(top.strip()).resolve()
    relative = root.relative_to(toplevel)
    origins = _root_commits(root)
    places: dict[Path, Literal["worktree", "checkout"]] = {}
    for path in _worktree_paths(root):
        places.setdefault((path / relative).resolve(), "worktree")
    for line in _registered(environ):
        path = Path(line)
        if path.is_dir() and path.resolve() not in places and origins & _root_commits(path):
            places[path.resolve()] = "checkout"
    places.pop(root, None)
    others = tuple(_checkout(path, kind) for path, kind in places.items())
    recorded: dict[str, str] = {}
    for other in others:
        for found in _lock_hashes(other.root / LOCK_FILE):
            recorded.setdefault(found, str(other))
    lock = (relative / LOCK_FILE).as_posix()
    for ref, text in _branch_locks(root, lock):
        for found in _HASH.findall(text):
            recorded.setdefault(found, f"branch {ref}")
    return Checkouts(in_git=True, others=others, recorded=recorded)


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


def _checkout(root: Path, kind: Literal["worktree", "checkout"]) -> Checkout:
    head = (_git(root, "rev-parse", "--verify", "-q", "HEAD") or "").strip()
    try:
        # No digest cache: that checkout's own runs write theirs.
        plan = compute_plan(load_settings(root), use_cache=False, ignore_broken_lock=True)
    except (CascadeError, OSError, ValueError) as error:
        return Checkout(root, kind, head, frozenset(), problem=str(error) or type(error).__name__)
    return Checkout(root, kind, head, frozenset(image.hash for image in plan.images))


def _lock_hashes(path: Path) -> list[str]:
    try:
        return _HASH.findall(path.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return []


def _registered(environ: Mapping[str, str]) -> list[str]:
    try:
        text = checkouts_file(environ).read_text(encoding="utf-8", errors="surrogateescape")
    except OSError:
        return []
    return [line for line in text.splitlines() if line]


def _root_commits(root: Path) -> set[str]:
    return set((_git(root, "rev-list", "--max-parents=0", "HEAD") or "").split())


def _worktree_paths(root: Path) -> list[Path]:
    answer = _git(root, "worktree", "list", "--porcelain") or ""
    return [
        Path(line.removeprefix("worktree ")) for line in answer.splitlines() if line.startswith("worktree ")
    ]


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

"""Why an image is missing in the target even when the lock file is current.

The target's newest image of that name (`:latest` in a registry, the newest local image in the
engine) carries its freshness hash in the `io.imagecascade.freshness-hash` label. The lock entry
git history recorded for that hash says what it was made of, and comparing it with today's inputs
says what changed:

    target has 3f9c0d1e2a4b5c6d (images.lock.json at a1b2c3d): changed requirements.txt

When nothing is known (no such image, no label, a hash no commit recorded) the line says so.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path

from imagecascade.core.freshness import short_hash
from imagecascade.core.lock import LockEntry, explain, parse_lock
from imagecascade.core.plan import Plan
from imagecascade.errors import CascadeError

# newest_hash(name): the freshness hash of the target's newest image of that name; "" when that
# image has no freshness label, None when the target has no image of that name. BackendError when
# the target cannot be asked.
NewestHash = Callable[[str], str | None]
HISTORY_COMMITS = 50  # commits of images.lock.json searched for one hash


def recorded_entry(root: Path, lock_path: Path, name: str, full_hash: str) -> tuple[str, LockEntry] | None:
    """(abbreviated commit, entry) of the newest commit whose lock file records `name` at `full_hash`.

    None outside git or when no commit of the lock file records it.
    """
    relative = lock_path.relative_to(root).as_posix()
    # -S: only the commits that added or removed the hash text, newest first.
    listed = _git(root, "log", f"-S{full_hash}", f"-n{HISTORY_COMMITS}", "--format=%h", "--", relative)
    for commit in (listed or "").split():
        text = _git(root, "show", f"{commit}:{relative}")
        if text is None:
            continue
        try:
            entry = parse_lock(text, f"{relative} at {commit}").get(name)
        except CascadeError:
            continue
        if entry is not None and entry.hash == full_hash:
            return commit, entry
    return None


def why_missing(plan: Plan, newest_hash: NewestHash, names: Iterable[str], target: str) -> dict[str, str]:
    """One line per name saying what the target holds instead and what changed since.

    Errors of the target (BackendError) propagate.
    """
    root = plan.settings.root
    lock_name = plan.settings.lock_path.name
    explained: dict[str, str] = {}
    for name in names:
        image = plan.get(name)
        held = newest_hash(name)
        if held is None:
            explained[name] = f"{target} has no earlier {name} image to compare with"
        elif not held:
            explained[name] = f"{target}'s newest {name} image has no freshness-hash label"
        elif held == image.hash:
            continue
        else:
            found = recorded_entry(root, plan.settings.lock_path, name, held)
            if found is None:
                explained[name] = f"{target} has {short_hash(held)}, which no committed {lock_name} records"
            else:
                commit, entry = found
                reasons = explain(entry, image.lock_entry())
                explained[name] = f"{target} has {short_hash(held)} ({lock_name} at {commit}): " + "; ".join(
                    reasons
                )
    return explained


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None

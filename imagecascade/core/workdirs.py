"""Folders the tool writes into a repository (`.cache/imagecascade/`, `reports/build-logs/`).

Each is made with a `.gitignore` that ignores everything in it, the way pytest marks its cache, so
a repository that has not listed them in its own .gitignore never commits the digest cache, the
cascade lock or build logs by accident.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

GITIGNORE = "# Written by imagecascade: nothing in this folder belongs in git.\n*\n"


def ensure_private_dir(folder: Path) -> Path:
    """Create `folder` (and its parents) with a `.gitignore` of `*` when it has none; return it.

    Raises OSError when the folder cannot be created; a `.gitignore` that cannot be written is
    left out (the folder still works).
    """
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / ".gitignore"
    if not marker.exists():
        with contextlib.suppress(OSError):
            marker.write_text(GITIGNORE, encoding="utf-8")
    return folder

"""Hashing speed, printed side by side with its floor in the same run.

    python benchmarks/bench_hashing.py [--files 10000] [--megabytes 600] [--images 200]

1. A synthetic context of N files / M MB: `compute_plan` cold (no digest cache) against the
   floor, a plain `hashlib.file_digest` loop over the same files. Goal: ≤ 1.3× the floor.
2. The same plan again with the digest cache warm and nothing changed. Goal: ≤ 0.2 s. Then once
   more with a ten-pattern .dockerignore that excludes nothing (each path is matched the way
   Docker does: the cost of the port of its matcher).
3. The pre-commit hook on this repository when nothing changed, as a fresh process. Goal: < 300 ms.
4. Planning a synthetic graph of 200 images.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from imagecascade.core.plan import compute_plan
from imagecascade.core.settings import load_settings

REPOSITORY = Path(__file__).resolve().parents[1]
# Typical patterns (wildcards, **, an exception) that leave the synthetic context whole.
IGNORE_FILE = "\n".join(
    [
        "**/__pycache__",
        "**/*.pyc",
        "*.egg-info",
        "build",
        "dist",
        ".git",
        "d0*/x",
        "!d01/x",
        "**/f?.tmp",
        "**/node_modules",
    ]
)


def make_context(root: Path, files: int, megabytes: int) -> None:
    folder = root / "images" / "big"
    folder.mkdir(parents=True)
    (root / "cascade.toml").write_text("")
    (folder / "image.toml").write_text('base = "127.0.0.1:5000/base:1"\n')
    (folder / "Dockerfile").write_text("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY . /data\n")
    rng = random.Random(7)
    # Mostly small files plus a few large ones, like a source tree with model assets.
    large = max(1, files // 200)
    small_bytes = 4096
    large_bytes = (megabytes * 1024 * 1024 - (files - large) * small_bytes) // large
    block = rng.randbytes(1024 * 1024)
    for index in range(files):
        sub = folder / f"d{index % 50:02d}" / f"e{index % 7}"
        sub.mkdir(parents=True, exist_ok=True)
        size = large_bytes if index < large else small_bytes
        with open(sub / f"f{index}.bin", "wb") as handle:
            handle.write(index.to_bytes(8, "little"))
            remaining = size - 8
            while remaining > 0:
                chunk = block[: min(remaining, len(block))]
                handle.write(chunk)
                remaining -= len(chunk)
    # Age every file so the racy-timestamp guard lets the cache keep them.
    old = time.time() - 3600
    for path in folder.rglob("*"):
        os.utime(path, (old, old), follow_symlinks=False)


def floor(root: Path) -> float:
    start = time.perf_counter()
    for folder, _, names in os.walk(root / "images"):
        for name in names:
            with open(os.path.join(folder, name), "rb") as handle:
                hashlib.file_digest(handle, "sha256")
    return time.perf_counter() - start


def plan_time(root: Path, *, use_cache: bool) -> float:
    start = time.perf_counter()
    compute_plan(load_settings(root), use_cache=use_cache)
    return time.perf_counter() - start


def make_graph(root: Path, images: int) -> None:
    root.mkdir(parents=True)
    (root / "cascade.toml").write_text("")
    rng = random.Random(3)
    for index in range(images):
        folder = root / "images" / f"img{index:03d}"
        folder.mkdir(parents=True)
        origin = (
            f'parent = "img{rng.randrange(index):03d}"' if index and rng.random() < 0.8 else 'base = "b:1"'
        )
        (folder / "image.toml").write_text(origin + '\n[build_args]\nX = "1"\n')
        (folder / "Dockerfile").write_text("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY . /x\n")
        for number in range(5):
            (folder / f"file{number}.txt").write_text(f"{index}-{number}\n" * 20)


def hook_time() -> float:
    subprocess.run([sys.executable, "-m", "imagecascade.core.hook"], cwd=REPOSITORY, capture_output=True)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "imagecascade.core.hook"], cwd=REPOSITORY, capture_output=True)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--megabytes", type=int, default=600)
    parser.add_argument("--images", type=int, default=200)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-hashing-"))
    try:
        context_root = workdir / "context"
        make_context(context_root, args.files, args.megabytes)
        floor(context_root)  # both sides read from the page cache
        floors = [floor(context_root) for _ in range(3)]
        colds = [plan_time(context_root, use_cache=False) for _ in range(3)]
        plan_time(context_root, use_cache=True)  # fills the digest cache
        warms = [plan_time(context_root, use_cache=True) for _ in range(5)]
        (context_root / "images" / "big" / ".dockerignore").write_text(IGNORE_FILE)
        plan_time(context_root, use_cache=True)
        ignoring = min(plan_time(context_root, use_cache=True) for _ in range(5))
        graph_root = workdir / "graph"
        make_graph(graph_root, args.images)
        plan_time(graph_root, use_cache=True)
        graph_warm = min(plan_time(graph_root, use_cache=True) for _ in range(3))
        graph_cold = min(plan_time(graph_root, use_cache=False) for _ in range(3))
        hook = hook_time()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    best_floor, best_cold, best_warm = min(floors), min(colds), min(warms)
    print(f"context: {args.files} files, {args.megabytes} MB (best of 3; warm best of 5)")
    print(f"{'measure':<42}{'seconds':>10}{'vs floor':>10}{'goal':>12}")
    rows = [
        ("floor: hashlib.file_digest loop", best_floor, "1.00", ""),
        ("compute_plan, cold (no digest cache)", best_cold, f"{best_cold / best_floor:.2f}", "≤ 1.30×"),
        ("compute_plan, warm (nothing changed)", best_warm, f"{best_warm / best_floor:.2f}", "≤ 0.200 s"),
        ("compute_plan, warm, 10-pattern .dockerignore", ignoring, f"{ignoring / best_floor:.2f}", ""),
        (f"plan, {args.images}-image graph, warm cache", graph_warm, "", ""),
        (f"plan, {args.images}-image graph, no cache", graph_cold, "", ""),
        ("pre-commit hook on this repository", hook, "", "< 0.300 s"),
    ]
    for label, seconds, ratio, goal in rows:
        print(f"{label:<42}{seconds:>10.3f}{ratio:>10}{goal:>12}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Local state that cannot lie: a damaged digest cache costs time only; a broken lock file is one line."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from image_repo import write_cascade

from imagecascade.core import hook
from imagecascade.core.plan import compute_plan
from imagecascade.core.run_lock import exclusive_cascade
from imagecascade.core.settings import load_settings
from imagecascade.errors import ConfigError

REPOSITORY = Path(__file__).resolve().parents[1]
HOUR_AGO = time.time() - 3600


def invoke(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "invoke", "--search-root", str(REPOSITORY), *args],
        cwd=root,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(root), "COLUMNS": "200", "CI": "true"},
        timeout=120,
    )


def cached_repo(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A repository whose files are old enough to be cached, its cache written, and its true hashes."""
    root = write_cascade(tmp_path / "repo")
    for path in (root / "images").rglob("*"):
        os.utime(path, (HOUR_AGO, HOUR_AGO))
    truth = {image.name: image.hash for image in compute_plan(load_settings(root), use_cache=False).images}
    compute_plan(load_settings(root))  # writes the cache
    assert (root / ".cache/imagecascade/digests.json").exists()
    return root, truth


def _edit_one_digest(text: bytes) -> bytes:
    header, _, body = text.partition(b"\n")
    entries = json.loads(body)
    path = next(key for key in entries if key.endswith("a.txt"))
    entries[path] = entries[path][:-64] + hashlib.sha256(b"something else").hexdigest()
    return header + b"\n" + json.dumps(entries, separators=(",", ":")).encode()


def _wrong_types(text: bytes) -> bytes:
    _header, _, body = text.partition(b"\n")
    entries = {key: 7 for key in json.loads(body)}
    new_body = json.dumps(entries).encode()
    return (
        json.dumps({"format": 3, "sha256": hashlib.sha256(new_body).hexdigest()}).encode() + b"\n" + new_body
    )


DAMAGE: list[tuple[str, Callable[[bytes], bytes], str]] = [
    ("edited digest", _edit_one_digest, "checksum does not match"),
    ("wrong types under a valid checksum", _wrong_types, "wrong shape"),
    ("entries a list", lambda text: text.partition(b"\n")[0] + b"\n[1, 2]", "checksum"),
    ("not JSON", lambda text: b"\x00\xffgarbage", "not a digest cache"),
    ("truncated", lambda text: text[: len(text) // 2], "checksum"),
    ("merge conflict", lambda text: b"<<<<<<< HEAD\n" + text + b"\n=======\n{}\n>>>>>>> b\n", "not a digest"),
]


@pytest.mark.parametrize(("case", "damage", "warning"), DAMAGE, ids=[case for case, _, _ in DAMAGE])
def test_a_damaged_digest_cache_is_discarded_with_one_warning_and_never_gives_a_wrong_hash(
    tmp_path: Path, case: str, damage: Callable[[bytes], bytes], warning: str
) -> None:
    root, truth = cached_repo(tmp_path)
    cache = root / ".cache/imagecascade/digests.json"
    cache.write_bytes(damage(cache.read_bytes()))
    plan = compute_plan(load_settings(root))
    assert {image.name: image.hash for image in plan.images} == truth
    [line] = plan.warnings
    assert line.startswith(f"{cache}: ") and warning in line and "hashed again" in line
    again = compute_plan(load_settings(root))  # the damaged file was replaced
    assert again.warnings == () and {image.name: image.hash for image in again.images} == truth


def test_a_damaged_cache_through_the_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, _truth = cached_repo(tmp_path)
    assert invoke(root, "hashes", "--write").returncode == 0
    cache = root / ".cache/imagecascade/digests.json"
    for command in (("hashes",), ("plan", "--offline"), ("graph",)):
        cache.write_bytes(_edit_one_digest(cache.read_bytes()))
        done = invoke(root, *command)
        assert done.returncode == 0, (command, done.stderr)
        assert done.stderr.count("warning:") == 1 and "Traceback" not in done.stderr, command
    cache.write_bytes(_wrong_types(cache.read_bytes()))
    assert hook.main(["--root", str(root)]) == 0
    assert capsys.readouterr().err.count("warning:") == 1


def _lock_with(root: Path, change: Callable[[dict[str, object]], None]) -> None:
    lock = root / "images.lock.json"
    document = json.loads(lock.read_text())
    change(document["images"]["a1"])
    lock.write_text(json.dumps(document, indent=2))


def _conflict(lock: Path) -> None:
    """What git leaves after two branches changed the same image's hash."""
    lines = lock.read_text().splitlines()
    at = next(index for index, line in enumerate(lines) if '"hash":' in line)
    ours, theirs = lines[at], lines[at].replace('"hash": "', '"hash": "0')
    lines[at : at + 1] = ["<<<<<<< HEAD", ours, "=======", theirs, ">>>>>>> feature"]
    lock.write_text("\n".join(lines) + "\n")


BROKEN_LOCKS: list[tuple[str, Callable[[Path], None], str]] = [
    (
        "merge conflict",
        lambda root: _conflict(root / "images.lock.json"),
        r":\d+: merge-conflict marker '<<<<<<<'",
    ),
    (
        "invalid JSON",
        lambda root: (root / "images.lock.json").write_text('{"format": 1, "images": {'),
        r":1:\d+: invalid JSON",
    ),
    ("not UTF-8", lambda root: (root / "images.lock.json").write_bytes(b"\xff\xfe{}"), "not UTF-8 text"),
    (
        "images a list",
        lambda root: (root / "images.lock.json").write_text('{"format": 1, "images": []}'),
        "`images` must be an object",
    ),
    (
        "hash a number",
        lambda root: _lock_with(root, lambda entry: entry.update(hash=7)),
        "images.a1: `hash` must be 64",
    ),
    (
        "files a list",
        lambda root: _lock_with(root, lambda entry: entry.update(files=[])),
        "`files` must map names to strings",
    ),
    (
        "build arg a number",
        lambda root: _lock_with(root, lambda entry: entry.update(build_args={"X": 1})),
        "`build_args` must map",
    ),
    (
        "file entry",
        lambda root: _lock_with(root, lambda entry: entry.update(files={"x": ""})),
        "files.x: '' is not",
    ),
    (
        "parent a list",
        lambda root: _lock_with(root, lambda entry: entry.update(parent=["a"])),
        "`parent` must be a string or null",
    ),
    (
        "missing field",
        lambda root: _lock_with(root, lambda entry: entry.pop("platform")),
        "`platform` is missing",
    ),
]


@pytest.mark.parametrize(
    ("case", "breaking", "problem"), BROKEN_LOCKS, ids=[case for case, _, _ in BROKEN_LOCKS]
)
def test_a_broken_lock_is_one_line_and_hashes_write_repairs_it(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    case: str,
    breaking: Callable[[Path], None],
    problem: str,
) -> None:
    root = write_cascade(tmp_path / "repo")
    assert hook.write_hashes(root, io.StringIO()) == 0
    good = (root / "images.lock.json").read_text()
    breaking(root)
    with pytest.raises(ConfigError, match=problem):
        compute_plan(load_settings(root))
    assert hook.main(["--root", str(root)]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: {root / 'images.lock.json'}") and "invoke hashes --write" in line
    assert hook.write_hashes(root, io.StringIO()) == 0
    assert "rewriting it from the images" in capsys.readouterr().err
    assert (root / "images.lock.json").read_text() == good


@pytest.mark.parametrize("case", ["merge conflict", "hash a number"])
def test_a_broken_lock_through_every_command(tmp_path: Path, case: str) -> None:
    root = write_cascade(tmp_path / "repo")
    assert invoke(root, "hashes", "--write").returncode == 0
    good = (root / "images.lock.json").read_text()
    dict((name, breaking) for name, breaking, _ in BROKEN_LOCKS)[case](root)
    for command in (
        ("hashes",),
        ("plan", "--offline"),
        ("graph",),
        ("cascade", "--dry-run"),
        ("build-a", "--dry-run"),
    ):
        done = invoke(root, *command)
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        [line] = done.stderr.strip().splitlines()
        assert line.startswith(f"error: {root / 'images.lock.json'}") and "invoke hashes --write" in line
    repaired = invoke(root, "hashes", "--write")
    assert repaired.returncode == 0 and "rewriting it from the images" in repaired.stderr
    assert (root / "images.lock.json").read_text() == good
    assert invoke(root, "hashes", "--check").returncode == 0


def test_a_second_cascade_waits_for_the_first(tmp_path: Path) -> None:
    """The lock is held by another process: the second is told so, waits, then runs."""
    cache = tmp_path / ".cache/imagecascade"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; from pathlib import Path\n"
            "from imagecascade.core.run_lock import exclusive_cascade\n"
            f"with exclusive_cascade(Path({str(cache)!r}), print):\n"
            "    print('held', flush=True); time.sleep(1.5)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        told: list[str] = []
        started = time.monotonic()
        with exclusive_cascade(cache, told.append):
            waited = time.monotonic() - started
            assert holder.poll() is not None or waited > 0.5
    finally:
        holder.wait(timeout=10)
    assert len(told) == 1 and f"pid {holder.pid} " in told[0] and "waiting for it to finish" in told[0]
    assert str(cache / "cascade.lock") in told[0]
    assert waited > 0.5
    told.clear()
    with exclusive_cascade(cache, told.append):  # free now: no wait, no message
        pass
    assert told == []


def test_a_cascade_waiting_for_the_lock_stops_on_ctrl_c(tmp_path: Path) -> None:
    import signal

    cache = tmp_path / ".cache/imagecascade"
    main = threading.main_thread().ident
    assert main is not None
    with exclusive_cascade(cache, print):
        waiter = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from pathlib import Path; from imagecascade.core.run_lock import exclusive_cascade\n"
                "try:\n"
                f"    with exclusive_cascade(Path({str(cache)!r}), lambda m: print(m, flush=True)):\n"
                "        print('got it')\n"
                "except KeyboardInterrupt:\n"
                "    print('interrupted', flush=True)\n",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert waiter.stdout is not None and "waiting for it to finish" in waiter.stdout.readline()
        waiter.send_signal(signal.SIGINT)
        out, _ = waiter.communicate(timeout=10)
    assert out.strip() == "interrupted"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[registry]\npush_timeout = 0\n", "push_timeout must be a positive number"),
        ("[registry]\npush_timeout = -5\n", "push_timeout must be a positive number"),
        ('[registry]\npush_timeout = "300"\n', "registry.push_timeout must be a number"),
        ("[registry]\npush_timeout = true\n", "registry.push_timeout must be a number"),
        ("[registry]\npush_timeout = inf\n", "push_timeout must be a positive number"),
    ],
)
def test_push_timeout_setting(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "cascade.toml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_settings(tmp_path)
    (tmp_path / "cascade.toml").write_text("[registry]\npush_timeout = 2.5\n")
    assert load_settings(tmp_path).push_timeout == 2.5
    (tmp_path / "cascade.toml").write_text("")
    assert load_settings(tmp_path).push_timeout == 300

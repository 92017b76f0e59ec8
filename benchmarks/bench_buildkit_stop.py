"""How fast a BuildKit build stops: Ctrl-C and SIGTERM on `invoke cascade`, beside the bare CLI.

A one-image repository whose build runs `RUN sleep 60` (marked, so its process can be found in
/proc) is built with BuildKit through Debian's docker CLI 20.10 (`DOCKER_BUILDKIT=1`, the context
on stdin, the output on a pipe: exactly how `imagecascade.engines.buildkit` runs it). Once the
step runs, a signal is sent, and two times are measured from that moment:

- `exit`: until the process that got the signal has ended;
- `gone`: until the step's process has left the engine (no process with the marker in /proc).

Baseline, in the same run: the bare CLI given SIGINT (what imagecascade sent before), SIGTERM
and SIGKILL, `--repeat` times each. CLI 20.10 answers SIGINT and SIGTERM alike, by asking the
engine to cancel the build by its id, which Engine 20.10 loses about half the time for a context
sent on stdin (see `imagecascade.engines.buildkit._run`); a stop that has not ended after
`--give-up` seconds counts as ignored (then the CLI is killed). Then `invoke cascade --builder
buildkit` given Ctrl-C (SIGINT to its process group, as a terminal sends it) and SIGTERM (CI
cancellation). Goal: every run ends, and the step's process is gone, within 5 s. `--tasks-root`
(with PYTHONPATH pointing at the same checkout) measures another version of imagecascade.

Needs a Docker Engine, /usr/bin/docker (CLI 20.10) and the offline base image (made with
mmdebstrap when missing). Only this benchmark's images are touched. Run on demand:
`python benchmarks/bench_buildkit_stop.py [--repeat N] [--give-up S] [--tasks-root PATH]`.
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import uuid
from pathlib import Path

from bench_cascade import BASE_IMAGE, MMDEBSTRAP  # the same offline base image

ROOT = Path(__file__).resolve().parent.parent
CLI = "/usr/bin/docker"


def ensure_base() -> None:
    if subprocess.run(["docker", "image", "inspect", BASE_IMAGE], capture_output=True).returncode != 0:
        subprocess.run(["bash", "-c", MMDEBSTRAP.format(name=BASE_IMAGE)], check=True)


def step_processes(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                command = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in command and b"docker" not in command and b"invoke" not in command:
                found.append(int(entry))
    return found


def dockerfile(marker: str) -> str:
    # `sleep` first: the shell then stays the step's process, its command line holding the marker.
    return f"ARG BASE_IMAGE\nFROM ${{BASE_IMAGE}}\nRUN sleep 60 && echo {marker}\n"


def wait_for_step(marker: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        if step_processes(marker):
            return
        time.sleep(0.05)
    raise SystemExit(f"the step of {marker} never started")


def timed_stop(
    process: subprocess.Popen[str], marker: str, send: signal.Signals, group: bool, give_up: float
) -> str:
    started = time.monotonic()
    (os.killpg if group else os.kill)(process.pid, send)
    try:
        process.wait(timeout=give_up)
        exited = f"{time.monotonic() - started:5.2f} s"
    except subprocess.TimeoutExpired:
        exited = f">{give_up:g} s (ignored; killed)"
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    while step_processes(marker) and time.monotonic() - started < 90:
        time.sleep(0.05)
    gone = time.monotonic() - started
    return f"exit {exited:>22}   gone {gone:5.2f} s"


def bare_cli(send: signal.Signals, give_up: float) -> str:
    marker = f"imagecascade-bench-stop-{uuid.uuid4().hex[:10]}"
    data = dockerfile(marker).encode()
    with tempfile.TemporaryFile() as context:
        with tarfile.open(fileobj=context, mode="w") as archive:
            member = tarfile.TarInfo("Dockerfile")
            member.size = len(data)
            archive.addfile(member, io.BytesIO(data))
        context.seek(0)
        command = [CLI, "build", "--progress", "plain", "--network", "host"]
        process = subprocess.Popen(
            [*command, "--build-arg", f"BASE_IMAGE={BASE_IMAGE}", "-"],
            stdin=context,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "DOCKER_BUILDKIT": "1"},
            start_new_session=True,
        )
        assert process.stdout is not None
        drain = threading.Thread(
            target=process.stdout.read, daemon=True
        )  # a pipe, read as imagecascade reads it
        drain.start()
        wait_for_step(marker, time.monotonic() + 120)
        return timed_stop(process, marker, send, group=True, give_up=give_up)


def invoke_cascade(send: signal.Signals, tasks_root: Path, give_up: float) -> str:
    marker = f"imagecascade-bench-stop-{uuid.uuid4().hex[:10]}"
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "cascade.toml").write_text("")
        image = root / "images" / marker
        image.mkdir(parents=True)
        (image / "image.toml").write_text(f'base = "{BASE_IMAGE}"\n')
        (image / "Dockerfile").write_text(dockerfile(marker))
        subprocess.run(["git", "init", "-q"], cwd=root, check=True)
        binary = Path(sys.executable).parent / "invoke"
        process = subprocess.Popen(
            [str(binary), "--search-root", str(tasks_root), "cascade", "--builder", "buildkit"],
            cwd=root,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "CI": "true", "IMAGECASCADE_DOCKER_CLI": CLI},
            start_new_session=True,  # its own group: Ctrl-C reaches the group, as from a terminal
        )
        wait_for_step(marker, time.monotonic() + 120)
        time.sleep(0.5)
        result = timed_stop(process, marker, send, group=send == signal.SIGINT, give_up=give_up)
        tags = subprocess.run(
            ["docker", "images", "--format", "{{.Repository}}:{{.Tag}}", marker],
            capture_output=True,
            text=True,
        ).stdout.split()
        for tag in tags:
            subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)
        return result + (f"   tagged: {' '.join(tags)}" if tags else "   nothing tagged")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--give-up", type=float, default=10.0, help="seconds before a stop counts as ignored")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each stop (the CLI's cancel is racy)")
    parser.add_argument("--tasks-root", type=Path, default=ROOT, help="the imagecascade checkout to measure")
    options = parser.parse_args()
    ensure_base()
    print("baseline: the bare docker CLI 20.10 (DOCKER_BUILDKIT=1, context on stdin, output on a pipe)")
    for send in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        for _ in range(options.repeat):
            print(f"  {send.name:8} {bare_cli(send, options.give_up)}", flush=True)
    print(f"invoke cascade --builder buildkit ({options.tasks_root})")
    for send, shown in ((signal.SIGINT, "Ctrl-C"), (signal.SIGTERM, "SIGTERM")):
        for _ in range(options.repeat):
            print(f"  {shown:8} {invoke_cascade(send, options.tasks_root, options.give_up)}", flush=True)


if __name__ == "__main__":
    main()

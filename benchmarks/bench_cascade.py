"""Cascade benchmarks on the test cascade, each printed next to its baseline from the same run.

1. A no-op `invoke cascade` (everything present) against a loop of plain `docker build` calls on
   the same, fully cached images. Goal: the no-op at most 1.5 s, and faster than the loop.
2. Two independent lineages whose builds take several seconds each, built with `--jobs 2`
   against `--jobs 1`. Goal: at most 0.65 times the sequential wall time.

Needs a Docker Engine, `docker-registry`, and mmdebstrap (for the base image, cached under a
local-only name). Run on demand: `python benchmarks/bench_cascade.py` (not collected by pytest).
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASE_IMAGE = "imagecascade-test/base:bookworm"
MMDEBSTRAP = (
    "set -o pipefail; mmdebstrap --quiet --variant=extract --include=python3,busybox-static "
    "--extract-hook='chroot \"$1\" /bin/busybox --install -s' bookworm - "
    "| docker import -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - "
    + BASE_IMAGE
)
CHAIN_DOCKERFILE = "ARG BASE_IMAGE\nFROM ${{BASE_IMAGE}}\nCOPY {name}.txt /opt/{name}.txt\n"
# The image's name in a step keeps the lineages apart: identical steps would be cache hits.
SLOW_DOCKERFILE = (
    'ARG BASE_IMAGE\nFROM ${{BASE_IMAGE}}\nARG RUN_ID\nRUN echo "{name} $RUN_ID" && sleep 3\nRUN sleep 3\n'
)


def sh(*command: str, **kwargs: object) -> str:
    done = subprocess.run(command, check=True, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    return str(done.stdout).strip()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_registry(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    address = f"127.0.0.1:{free_port()}"
    config = folder / "registry.yml"
    config.write_text(
        "version: 0.1\nlog: {level: error, accesslog: {disabled: true}}\n"
        f"storage:\n  filesystem: {{rootdirectory: {folder / 'data'}}}\n  delete: {{enabled: true}}\n"
        f"http: {{addr: {address}}}\n"
    )
    process = subprocess.Popen(["docker-registry", "serve", str(config)], stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://{address}/v2/", timeout=1).close()
            return process, address
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit(f"docker-registry did not start on {address}")


def push(source: str, reference: str) -> str:
    sh("docker", "tag", source, reference)
    sh("docker", "push", reference)
    digests = sh(
        "docker", "image", "inspect", "--format", "{{range .RepoDigests}}{{println .}}{{end}}", reference
    )
    repository = reference.rsplit(":", 1)[0]
    return next(line.split("@", 1)[1] for line in digests.splitlines() if line.startswith(repository + "@"))


def write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def make_repo(root: Path, registry: str, base: str, slow: bool) -> None:
    write(root, "cascade.toml", f'[registry]\nurl = "{registry}"\n')
    if slow:
        # Two lineages of two images each; every image sleeps 6 s.
        for lineage in ("p", "q"):
            write(
                root, f"images/{lineage}1/image.toml", f'base = "{base}"\nbuild_args = {{ RUN_ID = "x" }}\n'
            )
            write(
                root,
                f"images/{lineage}2/image.toml",
                f'parent = "{lineage}1"\nbuild_args = {{ RUN_ID = "x" }}\n',
            )
            for name in (f"{lineage}1", f"{lineage}2"):
                write(root, f"images/{name}/Dockerfile", SLOW_DOCKERFILE.format(name=name))
        return
    declarations = {
        "root": f'base = "{base}"\n',
        "mid": 'parent = "root"\n',
        "leaf": 'parent = "mid"\n',
        "other": f'base = "{base}"\n',
    }
    for name, declaration in declarations.items():
        write(root, f"images/{name}/image.toml", declaration)
        write(root, f"images/{name}/Dockerfile", CHAIN_DOCKERFILE.format(name=name))
        write(root, f"images/{name}/{name}.txt", f"{name}\n")


def bust_cache(root: Path) -> None:
    run_id = uuid.uuid4().hex
    for declaration in root.glob("images/*/image.toml"):
        text = declaration.read_text()
        start = text.index('RUN_ID = "') + len('RUN_ID = "')
        end = text.index('"', start)
        declaration.write_text(text[:start] + run_id + text[end:])


# As a user runs it: plain output, and bytecode caching on (some sandboxes switch it off).
ENVIRONMENT = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"} | {
    "CI": "true"
}


def invoke(root: Path, *args: str) -> float:
    binary = Path(sys.executable).parent / "invoke"
    started = time.perf_counter()
    subprocess.run(
        [str(binary), "--search-root", str(ROOT), *args],
        cwd=root,
        check=True,
        capture_output=True,
        env=ENVIRONMENT,
    )
    return time.perf_counter() - started


def docker_build_loop(root: Path, registry: str) -> Callable[[], float]:
    """Plain `docker build` of each image, in order, FROM the exact parent (classic builder)."""
    sys.path.insert(0, str(ROOT))
    from imagecascade.core.build_request import base_reference
    from imagecascade.core.plan import compute_plan
    from imagecascade.core.settings import load_settings

    plan = compute_plan(load_settings(root))
    commands = []
    for image in plan.images:
        commands.append(
            [
                "docker", "build", "--quiet", "--network", "host",
                "--build-arg", f"BASE_IMAGE={base_reference(plan, image)}",
                "--file", str(image.spec.dockerfile), "--tag", f"{registry}/plain-{image.name}:bench",
                str(image.spec.context),
            ]
        )  # fmt: skip

    def loop() -> float:
        started = time.perf_counter()
        for command in commands:
            subprocess.run(
                command, check=True, capture_output=True, env={**os.environ, "DOCKER_BUILDKIT": "0"}
            )
        return time.perf_counter() - started

    return loop


def library_noop(root: Path) -> float:
    """The no-op through the library: plan, ask the registry, decide (no interpreter start-up)."""
    sys.path.insert(0, str(ROOT))
    from imagecascade.core.cascade import run_cascade
    from imagecascade.core.decisions import CascadeOptions
    from imagecascade.core.plan import compute_plan
    from imagecascade.core.settings import load_settings
    from imagecascade.engines.local_backend import LocalBackend
    from imagecascade.engines.store import open_store

    started = time.perf_counter()
    plan = compute_plan(load_settings(root))
    result = run_cascade(plan, open_store(plan.settings.registry), LocalBackend(), CascadeOptions())
    assert result.ok and not result.names("built")
    return time.perf_counter() - started


def median_of(runs: int, measure: Callable[[], float]) -> tuple[float, list[float]]:
    times = [measure() for _ in range(runs)]
    return statistics.median(times), times


def main() -> int:
    for tool in ("docker", "docker-registry"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing: run scripts/provision")
    if subprocess.run(["docker", "image", "inspect", BASE_IMAGE], capture_output=True).returncode != 0:
        print(f"making {BASE_IMAGE} with mmdebstrap ...", flush=True)
        subprocess.run(["bash", "-c", MMDEBSTRAP], check=True, capture_output=True)
    work = Path(tempfile.mkdtemp(prefix="imagecascade-bench-"))
    registry_process, address = start_registry(work)
    namespace = f"{address}/bench"
    try:
        base = f"{namespace}/upstream:bookworm"
        base = f"{base}@{push(BASE_IMAGE, base)}"

        chain = work / "chain"
        make_repo(chain, namespace, base, slow=False)
        invoke(chain, "cascade")  # build everything once
        invoke(chain, "cascade")  # warm the digest cache and the OS
        noop, noop_runs = median_of(5, lambda: invoke(chain, "cascade"))
        library, library_runs = median_of(5, lambda: library_noop(chain))
        loop = docker_build_loop(chain, namespace)
        loop()  # first pass fills the classic builder's cache for these exact commands
        plain, plain_runs = median_of(5, loop)

        slow = work / "slow"
        make_repo(slow, namespace, base, slow=True)
        bust_cache(slow)
        sequential = invoke(slow, "cascade", "--jobs", "1")
        bust_cache(slow)
        parallel = invoke(slow, "cascade", "--jobs", "2")

        def runs(times: list[float]) -> str:
            return ", ".join(f"{t:.2f}" for t in times)

        noop_goal = "met" if noop <= 1.5 and noop < plain else "MISSED"
        print()
        print("no-op cascade vs plain docker build loop (4 images, all cached; median of 5)")
        print(f"  invoke cascade (no-op)   {noop:6.2f} s   runs {runs(noop_runs)}")
        print(f"  the same, in-process     {library:6.2f} s   runs {runs(library_runs)}")
        print(f"  docker build loop        {plain:6.2f} s   runs {runs(plain_runs)}")
        print(f"  goal: no-op <= 1.5 s and faster than the loop: {noop_goal}")
        print()
        print("two independent lineages, 2 images each, RUN sleep 3 x2 per image (cache busted per run)")
        print(f"  invoke cascade --jobs 1  {sequential:6.2f} s")
        print(f"  invoke cascade --jobs 2  {parallel:6.2f} s   ratio {parallel / sequential:.2f}")
        print(f"  goal: <= 0.65 x sequential: {'met' if parallel <= 0.65 * sequential else 'MISSED'}")
    finally:
        registry_process.terminate()
        registry_process.wait()
        references = sh("docker", "images", "--format", "{{.Repository}}:{{.Tag}}", f"{address}/*/*")
        for reference in references.split():
            subprocess.run(["docker", "rmi", "-f", reference], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

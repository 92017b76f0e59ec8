"""Multi-input images: a runtime-only change rebuilds without compiling, even on a fresh engine.

A toy pair like arr-pytorch-wheels and arr-pytorch-base: `compile` runs a slow step (`RUN sleep
60` by default) that writes an artifact and keeps only the artifact on a scratch final stage;
`runtime` takes `compile` as an input (`[inputs] COMPILED = "compile"`) and copies the artifact
with `COPY --from`. Both are pushed to a registry (default: the one on 127.0.0.1:5000).

1. Full build: both images, starting from an engine that holds none of this benchmark's images.
2. Change only the runtime image, then remove every local image of this benchmark and the
   layers the builder cached for them (as on a fresh Cloud Build worker, which keeps nothing),
   and rebuild through `invoke cascade`: `compile` is found in the registry and pulled as an
   input, nothing is compiled.

Goal: the rebuild takes at most 10% of the full build and runs no compile step (the compile
image's digest in the registry is unchanged, and its slow step is not in the rebuild's log).

Only this benchmark's images and the layers built for them are removed: the engine is shared.
Needs a Docker Engine, a registry and mmdebstrap (for the base image, cached under a local-only
name). Run on demand: `python benchmarks/bench_inputs.py [--compile-seconds N] [--registry HOST:PORT]`.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from bench_cascade import BASE_IMAGE, MMDEBSTRAP  # the same offline base image

ROOT = Path(__file__).resolve().parent.parent
COMPILE_DOCKERFILE = """\
ARG BASE_IMAGE
FROM ${BASE_IMAGE} AS compile
ARG COMPILE_SECONDS
COPY source.txt /src/source.txt
RUN echo "compiling for ${COMPILE_SECONDS} s" && sleep "${COMPILE_SECONDS}" \\
    && mkdir -p /out && sha256sum /src/source.txt > /out/artifact
FROM scratch
COPY --from=compile /out/ /out/
"""
RUNTIME_DOCKERFILE = """\
ARG BASE_IMAGE
ARG COMPILED
FROM ${COMPILED} AS compiled
FROM ${BASE_IMAGE}
COPY --from=compiled /out/artifact /opt/artifact
COPY runtime.txt /opt/runtime.txt
RUN cat /opt/artifact /opt/runtime.txt
"""
ENVIRONMENT = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"} | {
    "CI": "true"
}


def sh(*command: str, stdin: bytes | None = None) -> str:
    done = subprocess.run(command, check=True, capture_output=True, input=stdin)
    return done.stdout.decode().strip()


def write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def own_base(namespace: str) -> str:
    """A base of this run's own: the test base's files plus one unique file, imported as a single
    layer no other image shares, pushed and pinned. Removing it locally really removes it."""
    if subprocess.run(["docker", "image", "inspect", BASE_IMAGE], capture_output=True).returncode != 0:
        print(f"making {BASE_IMAGE} with mmdebstrap ...", flush=True)
        subprocess.run(["bash", "-c", MMDEBSTRAP], check=True, capture_output=True)
    container = sh("docker", "create", BASE_IMAGE, "true")
    try:
        exported = subprocess.run(["docker", "export", container], check=True, capture_output=True).stdout
    finally:
        sh("docker", "rm", container)
    buffer = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(exported)) as source,
        tarfile.open(fileobj=buffer, mode="w") as target,
    ):
        for member in source.getmembers():
            target.addfile(member, source.extractfile(member) if member.isfile() else None)
        marker = f"{namespace}\n".encode()
        info = tarfile.TarInfo("etc/bench-inputs-id")
        info.size = len(marker)
        target.addfile(info, io.BytesIO(marker))
    reference = f"{namespace}/upstream:bookworm"
    path = "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    sh("docker", "import", "-c", path, "-", reference, stdin=buffer.getvalue())
    sh("docker", "push", reference)
    digests = sh("docker", "image", "inspect", "--format", "{{json .RepoDigests}}", reference)
    digest = next(item.split("@", 1)[1] for item in json.loads(digests) if item.startswith(reference[:-9]))
    return f"{reference}@{digest}"


def make_repo(root: Path, namespace: str, base: str, seconds: int) -> None:
    write(root, "cascade.toml", f'[registry]\nurl = "{namespace}"\n')
    write(root, ".gitignore", ".cache/\n")
    write(
        root, "images/compile/image.toml", f'base = "{base}"\n[build_args]\nCOMPILE_SECONDS = "{seconds}"\n'
    )
    write(root, "images/compile/Dockerfile", COMPILE_DOCKERFILE)
    write(root, "images/compile/source.txt", "the sources\n")
    write(root, "images/runtime/image.toml", f'base = "{base}"\n[inputs]\nCOMPILED = "compile"\n')
    write(root, "images/runtime/Dockerfile", RUNTIME_DOCKERFILE)
    write(root, "images/runtime/runtime.txt", "runtime 1\n")


def invoke(root: Path, *args: str) -> tuple[float, str]:
    binary = Path(sys.executable).parent / "invoke"
    started = time.perf_counter()
    done = subprocess.run(
        [str(binary), "--search-root", str(ROOT), *args],
        cwd=root,
        capture_output=True,
        text=True,
        env=ENVIRONMENT,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"invoke {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return elapsed, done.stdout


def local_images(namespace: str) -> dict[str, list[str]]:
    """Image id -> its references, for every local image under `namespace`."""
    found: dict[str, list[str]] = {}
    listing = sh("docker", "images", "--no-trunc", "--format", "{{.ID}} {{.Repository}}:{{.Tag}}")
    for line in listing.splitlines():
        image_id, reference = line.split(" ", 1)
        if reference.startswith(namespace + "/"):
            found.setdefault(image_id, []).append(reference)
    return found


def parents() -> dict[str, str]:
    """Image id -> parent image id ("" for none), for every image on the engine, in one listing
    (`GET /images/json?all=1` carries each ParentId: nothing to inspect while others delete)."""
    import docker

    client = docker.from_env()
    try:
        return {item["Id"]: item.get("ParentId") or "" for item in client.api.images(all=True)}
    finally:
        client.close()


def ours(namespace: str, remembered: set[str]) -> list[str]:
    """This benchmark's images and every image the builder cached on top of them, children first.

    The classic builder's cache is made of images: one per step, each the parent of the next, in
    every stage (also stages like the compile stage, which the final image does not derive from).
    """
    graph = parents()
    roots = {image_id for image_id in [*local_images(namespace), *remembered] if image_id in graph}
    for image_id in list(roots):
        listing = sh("docker", "history", "--no-trunc", "--quiet", image_id)
        roots.update(line for line in listing.splitlines() if line in graph)

    def depth_and_mine(image_id: str) -> tuple[int, bool]:
        depth, current = 0, image_id
        while current:
            if current in roots:
                return depth, True
            current, depth = graph.get(current, ""), depth + 1
        return depth, False

    found = [(depth_and_mine(image_id), image_id) for image_id in graph]
    return [image_id for (_, mine), image_id in sorted(found, key=lambda item: -item[0][0]) if mine]


def fresh_engine(namespace: str, remembered: set[str]) -> set[str]:
    """Remove this benchmark's images and the step images cached for them; return what was removed."""
    removing = ours(namespace, remembered)
    for references in local_images(namespace).values():
        subprocess.run(["docker", "rmi", *references], capture_output=True)
    for image_id in removing:  # children first
        inspected = subprocess.run(
            ["docker", "image", "inspect", "--format", "{{json .RepoTags}}", image_id],
            capture_output=True,
            text=True,
        )
        tags = json.loads(inspected.stdout) if inspected.returncode == 0 else []
        if any(not tag.startswith(namespace + "/") for tag in tags or []):
            continue  # tagged outside this benchmark: never ours to remove
        subprocess.run(["docker", "rmi", image_id], capture_output=True)
    remaining = parents()
    left = [image_id for image_id in removing if image_id in remaining]
    if left or local_images(namespace):
        raise SystemExit(f"could not remove every image of this benchmark: {left or local_images(namespace)}")
    return remembered | set(removing)


def registry_digest(registry: str, repository: str, tag: str) -> str:
    request = urllib.request.Request(
        f"http://{registry}/v2/{repository}/manifests/{tag}",
        method="HEAD",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return str(answer.headers["Docker-Content-Digest"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compile-seconds", type=int, default=60, help="how long the compile step sleeps")
    parser.add_argument("--registry", default="127.0.0.1:5000", help="a registry on loopback (HOST:PORT)")
    args = parser.parse_args(argv)
    repository = f"bench-inputs-{uuid.uuid4().hex[:10]}"
    namespace = f"{args.registry}/{repository}"
    work = Path(tempfile.mkdtemp(prefix="imagecascade-bench-inputs-"))
    removed: set[str] = set()
    try:
        base = own_base(namespace)
        repo = work / "repo"
        make_repo(repo, namespace, base, args.compile_seconds)
        removed |= fresh_engine(namespace, set())

        full, _ = invoke(repo, "cascade")
        plan = json.loads(invoke(repo, "plan", "--json")[1])
        compile_tag = next(item["tag"] for item in plan["images"] if item["name"] == "compile")
        compile_digest = registry_digest(args.registry, f"{repository}/compile", compile_tag)

        write(repo, "images/runtime/runtime.txt", "runtime 2\n")  # only the runtime image changes
        removed |= fresh_engine(namespace, removed)
        _, dry_run = invoke(repo, "cascade", "--dry-run")
        rebuild, log = invoke(repo, "cascade")
        again = registry_digest(args.registry, f"{repository}/compile", compile_tag)
        compile_steps = log.count("compiling for")
        ratio = rebuild / full
        met = ratio <= 0.10 and compile_steps == 0 and again == compile_digest
        print()
        print(
            f"toy compile/runtime pair: compile sleeps {args.compile_seconds} s and keeps an artifact on "
            f"scratch; runtime takes it as an input (registry {args.registry}, nothing of it on the engine)"
        )
        print(f"  full build, both images                       {full:7.2f} s")
        print(
            f"  rebuild after a runtime-only change           {rebuild:7.2f} s   ratio {ratio:.3f}   "
            f"compile steps run: {compile_steps}"
        )
        same = "the same" if again == compile_digest else again
        print(f"  compile in the registry: {compile_digest} before, {same} after")
        rows = [[cell.strip() for cell in line.split("│")[1:3]] for line in dry_run.splitlines()]
        said = ", ".join(
            f"{name} {action}" for name, action in (row for row in rows if len(row) == 2) if name
        )
        print(f"  the dry run before the rebuild said: {said}")
        print(f"  goal: rebuild <= 10% of the full build, no compile step: {'met' if met else 'MISSED'}")
    finally:
        try:
            fresh_engine(namespace, removed)
        except SystemExit as error:
            print(error, file=sys.stderr)
        subprocess.run(["rm", "-rf", str(work)], check=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

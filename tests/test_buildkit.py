"""The BuildKit builder on the real engine, driven by Debian's docker CLI 20.10 (`DOCKER_BUILDKIT=1`).

Secrets, cache mounts and `COPY --chmod` through `invoke cascade --builder buildkit`; the secret
searched for in everything the run produced; refusals compared with what the engine's own
Dockerfile frontend does; `auto`; failure, cancel and SIGTERM; labels and pushes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import unavailable

from imagecascade.core.backend import BuildError, BuildEvent
from imagecascade.core.build_request import Provenance, build_request, now_rfc3339
from imagecascade.core.plan import Plan, compute_plan
from imagecascade.core.secrets import MASK, parse_secret_flags
from imagecascade.core.settings import load_settings
from imagecascade.engines.buildkit import BuildKitBackend, choose_local_builder
from imagecascade.engines.docker_cli import DockerCli, probe
from imagecascade.engines.local_backend import LocalBackend
from imagecascade.engines.store import EngineStore
from imagecascade.errors import ConfigError
from tests.image_repo import write_file

pytestmark = pytest.mark.engine

BUILDKIT_CLI = "/usr/bin/docker"  # Debian's docker.io: CLI 20.10 with the built-in BuildKit client
NEWER_CLI = "/usr/local/bin/docker"  # CLI 28 without buildx: the classic builder only
TASKS_ROOT = Path(__file__).resolve().parent.parent
HEAD = "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n"


@pytest.fixture(scope="module")
def cli(engine: Any) -> DockerCli:
    if not Path(BUILDKIT_CLI).exists():
        unavailable(f"{BUILDKIT_CLI} is missing (scripts/provision installs Debian's docker.io)")
    found = probe(BUILDKIT_CLI, os.environ)
    assert found.driver == "builtin", found
    return found


class Names:
    """Unique image names for one test: `names("app")`."""

    def __init__(self) -> None:
        self.prefix = f"imagecascade-test-bk-{uuid.uuid4().hex[:8]}"

    def __call__(self, suffix: str) -> str:
        return f"{self.prefix}-{suffix}"


@pytest.fixture
def names(engine: Any) -> Iterator[Names]:
    """Every tag of the test's own names is removed afterwards."""
    chosen = Names()
    yield chosen
    # The low-level list: the engine is shared, and images.list() fails on one removed meanwhile.
    for image in engine.client.api.images():
        for tag in image.get("RepoTags") or []:
            if tag.startswith(chosen.prefix):
                engine.remove_image(tag, force=True)


def make_repo(root: Path, images: dict[str, tuple[str, str]], files: dict[str, str] | None = None) -> Path:
    """images: name -> (image.toml, Dockerfile body after the BASE_IMAGE wiring)."""
    write_file(root / "cascade.toml", "[build]\njobs = 2\n")
    write_file(root / ".gitignore", ".cache/\ncascade.local.toml\nreports/\n")
    for name, (toml, body) in images.items():
        write_file(root / "images" / name / "image.toml", toml)
        write_file(root / "images" / name / "Dockerfile", HEAD + body)
    for relative, text in (files or {}).items():
        write_file(root / relative, text)
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "init"]):
        subprocess.run(
            ["git", "-c", "user.email=t@example.invalid", "-c", "user.name=t", *args],
            cwd=root,
            check=True,
            capture_output=True,
        )
    return root


def invoke(root: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    binary = Path(sys.executable).parent / "invoke"
    command = [str(binary) if binary.exists() else "invoke", "--search-root", str(TASKS_ROOT), *args]
    environment = {**os.environ, "CI": "true", "IMAGECASCADE_DOCKER_CLI": BUILDKIT_CLI, **(env or {})}
    return subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=300, env=environment)


def files_containing(folder: Path, needle: bytes) -> list[str]:
    return [
        str(path)
        for path in folder.rglob("*")
        if path.is_file() and not path.is_symlink() and needle in path.read_bytes()
    ]


def test_cache_mount_chmod_and_secret_through_invoke_and_the_secret_is_nowhere(
    tmp_path: Path, engine: Any, base_image: str, cli: DockerCli, names: Names
) -> None:
    name = names("app")
    secret_value = f"s3cr3t-{uuid.uuid4().hex}"
    secret = tmp_path / "outside" / "token"
    write_file(secret, secret_value)
    body = (
        f"RUN echo {uuid.uuid4().hex} > /mark\n"
        "COPY --chmod=750 tool.sh /usr/local/bin/tool.sh\n"
        f"RUN --mount=type=cache,target=/var/cache/t,id={name} echo cached > /var/cache/t/x "
        "&& cp /var/cache/t/x /cache-seen\n"
        "RUN --mount=type=secret,id=token,required=true wc -c < /run/secrets/token > /token-length "
        '&& echo "the token is $(cat /run/secrets/token)"\n'
    )
    toml = f'base = "{base_image}"\nsecrets = ["token"]\n'
    root = make_repo(
        tmp_path / "repo", {name: (toml, body)}, {f"images/{name}/tool.sh": "#!/bin/sh\necho tool\n"}
    )
    done = invoke(root, "cascade", "--builder", "buildkit", "--secret", f"id=token,src={secret}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "builder: BuildKit" in done.stdout
    image = compute_plan(load_settings(root), use_cache=False).get(name)
    reference = f"{name}:{image.tag}"
    info = engine.inspect_image(reference)
    assert info is not None and info.labels["io.imagecascade.freshness-hash"] == image.hash
    probe_run = engine.client.containers.run(
        reference,
        [
            "sh",
            "-c",
            "stat -c %a /usr/local/bin/tool.sh; cat /cache-seen /token-length; ls /run/secrets || true",
        ],
        network_mode="none",
        remove=True,
    ).decode()
    assert probe_run.split() == ["750", "cached", str(len(secret_value))]
    # The value: in no layer, no history, no label, no lock or cache file, no output.
    needle = secret_value.encode()
    saved = subprocess.run(["docker", "save", reference], capture_output=True, check=True).stdout
    assert needle not in saved
    history = subprocess.run(
        ["docker", "history", "--no-trunc", reference], capture_output=True, check=True
    ).stdout
    assert needle not in history
    assert needle not in json.dumps(engine.client.images.get(reference).attrs).encode()
    assert secret_value not in done.stdout + done.stderr
    assert files_containing(root, needle) == []
    # The complete build log is written as for the classic builder, the printed value masked.
    log = (root / "reports" / "build-logs" / f"{name}-{image.tag}.log").read_text()
    assert "Step 5/5 : RUN --mount=type=secret,id=token,required=true" in log
    assert f"the token is {MASK}" in log
    # A rotated secret changes no hash: nothing is rebuilt.
    write_file(secret, f"rotated-{uuid.uuid4().hex}")
    again = invoke(root, "cascade", "--builder", "buildkit", "--secret", f"id=token,src={secret}")
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"{name}: present in the local engine" in again.stdout and "building" not in again.stdout
    assert compute_plan(load_settings(root), use_cache=False).get(name).hash == image.hash


def test_a_secret_printed_by_a_failing_step_is_masked_and_the_failure_names_the_step(
    tmp_path: Path, engine: Any, base_image: str, cli: DockerCli, names: Names
) -> None:
    name = names("fails")
    secret_value = f"masked-{uuid.uuid4().hex}"
    lines = " && ".join(f"echo line-{index}" for index in range(40))
    body = f"RUN --mount=type=secret,id=token {lines} && cat /run/secrets/token && echo && exit 7\n"
    root = make_repo(tmp_path / "repo", {name: (f'base = "{base_image}"\nsecrets = ["token"]\n', body)})
    settings = load_settings(root).with_overrides(
        secrets=parse_secret_flags(["id=token,env=IMAGECASCADE_TEST_TOKEN"], root)
    )
    plan = compute_plan(settings, use_cache=False)
    request = build_request(plan, plan.images[0], Provenance(revision="t", source=""), now_rfc3339())
    backend = BuildKitBackend(cli, engine, environ={**os.environ, "IMAGECASCADE_TEST_TOKEN": secret_value})
    events: list[BuildEvent] = []
    with pytest.raises(BuildError) as failure:
        backend.build(request, events.append, threading.Event())
    message = str(failure.value)
    assert message.startswith(f"{name}: step 2/2 (RUN --mount=type=secret,id=to")
    assert "failed: exited with code 7" in message and "\n" not in message
    tail = failure.value.log_tail
    assert "line-39" in tail and MASK in tail
    everything = message + "\n".join(tail) + "\n".join(event.message for event in events)
    assert secret_value not in everything
    assert [(event.step, event.steps) for event in events if event.kind == "step"] == [(1, 2), (2, 2)]
    assert all(engine.inspect_image(reference) is None for reference in request.references)


def test_a_required_secret_left_out_stops_only_that_image(
    tmp_path: Path, base_image: str, cli: DockerCli, names: Names, engine: Any
) -> None:
    needs, child, free = names("needs"), names("child"), names("free")
    images = {
        needs: (
            f'base = "{base_image}"\nsecrets = ["token"]\n',
            "RUN --mount=type=secret,id=token,required=true true\n",
        ),
        child: (f'parent = "{needs}"\n', "RUN true\n"),
        free: (f'base = "{base_image}"\n', f"RUN echo {uuid.uuid4().hex} > /free\n"),
    }
    root = make_repo(tmp_path / "repo", images)
    done = invoke(root, "cascade", "--builder", "buildkit")
    assert done.returncode == 2, done.stdout + done.stderr
    refused = [line for line in done.stdout.splitlines() if line.startswith(f"{needs}: cannot build")]
    assert refused == [
        f"{needs}: cannot build: required secret 'token' has no source; fix: pass --secret "
        'id=token,src=PATH (or id=token,env=VAR), or set token = "PATH" under [secrets] in cascade.local.toml'
    ]
    plan = compute_plan(load_settings(root), use_cache=False)
    store = EngineStore(engine)
    assert store.has(free, plan.get(free).tag)
    assert not store.has(needs, plan.get(needs).tag) and not store.has(child, plan.get(child).tag)
    assert f"{child}: blocked: parent {needs} cannot be built" in done.stdout
    assert "failed to solve" not in done.stdout + done.stderr
    # Given through the git-ignored local file, it builds.
    write_file(tmp_path / "token", "value")
    write_file(root / "cascade.local.toml", f'[secrets]\ntoken = "{tmp_path / "token"}"\n')
    done = invoke(root, "cascade", "--builder", "buildkit")
    assert done.returncode == 0, done.stdout + done.stderr
    assert store.has(child, plan.get(child).tag)


@pytest.mark.parametrize(
    ("body", "line", "feature"),
    [
        ("RUN echo ok\nRUN <<EOF\necho hi\nEOF\n", 4, "heredoc in RUN needs Dockerfile frontend 1.4"),
        ("COPY --link Dockerfile /d\n", 3, "COPY --link needs Dockerfile frontend 1.4"),
        ("RUN --network=none true\n", 3, "RUN --network needs Dockerfile frontend 1.3"),
    ],
)
def test_features_the_engine_frontend_does_not_know_are_refused_before_building(
    tmp_path: Path, base_image: str, cli: DockerCli, names: Names, body: str, line: int, feature: str
) -> None:
    name = names("new")
    root = make_repo(tmp_path / "repo", {name: (f'base = "{base_image}"\n', body)})
    done = invoke(root, "cascade", "--builder", "buildkit")
    assert done.returncode == 2, done.stdout + done.stderr
    dockerfile = root / "images" / name / "Dockerfile"
    refused = [text for text in done.stdout.splitlines() if text.startswith(f"{name}: cannot build: ")]
    expected = f"{name}: cannot build: {dockerfile}: line {line}: {feature} or newer"
    assert len(refused) == 1 and refused[0].startswith(expected), done.stdout
    assert "Docker Engine 20.10" in refused[0]
    assert "building" not in done.stdout and "failed to solve" not in done.stdout + done.stderr


def test_a_syntax_directive_is_refused_and_the_classic_builder_refuses_buildkit_syntax(
    tmp_path: Path, base_image: str, cli: DockerCli, names: Names
) -> None:
    name = names("syntax")
    root = make_repo(tmp_path / "repo", {name: (f'base = "{base_image}"\n', "RUN true\n")})
    dockerfile = root / "images" / name / "Dockerfile"
    dockerfile.write_text("# syntax=docker/dockerfile:1.4\n" + dockerfile.read_text())
    done = invoke(root, "cascade", "--builder", "buildkit")
    assert done.returncode == 2, done.stdout + done.stderr
    expected = f"{name}: cannot build: {dockerfile}: line 1: `# syntax=docker/dockerfile:1.4` needs the"
    assert expected in done.stdout
    dockerfile.write_text(HEAD + "RUN --mount=type=cache,target=/c true\n")
    done = invoke(root, "cascade", "--builder", "classic")
    assert done.returncode == 2, done.stdout + done.stderr
    expected = f"{name}: cannot build: {dockerfile}: line 3: RUN --mount needs BuildKit, but the classic"
    assert expected in done.stdout


# Snippets around the edge of what Engine 20.10's built-in Dockerfile frontend (1.2) knows.
SNIPPETS = [
    "COPY --chmod=600 f.txt /f",
    "ADD --chmod=600 f.txt /f",
    "COPY --chown=1:1 f.txt /f",
    "RUN --mount=type=cache,target=/c,sharing=locked,id=x true",
    "RUN --mount=type=tmpfs,target=/t true",
    "RUN --mount=type=bind,source=f.txt,target=/f cat /f",
    "RUN --mount=type=secret,id=q true",
    "RUN --mount=type=tmpfs,target=/t,size=1000 true",
    "RUN --mount=type=secret,id=q,env=Q true",
    "RUN <<EOF\necho hi\nEOF",
    "COPY --link f.txt /f",
    "RUN --network=none true",
    "RUN --security=sandbox true",
    "ADD --checksum=sha256:" + "0" * 64 + " f.txt /f",
    "COPY --parents f.txt /x/",
    "COPY --exclude=*.md f.txt /x/",
]


def test_refusals_match_what_the_engines_frontend_accepts(
    tmp_path: Path, base_image: str, cli: DockerCli
) -> None:
    """Docker is the oracle: the engine's frontend rejects exactly what is refused up front."""
    from imagecascade.core.buildkit_syntax import refusal
    from imagecascade.core.dockerfile import read_dockerfile

    support = cli.frontend()
    assert support.frontend == (1, 2)
    disagreements = []
    for snippet in SNIPPETS:
        folder = tmp_path / f"case-{SNIPPETS.index(snippet)}"
        write_file(folder / "f.txt", "f\n")
        write_file(folder / "Dockerfile", f"FROM {base_image}\n{snippet}\n")
        done = subprocess.run(
            [BUILDKIT_CLI, "build", "--network", "host", "--progress", "plain", "-q", str(folder)],
            capture_output=True,
            text=True,
            env={**os.environ, "DOCKER_BUILDKIT": "1"},
            timeout=120,
        )
        frontend_error = "failed to create LLB definition" in done.stderr
        if done.returncode != 0 and not frontend_error:
            pytest.fail(f"{snippet!r} failed for another reason: {done.stderr[-500:]}")
        if done.returncode == 0:
            subprocess.run(["docker", "rmi", "-f", done.stdout.strip()], capture_output=True)
        refused = refusal(read_dockerfile(folder / "Dockerfile"), support) is not None
        if refused != frontend_error:
            disagreements.append((snippet, refused, done.stderr[-300:]))
    assert disagreements == []


def test_auto_picks_buildkit_where_the_cli_can_drive_it(tmp_path: Path, cli: DockerCli) -> None:
    write_file(tmp_path / "cascade.toml", "")
    settings = load_settings(tmp_path)
    chosen = choose_local_builder(settings, {**os.environ, "IMAGECASCADE_DOCKER_CLI": BUILDKIT_CLI})
    assert isinstance(chosen, BuildKitBackend) and chosen.cli.path == BUILDKIT_CLI
    by_setting = choose_local_builder(settings.with_overrides(docker_cli=BUILDKIT_CLI), dict(os.environ))
    assert isinstance(by_setting, BuildKitBackend)
    assert type(choose_local_builder(settings.with_overrides(builder="classic"), {})) is LocalBackend
    if not Path(NEWER_CLI).exists():
        unavailable(f"{NEWER_CLI} (a docker CLI 23+ without buildx) is part of the machine image")
    newer = {**os.environ, "IMAGECASCADE_DOCKER_CLI": NEWER_CLI}
    assert probe(NEWER_CLI, newer).driver == "none"
    fallback = choose_local_builder(settings, newer)
    assert type(fallback) is LocalBackend and "only the classic builder" in fallback.description
    with pytest.raises(ConfigError, match=r"^--builder buildkit: docker CLI /usr/local/bin/docker 2\d"):
        choose_local_builder(settings.with_overrides(builder="buildkit"), newer)
    with pytest.raises(ConfigError, match="IMAGECASCADE_DOCKER_CLI: docker CLI '/nowhere/docker' does not"):
        choose_local_builder(settings, {**os.environ, "IMAGECASCADE_DOCKER_CLI": "/nowhere/docker"})


def test_auto_picks_buildx_when_the_plugin_answers(tmp_path: Path) -> None:
    """A CLI with a buildx plugin (found through DOCKER_CONFIG, as the CLI finds plugins) drives buildx."""
    if not Path(NEWER_CLI).exists():
        unavailable(f"{NEWER_CLI} (a docker CLI 23+ without buildx) is part of the machine image")
    plugins = tmp_path / "config" / "cli-plugins"
    write_file(
        plugins / "docker-buildx",
        "#!/bin/sh\n"
        'case "$1" in\n'
        "  docker-cli-plugin-metadata)\n"
        '    echo \'{"SchemaVersion":"0.1.0","Vendor":"test","Version":"v0.12.1"}\';;\n'
        "esac\n"
        'case "$2" in\n'
        "  version) echo 'github.com/docker/buildx v0.12.1 test';;\n"
        "  inspect) printf 'Name: default\\nDriver: docker\\nBuildKit version: v0.12.5\\n';;\n"
        "  build) echo '--progress string  Set type of progress output (auto, plain, tty, rawjson)';;\n"
        "esac\n",
    )
    (plugins / "docker-buildx").chmod(0o755)
    environ = {**os.environ, "DOCKER_CONFIG": str(tmp_path / "config"), "IMAGECASCADE_DOCKER_CLI": NEWER_CLI}
    found = probe(NEWER_CLI, environ)
    assert (found.driver, found.buildkit_version, found.rawjson) == ("buildx", "v0.12.5", True)
    assert found.frontend().frontend == (1, 6)
    write_file(tmp_path / "repo" / "cascade.toml", "")
    chosen = choose_local_builder(load_settings(tmp_path / "repo"), environ)
    assert isinstance(chosen, BuildKitBackend)


def make_plan(root: Path, base_image: str, name: str, body: str, files: dict[str, str] | None = None) -> Plan:
    make_repo(root, {name: (f'base = "{base_image}"\n', body)}, files)
    return compute_plan(load_settings(root), use_cache=False)


def step_processes(marker: str) -> list[int]:
    """The processes of a build step `RUN sleep 60 && echo <marker>`: the shell that runs it (its
    command line holds the marker) and its children (the sleep)."""
    shells = [pid for pid in _pids() if marker in _cmdline(pid) and "docker" not in _cmdline(pid)]
    children = [pid for pid in _pids() if _parent(pid) in shells]
    return sorted(int(pid) for pid in {*shells, *children})


def wait_until_gone(pids: list[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        alive = [pid for pid in pids if Path(f"/proc/{pid}").exists() and _state(str(pid)) != "Z"]
        if not alive:
            return []
        time.sleep(0.1)
    return alive


def test_a_cancel_stops_the_build_and_its_step_within_seconds_and_leaves_no_tag(
    tmp_path: Path, engine: Any, base_image: str, cli: DockerCli, names: Names
) -> None:
    name = names("cancel")
    marker = uuid.uuid4().hex
    plan = make_plan(tmp_path / "repo", base_image, name, f"RUN sleep 60 && echo {marker}\n")
    request = build_request(plan, plan.images[0], Provenance(revision="t", source=""), now_rfc3339())
    cancelled = threading.Event()
    running: list[int] = []
    stopped_at: list[float] = []

    def cancel_once_the_step_runs() -> None:
        deadline = time.monotonic() + 120
        while not running and time.monotonic() < deadline:
            running.extend(step_processes(marker))
            time.sleep(0.1)
        time.sleep(0.5)
        stopped_at.append(time.monotonic())
        cancelled.set()

    watcher = threading.Thread(target=cancel_once_the_step_runs, daemon=True)
    watcher.start()
    with pytest.raises(BuildError, match="build stopped"):
        BuildKitBackend(cli, engine).build(request, lambda event: None, cancelled)
    ended = time.monotonic()
    assert running, "the step never started"
    # Docker CLI 20.10 often builds on after SIGINT or SIGTERM: it is killed after a short grace.
    assert ended - stopped_at[0] < 5
    assert wait_until_gone(running, 3) == []
    assert all(engine.inspect_image(reference) is None for reference in request.references)


@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm"])
def test_ctrl_c_and_sigterm_stop_invoke_cascade_within_seconds_and_leave_no_tag_or_process(
    tmp_path: Path, engine: Any, base_image: str, cli: DockerCli, names: Names, stop: str
) -> None:
    name = names("stop")
    marker = uuid.uuid4().hex
    root = make_repo(
        tmp_path / "repo", {name: (f'base = "{base_image}"\n', f"RUN sleep 60 && echo {marker}\n")}
    )
    binary = Path(sys.executable).parent / "invoke"
    process = subprocess.Popen(
        [str(binary), "--search-root", str(TASKS_ROOT), "cascade", "--builder", "buildkit"],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "CI": "true", "IMAGECASCADE_DOCKER_CLI": BUILDKIT_CLI},
        start_new_session=True,  # its own process group, which a terminal's Ctrl-C goes to
    )
    stream = process.stdout
    assert stream is not None
    seen: list[str] = []
    output = threading.Thread(target=lambda: seen.append(stream.read()), daemon=True)
    output.start()
    running: list[int] = []
    deadline = time.monotonic() + 120
    while not running and time.monotonic() < deadline and process.poll() is None:
        running = step_processes(marker)
        time.sleep(0.1)
    assert running, "the step never started"
    time.sleep(0.5)
    started = time.monotonic()
    if stop == "ctrl-c":
        os.killpg(process.pid, signal.SIGINT)
    else:
        process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
    elapsed = time.monotonic() - started
    output.join(timeout=10)
    assert process.returncode == 130, seen
    assert elapsed < 5, f"stopped after {elapsed:.1f} s"
    assert "interrupted" in "".join(seen)
    assert wait_until_gone(running, 3) == []
    plan = compute_plan(load_settings(root), use_cache=False)
    assert engine.inspect_image(f"{name}:{plan.get(name).tag}") is None
    assert engine.inspect_image(f"{name}:latest") is None
    clients = [pid for pid in _pids() if name in _cmdline(pid) or marker in _cmdline(pid)]
    assert wait_until_gone([int(pid) for pid in clients], 3) == []


def _pids() -> list[str]:
    return [pid for pid in os.listdir("/proc") if pid.isdigit()]


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def _status(pid: str) -> dict[str, str]:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


def _parent(pid: str) -> str:
    return _status(pid).get("PPid", "")


def _state(pid: str) -> str:
    return _status(pid).get("State", "")[:1]


def test_a_single_platform_base_of_another_platform_fails_the_image_before_any_tag(
    tmp_path: Path, engine: Any, registry_base: str, cli: DockerCli, names: Names
) -> None:
    """BuildKit takes the registry's linux/amd64 base for linux/arm64 and labels the result arm64."""
    arm, amd = names("arm"), names("amd")
    images = {
        name: (f'base = "{registry_base}"\nplatform = "{platform}"\n', "RUN uname -m > /arch\n")
        for name, platform in ((arm, "linux/arm64"), (amd, "linux/amd64"))
    }
    make_repo(tmp_path / "repo", images)
    plan = compute_plan(load_settings(tmp_path / "repo"), use_cache=False)
    backend = BuildKitBackend(cli, engine)
    request = build_request(plan, plan.get(arm), Provenance(revision="t", source=""), now_rfc3339())
    with pytest.raises(BuildError) as failed:
        backend.build(request, lambda event: None, threading.Event())
    assert str(failed.value).startswith(
        f"{arm}: declared platform linux/arm64, but its base {registry_base} is linux/amd64 only: "
        "BuildKit takes a single-platform base for any platform"
    )
    assert all(engine.inspect_image(reference) is None for reference in request.references)
    labelled = engine.client.api.images(
        all=True, filters={"label": f"io.imagecascade.freshness-hash={plan.get(arm).hash}"}
    )
    assert labelled == []
    request = build_request(plan, plan.get(amd), Provenance(revision="t", source=""), now_rfc3339())
    backend.build(request, lambda event: None, threading.Event())
    assert engine.inspect_image(request.references[0]) is not None


def test_a_file_changed_after_hashing_stops_the_build(
    tmp_path: Path, engine: Any, base_image: str, cli: DockerCli, names: Names
) -> None:
    name = names("changed")
    plan = make_plan(
        tmp_path / "repo", base_image, name, "COPY a.txt /a.txt\n", {f"images/{name}/a.txt": "a"}
    )
    (plan.images[0].spec.folder / "a.txt").write_text("changed after hashing")
    request = build_request(plan, plan.images[0], Provenance(revision="t", source=""), now_rfc3339())
    with pytest.raises(ConfigError, match="changed after its freshness hash was computed"):
        BuildKitBackend(cli, engine).build(request, lambda event: None, threading.Event())
    assert all(engine.inspect_image(reference) is None for reference in request.references)


def test_the_cascade_with_buildkit_labels_tags_and_pushes(cascade_repo: Any, cli: DockerCli) -> None:
    result = cascade_repo.cascade(backend=BuildKitBackend(cli, cascade_repo.engine))
    assert result.ok and {item.outcome for item in result.results} == {"built"}
    plan = cascade_repo.plan()
    for image in plan.images:
        assert next(item for item in result.results if item.name == image.name).digest
        info = cascade_repo.engine.inspect_image(f"{cascade_repo.registry}/{image.name}:{image.tag}")
        assert info.labels["io.imagecascade.freshness-hash"] == image.hash
        assert info.labels["org.opencontainers.image.title"] == image.name
    leaf = cascade_repo.engine.client.containers.run(
        f"{cascade_repo.registry}/leaf:{plan.get('leaf').tag}",
        ["cat", "/opt/root.txt", "/opt/mid.txt", "/opt/leaf.txt"],
        network_mode="none",
        remove=True,
    )
    assert leaf.decode().split() == ["root", "1", "mid", "1", "leaf", "1"]

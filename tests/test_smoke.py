"""Smoke checks against a real Docker Engine: a tiny three-image cascade built offline.

Engine layer (conftest's `engine` and `base_image`): with CI=true a missing engine or tool
fails these tests instead of skipping them.
"""

from __future__ import annotations

import shutil
import tomllib
import uuid
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import RegistryServer, push_as

from imagecascade.core.checks import parse_smoke_checks
from imagecascade.core.plan import compute_plan, image_reference
from imagecascade.core.settings import load_settings
from imagecascade.engines.engine import Engine
from imagecascade.errors import BackendError, NotBuilt
from imagecascade.smoke.__main__ import main
from imagecascade.smoke.results import CheckResult, ImageReport
from imagecascade.smoke.runner import SmokeTarget, find_targets, run_smoke, smoke_image

pytestmark = pytest.mark.engine

# Unique per run: other test runs may use the same engine at the same time.
RUN = uuid.uuid4().hex[:8]
PARENT, CHILD, BROKEN = (f"smoke-test-{RUN}-{role}" for role in ("parent", "child", "broken-child"))

PARENT_DOCKERFILE = """\
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="smoke-test-parent"
ENV PYTHONUNBUFFERED=1 PYTHONPATH=/opt/smoke
COPY site /opt/smoke
COPY smoke-tool /usr/local/bin/smoke-tool
"""
PARENT_TOML = """\
[smoke]
timeout_seconds = 60
imports = ["smokedemo"]
[smoke.versions]
smokedemo = "==1.2.3"
[[smoke.commands]]
name = "tool-help"
run = ["smoke-tool", "--help"]
output = "^usage: smoke-tool"
[[smoke.files]]
path = "/usr/local/bin/smoke-tool"
executable = true
[[smoke.files]]
path = "/opt/conda"
exists = false
[smoke.env]
PYTHONUNBUFFERED = "1"
[smoke.labels]
"org.opencontainers.image.title" = "smoke-test-parent"
"""
CHILD_DOCKERFILE = """\
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="smoke-test-child"
COPY child.txt /etc/smoke-child.txt
USER 1000
WORKDIR /workspace
ENTRYPOINT ["smoke-tool"]
CMD ["--help"]
"""
CHILD_TOML = (
    f'parent = "{PARENT}"\n'
    + """\
[smoke]
[[smoke.files]]
path = "/etc/smoke-child.txt"
[smoke.labels]
"org.opencontainers.image.title" = "smoke-test-child"
[smoke.config]
user = "1000"
non_root = true
entrypoint = ["smoke-tool"]
cmd = ["--help"]
workdir = "/workspace"
"""
)
# Puts an older smokedemo first on the path: it must fail the checks it inherits.
BROKEN_DOCKERFILE = """\
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
ENV PYTHONPATH=/opt/override:/opt/smoke
COPY override /opt/override
"""
BROKEN_TOML = f'parent = "{PARENT}"\n'


def _metadata(version: str) -> str:
    return f"Metadata-Version: 2.1\nName: smokedemo\nVersion: {version}\n"


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def write_repo(root: Path, base_image: str) -> Path:
    (root / "cascade.toml").write_text("")
    parent = root / "images" / PARENT
    _write(parent / "Dockerfile", PARENT_DOCKERFILE)
    _write(parent / "image.toml", f'base = "{base_image}"\n' + PARENT_TOML)
    _write(parent / "site" / "smokedemo" / "__init__.py", "VERSION = '1.2.3'\n")
    _write(parent / "site" / "smokedemo" / "slow.py", "import time\ntime.sleep(60)\n")
    _write(parent / "site" / "smokedemo-1.2.3.dist-info" / "METADATA", _metadata("1.2.3"))
    _write(parent / "smoke-tool", "#!/bin/sh\necho 'usage: smoke-tool [--help]'\n", 0o755)
    child = root / "images" / CHILD
    _write(child / "Dockerfile", CHILD_DOCKERFILE)
    _write(child / "image.toml", CHILD_TOML)
    _write(child / "child.txt", "child\n")
    broken = root / "images" / BROKEN
    _write(broken / "Dockerfile", BROKEN_DOCKERFILE)
    _write(broken / "image.toml", BROKEN_TOML)
    _write(broken / "override" / "smokedemo" / "__init__.py", "VERSION = '0.1.0'\n")
    _write(broken / "override" / "smokedemo-0.1.0.dist-info" / "METADATA", _metadata("0.1.0"))
    return root


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, engine: Engine, base_image: str) -> Iterator[Path]:
    """The test cascade, built at its plan's hash tags."""
    root = write_repo(tmp_path_factory.mktemp("smoke-repo"), base_image)
    plan = compute_plan(load_settings(root))
    built: list[str] = []
    try:
        for planned in plan.images:
            spec = planned.spec
            parent = image_reference(spec.parent, plan.get(spec.parent).tag, "") if spec.parent else spec.base
            reference = image_reference(planned.name, planned.tag, "")
            engine.client.images.build(
                path=str(spec.context),
                dockerfile=str(spec.dockerfile),
                tag=reference,
                buildargs={"BASE_IMAGE": str(parent)},
                network_mode="host",
                rm=True,
                forcerm=True,
            )
            built.append(reference)
        yield root
    finally:
        for reference in reversed(built):
            engine.remove_image(reference, force=True)


@pytest.fixture(autouse=True)
def no_leftover_containers(engine: Engine) -> Iterator[None]:
    yield
    # The raw listing (containers.list() would inspect other runs' containers too), this run's only.
    leftovers = [
        summary
        for summary in engine.client.api.containers(all=True, filters={"label": "imagecascade.role=smoke"})
        if RUN in summary["Image"]
    ]
    assert leftovers == []


def by_check(report: ImageReport) -> dict[str, CheckResult]:
    return {result.check: result for result in report.results}


def reference_of(root: Path, name: str) -> str:
    return image_reference(name, compute_plan(load_settings(root)).get(name).tag, "")


def test_passing_cascade_with_inherited_checks(repo: Path, engine: Engine) -> None:
    targets = find_targets(load_settings(repo), engine, [PARENT, CHILD])
    events: list[tuple[str, str]] = []
    reports = run_smoke(
        engine, targets, on_event=lambda event: events.append((event.kind, event.target.name))
    )
    assert events == [("started", PARENT), ("finished", PARENT), ("started", CHILD), ("finished", CHILD)]
    for report in reports:
        assert [result.message for result in report.results if result.status != "pass"] == []
    parent, child = (by_check(report) for report in reports)
    assert set(parent) < set(child), "the child runs every check of its parent"
    assert child["import smokedemo"].message == f"{CHILD}: module smokedemo imports"
    assert child["label org.opencontainers.image.title"].message == (
        f"{CHILD}: label org.opencontainers.image.title is 'smoke-test-child'"
    )
    assert child["config non_root"].message == f"{CHILD}: runs as uid 1000"
    assert child["config entrypoint"].message == f"{CHILD}: entrypoint is ['smoke-tool']"


def test_child_that_replaced_the_parents_distribution_fails(repo: Path, engine: Engine) -> None:
    (target,) = find_targets(load_settings(repo), engine, [BROKEN])
    report = smoke_image(engine, target, gpu=False)
    failures = [result.message for result in report.results if result.status == "fail"]
    assert failures == [f"{BROKEN}: smokedemo 0.1.0 does not satisfy ==1.2.3"]


def test_failing_checks_have_precise_messages(repo: Path, engine: Engine) -> None:
    checks = parse_smoke_checks(
        tomllib.loads(
            """
            imports = ["smokedemo", "foo"]
            [versions]
            smokedemo = "==2.0"
            [[commands]]
            name = "fails"
            run = ["sh", "-c", "echo broken >&2; exit 3"]
            [[commands]]
            name = "not-there"
            run = ["torchrun", "--help"]
            [[files]]
            path = "/x"
            [[files]]
            path = "/etc/hostname"
            exists = false
            [labels]
            "org.opencontainers.image.title" = "arr-trainer"
            "org.opencontainers.image.version" = ".+"
            [config]
            user = "launcher"
            non_root = true
            workdir = "/workspace"
            """
        ),
        "test",
    )
    target = SmokeTarget(PARENT, reference_of(repo, PARENT), checks)
    report = smoke_image(engine, target, gpu=False)
    assert report.failed
    assert {result.check: (result.status, result.message) for result in report.results} == {
        "label org.opencontainers.image.title": (
            "fail",
            f"{PARENT}: label org.opencontainers.image.title is 'smoke-test-parent', expected 'arr-trainer'",
        ),
        "label org.opencontainers.image.version": (
            "fail",
            f"{PARENT}: label org.opencontainers.image.version is not set, expected '.+'",
        ),
        "config user": ("fail", f"{PARENT}: user is unset (root), expected 'launcher'"),
        "config workdir": ("fail", f"{PARENT}: workdir is unset (/), expected '/workspace'"),
        "import smokedemo": ("pass", f"{PARENT}: module smokedemo imports"),
        "import foo": (
            "fail",
            f"{PARENT}: module foo does not import: ModuleNotFoundError: No module named 'foo'",
        ),
        "version smokedemo": ("fail", f"{PARENT}: smokedemo 1.2.3 does not satisfy ==2.0"),
        "command fails": ("fail", f"{PARENT}: command fails exited 3: broken"),
        "command not-there": (
            "fail",
            f"{PARENT}: command not-there: cannot run torchrun: No such file or directory",
        ),
        "file /x": ("fail", f"{PARENT}: file /x is missing"),
        "file /etc/hostname": ("fail", f"{PARENT}: file /etc/hostname exists (file), expected absent"),
        "config non_root": ("fail", f"{PARENT}: runs as uid 0, expected a non-root user"),
    }


GPU_CHECKS = """
[[commands]]
name = "nvidia-smi"
run = ["nvidia-smi"]
gpu = true
[cuda]
available = true
min_devices = 1
matmul = true
"""


def test_gpu_checks_skip_here_and_fail_with_require_gpu(repo: Path, engine: Engine) -> None:
    assert not engine.gpu_available()
    checks = parse_smoke_checks(tomllib.loads(GPU_CHECKS), "test")
    target = SmokeTarget(PARENT, reference_of(repo, PARENT), checks)
    (skipped,) = run_smoke(engine, [target])
    assert {(result.check, result.status, result.message) for result in skipped.results} == {
        (check, "skip", f"{PARENT}: skipped: no GPU")
        for check in ("command nvidia-smi", "cuda available", "cuda min_devices", "cuda matmul")
    }
    assert not skipped.failed
    (required,) = run_smoke(engine, [target], require_gpu=True)
    assert {(result.check, result.status) for result in required.results} == {
        (check, "fail")
        for check in ("command nvidia-smi", "cuda available", "cuda min_devices", "cuda matmul")
    }
    assert by_check(required)["cuda matmul"].message == (
        f"{PARENT}: cuda.matmul needs a GPU, but the engine offers none (--require-gpu)"
    )


def test_container_time_limit(repo: Path, engine: Engine) -> None:
    checks = parse_smoke_checks({"timeout_seconds": 3, "imports": ["smokedemo.slow"]}, "test")
    report = smoke_image(engine, SmokeTarget(PARENT, reference_of(repo, PARENT), checks), gpu=False)
    assert [(result.check, result.status, result.message) for result in report.results] == [
        ("probe", "fail", f"{PARENT}: timed out after 3s")
    ]
    assert report.seconds < 30


def test_image_without_the_interpreter(repo: Path, engine: Engine) -> None:
    checks = parse_smoke_checks({"python": "python9", "imports": ["json"]}, "test")
    report = smoke_image(engine, SmokeTarget(PARENT, reference_of(repo, PARENT), checks), gpu=False)
    ((check, status, message),) = [(result.check, result.status, result.message) for result in report.results]
    assert (check, status) == ("probe", "fail")
    assert message.startswith(f"{PARENT}: cannot start the probe with 'python9': ")
    assert "executable file not found" in message


def test_not_built_names_invoke_cascade(repo: Path, engine: Engine, tmp_path: Path) -> None:
    shutil.copytree(repo / "images", tmp_path / "images")
    (tmp_path / "cascade.toml").write_text("")
    (tmp_path / "images" / CHILD / "child.txt").write_text("changed\n")  # a new hash: not built
    settings = load_settings(tmp_path)
    with pytest.raises(NotBuilt) as raised:
        find_targets(settings, engine, [])
    tag = compute_plan(settings).get(CHILD).tag
    assert str(raised.value) == f"not built in the local engine: {CHILD}:{tag}; run `invoke cascade` first"
    assert find_targets(settings, engine, [PARENT])[0].name == PARENT


def test_main_writes_junit_and_exits_non_zero_on_failure(
    repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(repo)
    assert main([PARENT, CHILD]) == 0
    junit = repo / "reports" / "smoke-junit.xml"
    suites = ElementTree.parse(junit).getroot()
    assert [suite.get("name") for suite in suites] == [PARENT, CHILD]
    assert suites.get("failures") == "0"
    assert main([]) == 1
    suites = ElementTree.parse(junit).getroot()
    broken = suites.find(f"testsuite[@name='{BROKEN}']")
    assert broken is not None and broken.get("failures") == "1"
    failure = broken.find("testcase[@name='version smokedemo']/failure")
    assert failure is not None
    assert failure.get("message") == f"{BROKEN}: smokedemo 0.1.0 does not satisfy ==1.2.3"
    assert "smokedemo 0.1.0 does not satisfy ==1.2.3" in capsys.readouterr().err
    assert main(["no-such-image"]) == 2
    assert "unknown image no-such-image" in capsys.readouterr().err


def test_registry_images_are_pulled_and_registry_errors_are_not_missing(
    repo: Path, engine: Engine, registry_server: RegistryServer
) -> None:
    tag = compute_plan(load_settings(repo)).get(PARENT).tag
    remote = f"{registry_server.address}/{PARENT}:{tag}"
    push_as(engine, reference_of(repo, PARENT), remote)
    engine.remove_image(remote)  # only the tag: the engine must fetch it back
    settings = load_settings(repo).with_overrides(registry=registry_server.address)
    try:
        targets = find_targets(settings, engine, [PARENT], pull=engine.pull_image)
        assert [target.reference for target in targets] == [remote]
        assert engine.image_exists(remote)
        with pytest.raises(
            NotBuilt, match=f"not built in {registry_server.address}: .*{CHILD}.*invoke cascade"
        ):
            find_targets(settings, engine, [CHILD], pull=engine.pull_image)
        registry_server.stop()
        with pytest.raises(BackendError, match="cannot pull"):
            find_targets(settings, engine, [CHILD], pull=engine.pull_image)
    finally:
        engine.remove_image(remote)

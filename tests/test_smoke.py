"""Smoke checks against a real Docker Engine: a tiny three-image cascade built offline.

Engine layer (conftest's `engine` and `base_image`): with CI=true a missing engine or tool
fails these tests instead of skipping them.
"""

from __future__ import annotations

import re
import shutil
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import RegistryServer, push_as
from junit_schemas import assert_valid_junit
from smoke_repo import built, unique, write

from imagecascade.core.checks import parse_smoke_checks
from imagecascade.core.plan import compute_plan, image_reference
from imagecascade.core.settings import load_settings
from imagecascade.engines.engine import Engine
from imagecascade.errors import BackendError, NotBuilt
from imagecascade.rendering.smoke_table import human_size
from imagecascade.smoke.__main__ import main
from imagecascade.smoke.results import CheckResult, ImageReport
from imagecascade.smoke.runner import SmokeTarget, find_targets, run_smoke, smoke_image
from imagecascade.smoke.session import SmokeSession

pytestmark = pytest.mark.engine

PARENT, CHILD, BROKEN = (
    unique("smoke-test-parent"),
    unique("smoke-test-child"),
    unique("smoke-test-broken-child"),
)
BARE, COLOUR = unique("smoke-test-bare"), unique("smoke-test-colour")

PARENT_DOCKERFILE = """\
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="@PARENT@"
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
"org.opencontainers.image.title" = "{name}"
"""
CHILD_DOCKERFILE = """\
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="@CHILD@"
COPY child.txt /etc/smoke-child.txt
USER 1000
WORKDIR /workspace
ENTRYPOINT ["smoke-tool"]
CMD ["--help"]
"""
CHILD_TOML = """\
parent = "@PARENT@"
[smoke]
[[smoke.files]]
path = "/etc/smoke-child.txt"
[smoke.config]
user = "1000"
non_root = true
entrypoint = ["smoke-tool"]
cmd = ["--help"]
workdir = "/workspace"
"""
# Puts an older smokedemo first on the path: it must fail the checks it inherits.
BROKEN_DOCKERFILE = """\
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="@BROKEN@"
ENV PYTHONPATH=/opt/override:/opt/smoke
COPY override /opt/override
"""
BROKEN_TOML = 'parent = "@PARENT@"\n'
LEAF_DOCKERFILE = "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n"
# Declares nothing: the parent's checks are not inherited.
BARE_TOML = 'parent = "@PARENT@"\n[smoke]\ninherit = false\n'
# A failing command that prints a coloured error line, as many tools do.
COLOUR_TOML = """\
parent = "@PARENT@"
[smoke]
inherit = false
[[smoke.commands]]
name = "coloured-error"
run = ["sh", "-c", "printf '\\\\033[1;31merror:\\\\033[0m it broke\\\\n'; exit 3"]
"""


def _metadata(version: str) -> str:
    return f"Metadata-Version: 2.1\nName: smokedemo\nVersion: {version}\n"


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    for marker, name in (("@PARENT@", PARENT), ("@CHILD@", CHILD), ("@BROKEN@", BROKEN)):
        text = text.replace(marker, name)
    write(path, text, mode)


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
    for name, declaration in ((BARE, BARE_TOML), (COLOUR, COLOUR_TOML)):
        _write(root / "images" / name / "Dockerfile", LEAF_DOCKERFILE)
        _write(root / "images" / name / "image.toml", declaration)
    return root


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, engine: Engine, base_image: str) -> Iterator[Path]:
    """The test cascade, built at its plan's hash tags."""
    with built(engine, write_repo(tmp_path_factory.mktemp("smoke-repo"), base_image)) as root:
        yield root


@pytest.fixture
def session(repo: Path) -> SmokeSession:
    return SmokeSession.for_repository(repo)


@pytest.fixture(autouse=True)
def no_leftover_containers(repo: Path, engine: Engine) -> Iterator[None]:
    """After each test, not one container of this test repository's smoke runs is left."""
    yield
    assert engine.list_containers(SmokeSession.for_repository(repo).selector()) == []


def by_check(report: ImageReport) -> dict[str, CheckResult]:
    return {result.check: result for result in report.results}


def reference_of(root: Path, name: str) -> str:
    return image_reference(name, compute_plan(load_settings(root)).get(name).tag, "")


def test_passing_cascade_with_inherited_checks(repo: Path, engine: Engine, session: SmokeSession) -> None:
    targets = find_targets(load_settings(repo), engine, [PARENT, CHILD])
    events: list[tuple[str, str]] = []
    reports = run_smoke(
        engine,
        targets,
        session,
        on_event=lambda event: events.append((event.kind, event.target.name if event.target else "")),
    )
    assert events == [("started", PARENT), ("finished", PARENT), ("started", CHILD), ("finished", CHILD)]
    for report in reports:
        assert [result.message for result in report.results if result.status != "pass"] == []
    parent, child = (by_check(report) for report in reports)
    assert set(parent) < set(child), "the child runs every check of its parent"
    assert child["import smokedemo"].message == f"{CHILD}: module smokedemo imports"
    assert child["label org.opencontainers.image.title"].message == (
        f"{CHILD}: label org.opencontainers.image.title is '{CHILD}'"
    )
    assert child["config non_root"].message == f"{CHILD}: runs as uid 1000"
    assert child["config entrypoint"].message == f"{CHILD}: entrypoint is ['smoke-tool']"


def test_child_that_replaced_the_parents_distribution_fails(
    repo: Path, engine: Engine, session: SmokeSession
) -> None:
    (target,) = find_targets(load_settings(repo), engine, [BROKEN])
    report = smoke_image(engine, target, session)
    failures = [result.message for result in report.results if result.status == "fail"]
    assert failures == [f"{BROKEN}: smokedemo 0.1.0 does not satisfy ==1.2.3"]


def test_failing_checks_have_precise_messages(repo: Path, engine: Engine, session: SmokeSession) -> None:
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
    report = smoke_image(engine, target, session)
    assert report.failed
    assert {result.check: (result.status, result.message) for result in report.results} == {
        "label org.opencontainers.image.title": (
            "fail",
            f"{PARENT}: label org.opencontainers.image.title is '{PARENT}', expected 'arr-trainer'",
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


def test_gpu_checks_skip_here_and_fail_with_require_gpu(
    repo: Path, engine: Engine, session: SmokeSession
) -> None:
    checks = parse_smoke_checks(tomllib.loads(GPU_CHECKS), "test")
    target = SmokeTarget(PARENT, reference_of(repo, PARENT), checks)
    (skipped,) = run_smoke(engine, [target], session)
    assert {(result.check, result.status, result.message) for result in skipped.results} == {
        (check, "skip", f"{PARENT}: skipped: no GPU")
        for check in ("command nvidia-smi", "cuda available", "cuda min_devices", "cuda matmul")
    }
    assert not skipped.failed
    (required,) = run_smoke(engine, [target], session, require_gpu=True)
    assert {(result.check, result.status) for result in required.results} == {
        (check, "fail")
        for check in ("command nvidia-smi", "cuda available", "cuda min_devices", "cuda matmul")
    }
    assert by_check(required)["cuda matmul"].message == (
        f"{PARENT}: cuda.matmul needs a GPU, but the engine offers none (no NVIDIA runtime, "
        "CDI GPU device or GPU device driver in the engine) (--require-gpu)"
    )


def test_a_hanging_import_is_named_and_the_container_ends(
    repo: Path, engine: Engine, session: SmokeSession
) -> None:
    checks = parse_smoke_checks(
        {"timeout_seconds": 3, "imports": ["smokedemo", "smokedemo.slow", "json"]}, "test"
    )
    report = smoke_image(engine, SmokeTarget(PARENT, reference_of(repo, PARENT), checks), session)
    assert [(result.check, result.status, result.message) for result in report.results] == [
        ("import smokedemo", "pass", f"{PARENT}: module smokedemo imports"),
        ("import smokedemo.slow", "fail", f"{PARENT}: import of smokedemo.slow timed out after 3 s"),
        (
            "import json",
            "fail",
            f"{PARENT}: not run: timeout_seconds (3 s) ran out during import of smokedemo.slow",
        ),
    ]
    assert report.seconds < 3 + 10, "the probe stops itself at timeout_seconds, not the host's backstop"


def test_a_two_second_command_in_a_ten_second_container(
    repo: Path, engine: Engine, session: SmokeSession
) -> None:
    checks = parse_smoke_checks(
        {"timeout_seconds": 10, "commands": [{"name": "two-seconds", "run": ["sleep", "2"]}]}, "test"
    )
    report = smoke_image(engine, SmokeTarget(PARENT, reference_of(repo, PARENT), checks), session)
    assert [(result.check, result.status, result.message) for result in report.results] == [
        ("command two-seconds", "pass", f"{PARENT}: command two-seconds exited 0")
    ]


def test_output_is_searched_whole(repo: Path, engine: Engine, session: SmokeSession) -> None:
    # 20 kB of output whose match is at the very start: beyond any 16,000-character tail.
    printer = ["python3", "-c", "import sys; sys.stdout.write('usage: smoke-tool\\n' + 'y' * 20000)"]
    commands = [
        {"name": "match-at-start", "run": printer, "output": "^usage: smoke-tool"},
        {"name": "no-match", "run": printer, "output": "^usage: other-tool"},
    ]
    checks = parse_smoke_checks({"commands": commands}, "test")
    report = smoke_image(engine, SmokeTarget(PARENT, reference_of(repo, PARENT), checks), session)
    results = by_check(report)
    assert results["command match-at-start"].status == "pass"
    assert results["command no-match"].status == "fail"
    assert results["command no-match"].message == (
        f"{PARENT}: command no-match output does not match '^usage: other-tool'; it printed 20,018 bytes, "
        f"starting {'usage: smoke-tool' + chr(10) + 'y' * 82!r} and ending {'y' * 100!r}"
    )


def test_image_without_the_interpreter(repo: Path, engine: Engine, session: SmokeSession) -> None:
    checks = parse_smoke_checks({"python": "python9", "imports": ["json"]}, "test")
    report = smoke_image(engine, SmokeTarget(PARENT, reference_of(repo, PARENT), checks), session)
    ((check, status, message),) = [(result.check, result.status, result.message) for result in report.results]
    assert (check, status) == ("import json", "fail")
    assert message.startswith(f"{PARENT}: not observed: cannot start the probe with 'python9': ")
    assert "executable file not found" in message


def test_size_limit_and_no_checks(repo: Path, engine: Engine, session: SmokeSession) -> None:
    reference = reference_of(repo, PARENT)
    size = engine.inspect_image(reference).size
    assert size > 10**6
    small = parse_smoke_checks({"max_size_gb": size / 1e9 / 2}, "test")
    large = parse_smoke_checks({"max_size_gb": 100}, "test")
    (too_big,) = smoke_image(engine, SmokeTarget(PARENT, reference, small), session).results
    assert (too_big.check, too_big.status) == ("size", "fail")
    assert too_big.message == (
        f"{PARENT}: image is {size / 1e9:.2f} GB, larger than max_size_gb {size / 1e9 / 2:g}"
    )
    (fits,) = smoke_image(engine, SmokeTarget(PARENT, reference, large), session).results
    assert (fits.status, fits.message) == (
        "pass",
        f"{PARENT}: image is {size / 1e9:.2f} GB, within max_size_gb 100",
    )
    nothing = SmokeTarget(PARENT, reference, parse_smoke_checks({"timeout_seconds": 5}, "test"))
    (skipped,) = smoke_image(engine, nothing, session).results
    assert (skipped.check, skipped.status) == ("no checks", "skip")
    assert skipped.message == (
        f"{PARENT}: declares no smoke checks: nothing was verified; add checks to [smoke] in "
        f"images/{PARENT}/image.toml"
    )
    (strict,) = smoke_image(engine, nothing, session, strict=True).results
    assert (strict.check, strict.status) == ("no checks", "fail")


SCRATCH_CHECKS = """
[[files]]
path = "/wheels/torch-2.6.0-cp310-cp310-linux_x86_64.whl"
[[files]]
path = "/wheels/torch-2.5.0-cp310-cp310-linux_x86_64.whl"
[[files]]
path = "/bin/link"
[[files]]
path = "/bin/dangling"
[[files]]
path = "/etc/passwd"
exists = false
[labels]
"org.opencontainers.image.title" = "wheels"
"""


def test_an_image_without_an_interpreter_has_its_files_checked(
    engine: Engine, tmp_path: Path, unique_name: str, session: SmokeSession
) -> None:
    """A scratch image of wheels (like arr-pytorch-wheels) has nothing to run a probe with."""
    context = tmp_path / "scratch"
    _write(context / "wheels" / "torch-2.6.0-cp310-cp310-linux_x86_64.whl", "not really a wheel")
    _write(context / "bin" / "tool", "#!/bin/sh\n", 0o755)
    (context / "bin" / "link").symlink_to("tool")
    (context / "bin" / "dangling").symlink_to("nowhere")
    dockerfile = (
        'FROM scratch\nCOPY wheels /wheels\nCOPY bin /bin\nLABEL org.opencontainers.image.title="wheels"\n'
    )
    _write(context / "Dockerfile", dockerfile)
    reference = f"{unique_name}:scratch"
    engine.client.images.build(path=str(context), tag=reference, network_mode="none", rm=True, forcerm=True)
    try:
        checks = parse_smoke_checks(tomllib.loads(SCRATCH_CHECKS), "test")
        report = smoke_image(engine, SmokeTarget("wheels", reference, checks), session)
    finally:
        engine.remove_image(reference, force=True)
    statuses = {result.check: result.status for result in report.results}
    assert statuses == {
        "label org.opencontainers.image.title": "pass",
        "file /wheels/torch-2.6.0-cp310-cp310-linux_x86_64.whl": "pass",
        "file /wheels/torch-2.5.0-cp310-cp310-linux_x86_64.whl": "fail",
        "file /bin/link": "pass",
        "file /bin/dangling": "fail",
        "file /etc/passwd": "pass",
    }, [result.message for result in report.results]


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
    repo: Path, engine: Engine, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(repo)
    assert main([PARENT, CHILD]) == 0
    junit = repo / "reports" / "smoke-junit.xml"
    suites = assert_valid_junit(junit)
    assert [suite.get("name") for suite in suites] == [PARENT, CHILD]
    assert {suite.get("failures") for suite in suites} == {"0"}
    assert main([]) == 1
    suites = assert_valid_junit(junit)
    broken = suites.find(f"testsuite[@name='{BROKEN}']")
    assert broken is not None and broken.get("failures") == "1"
    failure = broken.find("testcase[@name='version smokedemo']/failure")
    assert failure is not None
    assert failure.get("message") == f"{BROKEN}: smokedemo 0.1.0 does not satisfy ==1.2.3"
    coloured = suites.find(f"testsuite[@name='{COLOUR}']/testcase[@name='command coloured-error']/failure")
    assert coloured is not None
    assert coloured.get("message") == f"{COLOUR}: command coloured-error exited 3: error: it broke"
    bare = suites.find(f"testsuite[@name='{BARE}']/testcase[@name='no checks']/skipped")
    assert bare is not None
    assert b"\x1b" not in junit.read_bytes()
    shown = capsys.readouterr().err
    assert "smokedemo 0.1.0 does not satisfy ==1.2.3" in shown
    assert f"{COLOUR}: command coloured-error exited 3: error: it broke" in shown
    assert f"warning: {BARE}: declares no smoke checks: nothing was verified" in shown
    assert "\x1b" not in shown, "not a terminal: not one escape sequence"
    parent_size = human_size(engine.inspect_image(reference_of(repo, PARENT)).size)
    assert re.search(rf"{PARENT} +│ {re.escape(parent_size)} ", shown), "the table shows each image's size"
    assert main(["--strict", BARE]) == 1
    assert f"{BARE}: declares no smoke checks (--strict)" in capsys.readouterr().err
    assert main(["no-such-image"]) == 2
    assert "unknown image no-such-image" in capsys.readouterr().err
    (repo / "not-a-folder").write_text("")
    assert main(["--junit", str(repo / "not-a-folder" / "junit.xml"), BARE]) == 2
    assert (
        f"error: cannot write the JUnit report {repo / 'not-a-folder' / 'junit.xml'}: "
        in capsys.readouterr().err
    )


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

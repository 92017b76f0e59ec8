"""File checks see what the image holds, whatever the probe may read; Docker itself is the oracle.

Engine layer: images built here from the offline base, each test's containers labelled with its
own repository id, and the ground truth read by `docker run` (root with Docker's default
capabilities sees every path; `test -x` as the image's user is the kernel's answer).
"""

from __future__ import annotations

import io
import random
import subprocess
import tomllib
import uuid
from collections.abc import Iterator

import pytest

from imagecascade.core.checks import parse_smoke_checks
from imagecascade.engines.engine import Engine
from imagecascade.smoke.files import observe_file
from imagecascade.smoke.results import ImageReport
from imagecascade.smoke.runner import SmokeTarget, smoke_image
from imagecascade.smoke.session import SmokeSession

pytestmark = pytest.mark.engine

TEST_LABEL = "imagecascade.test"

SECRETS = """\
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN mkdir -p /secret /root/.docker /usr/local/bin /opt/private \\
 && echo '{"auths": {}}' > /secret/config.json && chown -R 1234:1234 /secret && chmod 0700 /secret \\
 && echo '{}' > /root/.docker/config.json && chmod 0700 /root \\
 && ln -s /secret/config.json /etc/secret-link && ln -s ../secret/config.json /etc/relative-link \\
 && ln -s /nowhere /dangling && ln -s /loop-b /loop-a && ln -s /loop-a /loop-b \\
 && printf '#!/bin/sh\\necho root-only\\n' > /usr/local/bin/root-only \\
 && chmod 0744 /usr/local/bin/root-only \\
 && printf '#!/bin/sh\\necho everyone\\n' > /usr/local/bin/everyone && chmod 0755 /usr/local/bin/everyone \\
 && printf '#!/bin/sh\\necho hidden\\n' > /opt/private/tool \\
 && chmod 0755 /opt/private/tool && chmod 0700 /opt/private \\
 && printf 'x' > /etc/plain.txt && chmod 0644 /etc/plain.txt
"""
NON_ROOT = "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nUSER 1000:1000\n"
CLEAN = "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN mkdir -p /usr/local/bin\nUSER 1000\n"

CHECKS = """
[[files]]
path = "/secret/config.json"
exists = false
[[files]]
path = "/root/.docker/config.json"
exists = false
[[files]]
path = "/etc/secret-link"
exists = false
[[files]]
path = "/etc/relative-link"
[[files]]
path = "/dangling"
exists = false
[[files]]
path = "/loop-a"
[[files]]
path = "/secret/config.json/inner"
exists = false
[[files]]
path = "/usr/local/bin/root-only"
executable = true
[[files]]
path = "/usr/local/bin/everyone"
executable = true
[[files]]
path = "/opt/private/tool"
executable = true
[[files]]
path = "/etc/plain.txt"
executable = false
[[commands]]
name = "the-probe-cannot-see-it"
run = ["sh", "-c", "test -e /secret/config.json"]
"""


def build(engine: Engine, dockerfile: str, base: str, tag: str) -> str:
    engine.client.images.build(
        fileobj=io.BytesIO(dockerfile.encode()),
        tag=tag,
        buildargs={"BASE_IMAGE": base},
        network_mode="host",
        rm=True,
        forcerm=True,
        labels={TEST_LABEL: tag},
    )
    return tag


@pytest.fixture(scope="module")
def images(engine: Engine, base_image: str) -> Iterator[dict[str, str]]:
    prefix = f"imagecascade-test/smoke-files-{uuid.uuid4().hex[:10]}"
    built: dict[str, str] = {}
    try:
        built["root"] = build(engine, SECRETS, base_image, f"{prefix}:root")
        built["non-root"] = build(engine, NON_ROOT, built["root"], f"{prefix}:non-root")
        built["clean"] = build(engine, CLEAN, base_image, f"{prefix}:clean")
        yield built
    finally:
        for reference in reversed(list(built.values())):
            engine.remove_image(reference, force=True)


@pytest.fixture
def session(engine: Engine) -> Iterator[SmokeSession]:
    session = SmokeSession(repository=f"test-{uuid.uuid4().hex[:12]}")
    yield session
    assert engine.list_containers(session.selector()) == []


def check(
    engine: Engine, session: SmokeSession, reference: str, text: str = CHECKS
) -> dict[str, tuple[str, str]]:
    checks = parse_smoke_checks(tomllib.loads(text), "test")
    report: ImageReport = smoke_image(engine, SmokeTarget("img", reference, checks), session)
    return {result.check: (result.status, result.message.removeprefix("img: ")) for result in report.results}


def test_root_image_with_a_secret_in_another_users_0700_folder(
    engine: Engine, images: dict[str, str], session: SmokeSession
) -> None:
    assert check(engine, session, images["root"]) == {
        "file /secret/config.json": ("fail", "file /secret/config.json exists (file), expected absent"),
        "file /root/.docker/config.json": (
            "fail",
            "file /root/.docker/config.json exists (file), expected absent",
        ),
        "file /etc/secret-link": (
            "fail",
            "file /etc/secret-link exists (file) (via symlink to /secret/config.json), expected absent",
        ),
        "file /etc/relative-link": (
            "pass",
            "file /etc/relative-link exists (via symlink to /secret/config.json)",
        ),
        "file /dangling": ("pass", "file /dangling is absent (a broken symlink to /nowhere)"),
        "file /loop-a": ("fail", "file /loop-a is missing (a symlink loop)"),
        "file /secret/config.json/inner": (
            "pass",
            "file /secret/config.json/inner is absent (a folder on its way is a file)",
        ),
        "file /usr/local/bin/root-only": (
            "pass",
            "file /usr/local/bin/root-only is executable by root (mode 0744, owner 0:0)",
        ),
        "file /usr/local/bin/everyone": (
            "pass",
            "file /usr/local/bin/everyone is executable by root (mode 0755, owner 0:0)",
        ),
        "file /opt/private/tool": (
            "pass",
            "file /opt/private/tool is executable by root (mode 0755, owner 0:0)",
        ),
        "file /etc/plain.txt": (
            "pass",
            "file /etc/plain.txt is not executable by root (mode 0644, owner 0:0)",
        ),
        # The probe, root without capabilities, cannot see the secret: it must not be the one asked.
        "command the-probe-cannot-see-it": ("fail", "command the-probe-cannot-see-it exited 1"),
    }


def test_non_root_image_looking_into_root(
    engine: Engine, images: dict[str, str], session: SmokeSession
) -> None:
    results = check(engine, session, images["non-root"])
    assert results["file /root/.docker/config.json"] == (
        "fail",
        "file /root/.docker/config.json exists (file), expected absent",
    )
    assert results["file /secret/config.json"][0] == "fail"
    assert results["file /usr/local/bin/root-only"] == (
        "fail",
        "file /usr/local/bin/root-only is not executable by uid 1000 (mode 0744, owner 0:0)",
    )
    assert results["file /usr/local/bin/everyone"] == (
        "pass",
        "file /usr/local/bin/everyone is executable by uid 1000 (mode 0755, owner 0:0)",
    )
    # Its bits allow it, but uid 1000 cannot pass the 0700 folder it lies in.
    assert results["file /opt/private/tool"] == (
        "fail",
        "file /opt/private/tool is not executable by uid 1000 (mode 0755, owner 0:0)",
    )


def test_an_image_without_the_defect_passes(
    engine: Engine, images: dict[str, str], session: SmokeSession
) -> None:
    results = check(engine, session, images["clean"])
    for path in ("/secret/config.json", "/root/.docker/config.json", "/etc/secret-link", "/dangling"):
        assert results[f"file {path}"] == ("pass", f"file {path} is absent")
    assert results["file /usr/local/bin/root-only"] == ("fail", "file /usr/local/bin/root-only is missing")


def test_what_cannot_be_determined_fails(
    engine: Engine, images: dict[str, str], session: SmokeSession
) -> None:
    # The container the files are read from is gone: the engine cannot say, and that is no "absent".
    container = engine.create_container(
        images["root"], entrypoint=["true"], command=[], labels=session.labels(0)
    )
    engine.remove_container(container)
    fact = observe_file(engine, container, "/secret/config.json", owner=False)
    assert (fact.kind, fact.exists) == ("unknown", False)
    assert fact.reason is not None and "No such container" in fact.reason
    # The user's right to execute is asked of a probe that cannot start: cannot tell, not a pass.
    results = check(
        engine,
        session,
        images["non-root"],
        'python = "python9"\n[[files]]\npath = "/usr/local/bin/everyone"\nexecutable = true',
    )
    status, message = results["file /usr/local/bin/everyone"]
    assert status == "fail"
    assert message.startswith(
        "file /usr/local/bin/everyone: cannot tell who may execute it: not observed: "
        "cannot start the probe with 'python9': "
    )


def docker_truth(reference: str, paths: list[str], user: str) -> dict[str, tuple[bool, bool]]:
    """(exists, executable regular file) for each path, as `test` in a `docker run` as `user` says."""
    script = 'for p in "$@"; do e=0; x=0; [ -e "$p" ] && e=1; [ -f "$p" ] && [ -x "$p" ] && x=1; '
    script += 'echo "$e$x $p"; done'
    done = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "--label", f"{TEST_LABEL}=oracle", "--user", user,
         "--entrypoint", "sh", reference, "-c", script, "sh", *paths],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    truth = {}
    for line in done.stdout.splitlines():
        flags, path = line.split(" ", 1)
        truth[path] = (flags[0] == "1", flags[1] == "1")
    return truth


def random_tree(seed: int) -> tuple[str, list[str]]:
    """A shell script making a random tree under /t (folders, files, symlinks of every kind, modes,
    owners), and the paths to ask about."""
    rng = random.Random(seed)
    commands = ["mkdir -p /t"]
    folders, names, modal = ["/t"], [], []
    for index in range(40):
        parent = rng.choice(folders)
        path = f"{parent}/n{index}"
        kind = rng.choice(["dir", "file", "file", "link", "link"])
        if kind == "dir":
            commands.append(f"mkdir {path}")
            folders.append(path)
            modal.append(path)
        elif kind == "file":
            commands.append(f"printf x > {path}")
            modal.append(path)
        else:
            relative = "../" + rng.choice(names or ["/x"]).lstrip("/")
            target = rng.choice([*(names or ["/t"]), "/nowhere", path, relative])
            commands.append(f"ln -s {target} {path}")
        names.append(path)
    for path in names:
        commands.append(f"chown -h {rng.choice(['0:0', '1000:1000', '1234:1000', '1234:1234'])} {path}")
    # Modes last, deepest first: a 0700 folder must not stop the changes below it.
    for path in sorted(modal, key=len, reverse=True):
        commands.append(
            f"chmod {rng.choice(['0700', '0755', '0744', '0711', '0644', '0750', '0610'])} {path}"
        )
    asked = names + [f"{path}/inner" for path in rng.sample(names, 8)]
    return " && ".join(commands), asked


@pytest.mark.parametrize(("seed", "user"), [(1, "1000:1000"), (2, "0:0"), (3, "1000:1234")])
def test_random_trees_agree_with_docker(
    engine: Engine, base_image: str, session: SmokeSession, seed: int, user: str
) -> None:
    script, paths = random_tree(seed)
    reference = f"imagecascade-test/smoke-tree-{uuid.uuid4().hex[:10]}:{seed}"
    build(engine, f"ARG BASE_IMAGE\nFROM ${{BASE_IMAGE}}\nRUN {script}\nUSER {user}\n", base_image, reference)
    try:
        as_root = docker_truth(reference, paths, "0")
        as_user = docker_truth(reference, paths, user)
        text = "".join(f'[[files]]\npath = "{path}"\nexists = false\n' for path in paths)
        existence = check(engine, session, reference, text)
        text = "".join(f'[[files]]\npath = "{path}"\nexecutable = true\n' for path in paths)
        execution = check(engine, session, reference, text)
        for path in paths:
            exists, _ = as_root[path]
            assert (existence[f"file {path}"][0] == "fail") == exists, (path, existence[f"file {path}"])
            _, executable = as_user[path]
            assert (execution[f"file {path}"][0] == "pass") == executable, (path, execution[f"file {path}"])
    finally:
        engine.remove_image(reference, force=True)

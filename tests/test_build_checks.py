"""What `invoke plan` and `invoke cascade` check before anything is built, as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from image_repo import write_file, write_image
from test_tasks_core import invoke

from imagecascade.core.build_checks import looks_like_credential

WIRED = "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n"


def one_image(root: Path, dockerfile: str, files: dict[str, str | bytes] | None = None) -> Path:
    write_file(root / "cascade.toml", "")
    return write_image(root, "app", 'base = "127.0.0.1:5000/base:1"\n', files, dockerfile=dockerfile)


def test_buildkit_only_syntax_is_refused_for_the_classic_builder_in_plan(tmp_path: Path) -> None:
    folder = one_image(tmp_path, WIRED + "RUN --mount=type=cache,target=/root/.cache pip --version\n")
    expected = (
        f"{folder / 'Dockerfile'}: line 3: RUN --mount needs BuildKit, but the classic builder was chosen"
    )
    done = invoke(tmp_path, "plan", "--offline", "--builder", "classic")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"cannot build: {expected}" in " ".join(done.stdout.split())
    document = json.loads(invoke(tmp_path, "plan", "--offline", "--json", "--builder", "classic").stdout)
    (refusal,) = document["images"][0]["cannot_build"]
    assert refusal["reason"].startswith(expected) and refusal["fix"] == "build with --builder buildkit"
    # PATH's docker here is Debian's CLI 20.10, which drives BuildKit: `auto` builds RUN --mount.
    document = json.loads(invoke(tmp_path, "plan", "--offline", "--json").stdout)
    assert document["images"][0]["cannot_build"] == []
    assert not (tmp_path / "images.lock.json").exists()


@pytest.mark.engine
@pytest.mark.parametrize("command", [("cascade",), ("build-app",)])
def test_buildkit_only_syntax_is_refused_up_front_for_the_classic_builder(
    tmp_path: Path, command: tuple[str, ...], engine: object
) -> None:
    folder = one_image(tmp_path, WIRED + "RUN --mount=type=cache,target=/root/.cache pip --version\n")
    done = invoke(tmp_path, *command, "--builder", "classic")
    assert done.returncode == 2, done.stdout + done.stderr
    refused = [line for line in done.stdout.splitlines() if line.startswith("app: cannot build: ")]
    assert refused == [
        f"app: cannot build: {folder / 'Dockerfile'}: line 3: RUN --mount needs BuildKit, but the classic "
        'builder was chosen (--builder classic or [build] builder = "classic"); '
        "fix: build with --builder buildkit"
    ]
    assert "building" not in done.stdout
    assert not (tmp_path / "images.lock.json").exists()


def test_the_hook_and_hashes_still_hash_such_a_dockerfile(tmp_path: Path) -> None:
    one_image(tmp_path, WIRED + "COPY --link a /a\n", {"a": "a"})
    assert invoke(tmp_path, "hashes", "--write").returncode == 0
    assert invoke(tmp_path, "hashes", "--check").returncode == 0


@pytest.mark.parametrize(
    ("files", "reason"),
    [
        ({}, "it does not exist in the build context"),
        ({"conf/app.toml": "x", ".dockerignore": "conf\n"}, "it is left out by"),
    ],
)
def test_a_copy_source_that_is_not_sent_is_refused_with_its_line(
    tmp_path: Path, files: dict[str, str | bytes], reason: str
) -> None:
    folder = one_image(tmp_path, WIRED + "COPY ./conf/app.toml /etc/app.toml\n", files)
    done = invoke(tmp_path, "plan", "--offline")
    assert done.returncode == 2
    assert done.stderr.startswith(
        f"error: {folder / 'Dockerfile'}: line 3: COPY source './conf/app.toml' is not sent"
    )
    assert reason in done.stderr


def test_credential_files_are_a_warning_then_an_error_and_excluded_ones_are_nothing(tmp_path: Path) -> None:
    folder = one_image(
        tmp_path, WIRED + "COPY . /app\n", {".env": "TOKEN=1", "keys/deploy.pem": "k", "ok.txt": "x"}
    )
    done = invoke(tmp_path, "plan", "--offline")
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning: ")]
    assert warnings == [
        "warning: app: images/app/.env looks like a credential and is sent to the build "
        "(exclude it in .dockerignore)",
        "warning: app: images/app/keys/deploy.pem looks like a credential and is sent to the build "
        "(exclude it in .dockerignore)",
    ]
    assert "TOKEN" not in done.stdout + done.stderr

    write_file(tmp_path / "cascade.toml", '[build]\nsecret_files = "error"\n')
    done = invoke(tmp_path, "plan", "--offline")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: app: images/app/.env looks like a credential and is sent to the build (exclude it in "
        '.dockerignore); [build] secret_files = "error" in cascade.toml'
    ]

    write_file(folder / ".dockerignore", ".env\n**/*.pem\n")  # `*.pem` would miss keys/deploy.pem
    done = invoke(tmp_path, "plan", "--offline")
    assert done.returncode == 0 and "warning" not in done.stderr
    assert invoke(tmp_path, "hashes", "--write").returncode == 0
    recorded = json.loads((tmp_path / "images.lock.json").read_text())["images"]["app"]["files"]
    assert ".env" not in recorded and "keys/deploy.pem" not in recorded and "ok.txt" in recorded


def test_a_bad_secret_files_setting_is_one_line(tmp_path: Path) -> None:
    one_image(tmp_path, WIRED)
    write_file(tmp_path / "cascade.toml", '[build]\nsecret_files = "ignore"\n')
    done = invoke(tmp_path, "plan", "--offline")
    assert done.returncode == 2
    assert (
        done.stderr.strip()
        == f'error: {tmp_path / "cascade.toml"}: build.secret_files must be "warn" or "error"'
    )


@pytest.mark.parametrize(
    ("path", "credential"),
    [
        (".env", True),
        ("config/.env.production", True),
        (".env.example", False),
        ("certs/server.pem", True),
        ("tls.key", True),
        ("id_rsa", True),
        ("id_rsa.pub", False),
        ("home/.ssh/id_ed25519", True),
        ("gcp/credentials.json", True),
        (".netrc", True),
        (".git-credentials", True),
        ("root/.docker/config.json", True),
        ("config.json", False),
        ("bundle.p12", True),
        ("README.md", False),
        ("environment.py", False),
    ],
)
def test_what_looks_like_a_credential(path: str, credential: bool) -> None:
    assert looks_like_credential(path) is credential


def test_names_that_are_not_utf8_go_through_plan_hashes_and_the_hook(tmp_path: Path) -> None:
    name = os.fsdecode(b"caf\xe9.txt")
    one_image(tmp_path, WIRED + "COPY . /app\n")
    (tmp_path / "images/app" / name).write_text("x")
    for command in (
        ("plan", "--offline"),
        ("plan", "--json", "--offline"),
        ("hashes", "--write"),
        ("hashes",),
    ):
        done = invoke(tmp_path, *command)
        assert done.returncode == 0, (command, done.stderr)
        assert "Traceback" not in done.stderr
    recorded = json.loads((tmp_path / "images.lock.json").read_text(encoding="utf-8"))["images"]["app"][
        "files"
    ]
    assert name in recorded  # JSON keeps the bytes as \udcXX escapes; reading it back gives the name
    (tmp_path / "images/app" / name).write_text("changed")
    done = invoke(tmp_path, "hashes", "--check")
    assert done.returncode == 1 and "changed caf\\xe9.txt" in done.stdout
    hook = subprocess.run(
        [sys.executable, "-m", "imagecascade.core.hook", "--root", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert hook.returncode == 1 and "Traceback" not in hook.stderr

"""Secret sources (`--secret`, cascade.local.toml), their declaration in image.toml, masking, settings."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from imagecascade.core.declaration import load_image
from imagecascade.core.plan import compute_plan
from imagecascade.core.secrets import (
    MASK,
    Redactor,
    SecretSource,
    load_local_secrets,
    parse_secret_flag,
    parse_secret_flags,
)
from imagecascade.core.settings import load_settings
from imagecascade.errors import ConfigError
from tests.image_repo import write_file, write_image


@pytest.mark.parametrize(
    ("flag", "kind", "location"),
    [
        ("id=tok,src=/run/tok", "file", "/run/tok"),
        ("id=tok,source=/run/tok", "file", "/run/tok"),
        ("src=/run/tok,id=tok", "file", "/run/tok"),
        ("id=tok,src=rel/tok", "file", "/work/rel/tok"),
        ("id=tok,env=TOKEN", "env", "TOKEN"),
        ("type=env,id=tok", "env", "tok"),
        ("type=file,id=tok,src=/t", "file", "/t"),
    ],
)
def test_secret_flags_in_dockers_syntax(flag: str, kind: str, location: str) -> None:
    source = parse_secret_flag(flag, Path("/work"))
    assert (source.id, source.kind, source.location, source.origin) == ("tok", kind, location, "--secret")


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("src=/t", "missing id="),
        ("id=tok", "say where the value is"),
        ("id=tok,src=/a,env=B", "either src= or env="),
        ("id=tok,type=ssh,src=/a", "type must be file or env"),
        ("id=tok,type=env,src=/a", "does not go with src="),
        ("id=tok,mode=0400,src=/a", "bad field 'mode=0400'"),
        ("id=tok,src", "bad field 'src'"),
        ("id=bad id,src=/a", "secret id 'bad id'"),
        ("id=tok,id=other,src=/a", "id is given twice"),
    ],
)
def test_bad_secret_flags_are_one_line_naming_the_flag(flag: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        parse_secret_flag(flag, Path("/work"))
    assert str(error.value).startswith(f"--secret {flag}: ") and "\n" not in str(error.value)


def test_a_secret_id_given_twice_is_refused() -> None:
    with pytest.raises(ConfigError, match="secret tok is given twice"):
        parse_secret_flags(["id=tok,src=/a", "id=tok,env=B"], Path("/"))


def git(root: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.email=t@example.invalid", "-c", "user.name=t", *args],
        cwd=root,
        check=True,
        capture_output=True,
    )


def test_local_secrets_file(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    write_file(tmp_path / ".gitignore", "cascade.local.toml\n")
    write_file(
        tmp_path / "cascade.local.toml",
        '[secrets]\npip_conf = "conf/pip.conf"\nca_bundle = { src = "~/ca.pem" }\n'
        'token = { env = "TOKEN" }\n',
    )
    sources = load_local_secrets(tmp_path)
    assert sources["pip_conf"] == SecretSource(
        id="pip_conf", kind="file", location=str(tmp_path / "conf/pip.conf"), origin="cascade.local.toml"
    )
    assert sources["ca_bundle"].location == str(Path("~/ca.pem").expanduser())
    assert (sources["token"].kind, sources["token"].location) == ("env", "TOKEN")
    assert load_local_secrets(tmp_path / "nowhere") == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[secrets]\ntoken = 3\n", "secrets.token: must be"),
        ('[secrets]\ntoken = { src = "a", env = "B" }\n', "secrets.token: must be"),
        ('[secrets]\ntoken = { path = "a" }\n', "secrets.token: must be"),
        ('[secrets]\ntoken = { env = "" }\n', "env must be a non-empty string"),
        ('[other]\nx = "y"\n', r"unknown section \[other\]"),
        ("[secrets\n", "invalid TOML"),
    ],
)
def test_bad_local_secrets_files(tmp_path: Path, text: str, message: str) -> None:
    write_file(tmp_path / "cascade.local.toml", text)
    with pytest.raises(ConfigError, match=message) as error:
        load_local_secrets(tmp_path)
    assert str(error.value).startswith(str(tmp_path / "cascade.local.toml"))


def test_a_committed_local_secrets_file_is_refused(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    write_file(tmp_path / "cascade.local.toml", '[secrets]\ntoken = "/t"\n')
    git(tmp_path, "add", "cascade.local.toml")
    with pytest.raises(ConfigError, match="is committed to git"):
        load_local_secrets(tmp_path)


def test_source_problems(tmp_path: Path) -> None:
    present = tmp_path / "present"
    present.write_text("value")
    file_source = SecretSource(id="a", kind="file", location=str(present), origin="--secret")
    missing = SecretSource(id="a", kind="file", location=str(tmp_path / "missing"), origin="--secret")
    env_source = SecretSource(id="a", kind="env", location="TOKEN", origin="--secret")
    assert file_source.problem({}) is None
    assert missing.problem({}) == f"file {tmp_path / 'missing'} does not exist"
    assert env_source.problem({"TOKEN": ""}) is None
    assert env_source.problem({}) == "environment variable TOKEN is not set"
    assert file_source.cli_value() == f"id=a,src={present}"
    assert env_source.cli_value() == "id=a,env=TOKEN"


def test_the_redactor_masks_values_and_their_longer_lines() -> None:
    redact = Redactor([b"s3cr3t-token-value\n", b"[global]\nindex-url = https://u:pw@index.example/simple\n"])
    assert redact("token: s3cr3t-token-value!") == f"token: {MASK}!"
    assert redact("Looking in index-url = https://u:pw@index.example/simple") == f"Looking in {MASK}"
    # A short line of a multi-line secret alone is not masked everywhere.
    assert redact("[global] section") == "[global] section"
    assert not Redactor([])


def test_declared_secrets_and_the_dockerfile_mounts(tmp_path: Path) -> None:
    dockerfile = (
        "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n"
        "RUN --mount=type=secret,id=pip_conf --mount=type=secret,id=token,required=true true\n"
    )
    folder = write_image(
        tmp_path, "app", 'base = "b:1"\nsecrets = ["pip_conf", "token"]\n', dockerfile=dockerfile
    )
    spec = load_image(folder, tmp_path)
    assert spec.secrets == ("pip_conf", "token") and spec.required_secrets == ("token",)
    (folder / "image.toml").write_text('base = "b:1"\nsecrets = ["pip_conf"]\nrequired_secrets = ["token"]\n')
    spec = load_image(folder, tmp_path)
    assert spec.secrets == ("pip_conf", "token") and spec.required_secrets == ("token",)


@pytest.mark.parametrize(
    ("toml", "dockerfile_line", "message"),
    [
        (
            'secrets = ["pip_conf"]',
            "RUN --mount=type=secret,id=token true",
            r"Dockerfile: line 3: mounts secret 'token'",
        ),
        ('secrets = "pip_conf"', "RUN true", "secrets must be a list of secret ids"),
        ('secrets = ["a", "a"]', "RUN true", "secrets names 'a' twice"),
        ('secrets = ["bad id"]', "RUN true", "secret id 'bad id'"),
        ("required_secrets = [1]", "RUN true", "required_secrets must be a list"),
    ],
)
def test_bad_secret_declarations(tmp_path: Path, toml: str, dockerfile_line: str, message: str) -> None:
    dockerfile = f"ARG BASE_IMAGE\nFROM ${{BASE_IMAGE}}\n{dockerfile_line}\n"
    folder = write_image(tmp_path, "app", f'base = "b:1"\n{toml}\n', dockerfile=dockerfile)
    with pytest.raises(ConfigError, match=message):
        load_image(folder, tmp_path)


def test_secret_values_and_declarations_never_move_the_hash(tmp_path: Path) -> None:
    dockerfile = "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN --mount=type=secret,id=token true\n"
    write_image(tmp_path, "app", 'base = "b:1"\nsecrets = ["token"]\n', dockerfile=dockerfile)
    secret = tmp_path / "token"
    secret.write_text("s3cr3t-one")
    settings = load_settings(tmp_path).with_overrides(
        secrets=parse_secret_flags([f"id=token,src={secret}"], tmp_path)
    )
    first = compute_plan(settings, use_cache=False).get("app")
    secret.write_text("s3cr3t-two, rotated")
    again = compute_plan(settings, use_cache=False).get("app")
    without = compute_plan(load_settings(tmp_path), use_cache=False).get("app")
    assert first.hash == again.hash == without.hash
    assert "s3cr3t" not in str(first.lock_entry()) and "token" not in str(first.lock_entry())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[build]\nbuilder = "kaniko"\n', "unknown builder 'kaniko'"),
        ("[build]\ndocker_cli = 3\n", "build.docker_cli must be a string"),
        ('[cloudbuild]\nsecrets = "x"\n', "cloudbuild.secrets must be a table"),
        (
            '[cloudbuild.secrets]\ntok = "my-secret"\n',
            r"cloudbuild.secrets.tok must be a Secret Manager version",
        ),
    ],
)
def test_bad_build_settings(tmp_path: Path, text: str, message: str) -> None:
    write_file(tmp_path / "cascade.toml", text)
    with pytest.raises(ConfigError, match=message):
        load_settings(tmp_path)


def test_build_settings(tmp_path: Path) -> None:
    write_file(
        tmp_path / "cascade.toml",
        '[build]\nbuilder = "buildkit"\ndocker_cli = "/usr/bin/docker"\n'
        '[cloudbuild.secrets]\npip_conf = "projects/p/secrets/pip-conf/versions/latest"\n',
    )
    settings = load_settings(tmp_path)
    assert (settings.builder, settings.docker_cli) == ("buildkit", "/usr/bin/docker")
    assert settings.cloudbuild_secrets == {"pip_conf": "projects/p/secrets/pip-conf/versions/latest"}
    assert settings.with_overrides(builder="classic").builder == "classic"
    with pytest.raises(ConfigError, match="--builder: unknown builder 'fast'"):
        settings.with_overrides(builder="fast")

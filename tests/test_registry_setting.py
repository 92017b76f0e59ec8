"""`[registry] url` and `--registry` are checked up front against Docker's reference grammar:
one line naming where the value came from, exit 2, before anything is built."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

from imagecascade.core.settings import Settings, check_registry, load_settings
from imagecascade.errors import ConfigError

CASES = [
    ("127.0.0.1:5000/team", True),
    ("127.0.0.1:5000", True),
    ("localhost:5000/a/b", True),
    ("us-docker.pkg.dev/my-project/images", True),
    ("Registry.Example.com:443/team", True),  # a host may have capitals
    ("myorg", True),  # a Docker Hub namespace
    ("a/b__c/d-e/f.g", True),
    ("127.0.0.1:5000/Team", False),
    ("ghcr.io/Org/images", False),
    ("http://127.0.0.1:5000/team", False),
    ("127.0.0.1:5000/my team", False),
    ("127.0.0.1:5000//team", False),
    ("127.0.0.1:5000/team-", False),
    ("127.0.0.1:port/team", False),
]


@pytest.mark.parametrize(("value", "valid"), CASES)
def test_the_registry_follows_dockers_reference_grammar(value: str, valid: bool) -> None:
    assert check_registry("", "--registry") == ""  # not configured
    if valid:
        assert check_registry(value, "--registry") == value
    else:
        with pytest.raises(ConfigError, match=r"^--registry: "):
            check_registry(value, "--registry")


def test_cascade_toml_and_the_flag_name_themselves(tmp_path: Path) -> None:
    (tmp_path / "cascade.toml").write_text('[registry]\nurl = "127.0.0.1:5000/Trial"\n')
    with pytest.raises(ConfigError) as raised:
        load_settings(tmp_path)
    assert str(raised.value).startswith(f"{tmp_path / 'cascade.toml'}: registry.url: '127.0.0.1:5000/Trial'")
    assert "must be lowercase" in str(raised.value)
    with pytest.raises(ConfigError, match=r"^--registry: 'http://x/y': write the registry without a scheme"):
        Settings(root=tmp_path).with_overrides(registry="http://x/y")


@pytest.mark.engine
def test_docker_agrees_on_every_case(engine: object, base_image: str) -> None:
    """The docker CLI as the oracle: `docker tag` accepts exactly the values we accept."""
    suffix = uuid.uuid4().hex[:8]
    for value, valid in CASES:
        reference = f"{value}/imagecascade-probe-{suffix}:t"
        tagged = subprocess.run(["docker", "tag", base_image, reference], capture_output=True, text=True)
        try:
            assert (tagged.returncode == 0) == valid, (value, tagged.stderr)
        finally:
            if tagged.returncode == 0:
                subprocess.run(["docker", "rmi", reference], capture_output=True, check=True)

"""Downloaded artifacts, declared by `[[artifacts]]` in image.toml and pinned like bases.

```toml
[[artifacts]]
name = "gcloud-cli"
url = "https://dl.google.com/dl/cloudsdk/channels/rapid/downloads/google-cloud-cli-${GCLOUD_VERSION}-linux-x86_64.tar.gz"
sha256_build_arg = "GCLOUD_SHA256"   # the build arg the Dockerfile checks the download against
```

The URL is a template over the image's build args (`${NAME}` or `$NAME`). The SHA-256 lives in
`[build_args]` (so it is part of the freshness hash): empty means unpinned, and an image with an
unpinned artifact cannot be built (`imagecascade.core.refusals`); `invoke upstream` downloads the
file where the network reaches it and records its SHA-256. Pure: reading and checking only.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from imagecascade.core.tables import array_of_tables
from imagecascade.errors import ConfigError

_KEYS = ("name", "url", "sha256_build_arg")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Artifact:
    """One file the image downloads while it builds, checked against a SHA-256 build arg."""

    name: str
    url: str  # the template, as declared
    sha256_build_arg: str

    def render(self, build_args: Mapping[str, str]) -> str:
        """The URL with the build args filled in (every variable was checked to be one)."""
        return _VARIABLE.sub(lambda match: build_args[match.group(1) or match.group(2)], self.url)

    def sha256(self, build_args: Mapping[str, str]) -> str:
        """The recorded SHA-256 (lower-case hex), or "" while unpinned."""
        return build_args.get(self.sha256_build_arg, "").strip()


def parse_artifacts(raw: Any, build_args: Mapping[str, str], where: str) -> tuple[Artifact, ...]:
    """Check `[[artifacts]]` against the image's build args; `where` prefixes every error.

    Each URL variable must be a build arg (not the checksum itself); the checksum's build arg
    must be declared in `[build_args]`, empty or 64 lower-case hex digits.
    """
    found: list[Artifact] = []
    for at, item in array_of_tables(raw, _KEYS, where, "artifacts"):
        values = {}
        for key in _KEYS:
            value = item.get(key)
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"{at}: {key} must be a non-empty string")
            values[key] = value
        name, url, arg = values["name"], values["url"], values["sha256_build_arg"]
        if not _NAME.match(name):
            raise ConfigError(f"{at}: name {name!r} must be lower-case letters, digits, '.', '_' or '-'")
        if any(other.name == name for other in found):
            raise ConfigError(f"{at}: a second artifact named {name!r}")
        if not url.startswith(("https://", "http://")):
            raise ConfigError(f"{at}: url {url!r} must be an http(s) URL")
        for match in _VARIABLE.finditer(url):
            variable = match.group(1) or match.group(2)
            if variable == arg:
                raise ConfigError(f"{at}: url uses ${{{variable}}}, the artifact's own checksum")
            if variable not in build_args:
                raise ConfigError(f"{at}: url uses ${{{variable}}}, which is not in [build_args]")
        if arg not in build_args:
            raise ConfigError(
                f"{at}: sha256_build_arg {arg}: declare build_args.{arg} "
                '(write it empty, `""`, until `invoke upstream` records the checksum)'
            )
        value = build_args[arg].strip()
        if value and not _SHA256.match(value):
            raise ConfigError(
                f"{at}: build_args.{arg} must be empty or a SHA-256 (64 lower-case hex digits), not {value!r}"
            )
        found.append(Artifact(name=name, url=url, sha256_build_arg=arg))
    return tuple(found)

"""Downloaded artifacts' checksums: fetch each `[[artifacts]]` URL and compute its SHA-256.

The download streams through sha256 and is never stored. A 404 or 410 means the URL names no
file (a wrong version in the template): a ConfigError. Anything else that stops the download
(no route, refused, TLS, a 5xx, a cut body) is a BackendError: never taken as a checksum.
"""

from __future__ import annotations

import dataclasses
import hashlib
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path

from imagecascade.core.declaration import ImageSpec
from imagecascade.errors import BackendError, ConfigError

CHUNK = 1 << 20
TIMEOUT_SECONDS = 60.0

Fetch = Callable[[str], str]  # URL -> sha256 hex of what it serves


def download_sha256(url: str, *, timeout: float = TIMEOUT_SECONDS) -> str:
    """The SHA-256 (hex) of the body `url` serves; follows redirects.

    Raises ConfigError when the server says there is no such file (404, 410), BackendError for
    every other failure to get the whole body.
    """
    request = urllib.request.Request(url, headers={"User-Agent": "imagecascade-upstream"})
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            expected = answer.headers.get("Content-Length")
            size = 0
            while chunk := answer.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
    except urllib.error.HTTPError as error:
        if error.code in (404, 410):
            raise ConfigError(
                f"{url}: answered {error.code}: no such file (check the URL's build args)"
            ) from error
        raise BackendError(f"{url}: answered {error.code} {error.reason}") from error
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise BackendError(f"{url}: cannot download it: {reason}") from error
    if expected is not None and expected.isdigit() and int(expected) != size:
        raise BackendError(f"{url}: the download stopped after {size} of {expected} bytes")
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True, kw_only=True)
class ArtifactPin:
    """One artifact's recorded SHA-256 against what its URL serves now."""

    image: str
    declaration: Path
    name: str
    url: str
    key: str  # the build arg that holds the SHA-256
    current: str  # as recorded; "" when unpinned
    latest: str  # what the URL serves now

    @property
    def state(self) -> str:
        """`current`, `unpinned` (no checksum yet) or `changed` (the file at the URL is different)."""
        if not self.current:
            return "unpinned"
        return "current" if self.current == self.latest else "changed"

    def describe(self) -> str:
        old = f"sha256:{self.current[:12]}" if self.current else "unpinned"
        note = " (a different file at the same URL: find out why before trusting it)"
        return (
            f"{self.image}: artifact {self.name} {old} → sha256:{self.latest[:12]}"
            + (note if self.state == "changed" else "")
            + f" ({self.url})"
        )


def artifact_pins(specs: Mapping[str, ImageSpec], fetch: Fetch = download_sha256) -> list[ArtifactPin]:
    """One entry per declared artifact, each downloaded once to learn its SHA-256."""
    pins = []
    for spec in specs.values():
        for artifact in spec.artifacts:
            url = artifact.render(spec.build_args)
            pins.append(
                ArtifactPin(
                    image=spec.name,
                    declaration=spec.declaration_path,
                    name=artifact.name,
                    url=url,
                    key=artifact.sha256_build_arg,
                    current=artifact.sha256(spec.build_args),
                    latest=fetch(url),
                )
            )
    return pins

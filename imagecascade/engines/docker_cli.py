"""The docker CLI, asked what it can build with: buildx, the built-in BuildKit client, or neither.

BuildKit is driven through the CLI users have: `docker buildx build` when the buildx plugin
answers, otherwise `DOCKER_BUILDKIT=1 docker build` on CLIs older than 23, which still carry the
built-in BuildKit client (CLI 23 and later hand `docker build` to buildx, or fall back to the
classic builder without it). The CLI is `IMAGECASCADE_DOCKER_CLI`, else `[build] docker_cli`,
else `docker` on PATH.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from typing import Literal

from imagecascade.core.buildkit_syntax import FrontendSupport, Version
from imagecascade.errors import ConfigError

ENV_CLI = "IMAGECASCADE_DOCKER_CLI"
PROBE_TIMEOUT = 30
_VERSION = re.compile(r"(\d+)\.(\d+)")
# Docker Engine release -> the BuildKit it vendors (moby's vendor.mod at each release).
_ENGINE_BUILDKIT: tuple[tuple[Version, Version], ...] = (
    ((18, 9), (0, 3)),
    ((19, 3), (0, 6)),
    ((20, 10), (0, 8)),
    ((23, 0), (0, 10)),
    ((24, 0), (0, 11)),
    ((25, 0), (0, 12)),
    ((26, 0), (0, 13)),
    ((27, 0), (0, 14)),
    ((28, 0), (0, 20)),
)

Driver = Literal["buildx", "builtin", "none"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class DockerCli:
    """One docker CLI and what it can drive."""

    path: str
    client_version: str
    server_version: str  # "" when the engine did not answer
    driver: Driver  # how it drives BuildKit; "none": it cannot
    buildkit_version: str = ""  # of the builder buildx uses, when it says
    rawjson: bool = False  # buildx takes --progress=rawjson

    @property
    def can_buildkit(self) -> bool:
        return self.driver != "none"

    def frontend(self) -> FrontendSupport:
        """What the Dockerfile frontend of this CLI's BuildKit knows (version None when unknown)."""
        if self.driver == "buildx":
            buildkit = parse_version(self.buildkit_version)
            describe = (
                f"Dockerfile frontend of the buildx builder's BuildKit {self.buildkit_version}"
                if buildkit
                else "Dockerfile frontend of the buildx builder"
            )
            return FrontendSupport(
                builder="buildkit",
                frontend=_frontend_of(buildkit) if buildkit else None,
                describe=describe,
                remedy="use a buildx builder with a newer BuildKit (docker buildx create --use)",
            )
        engine = parse_version(self.server_version)
        buildkit = _engine_buildkit(engine) if engine else None
        return FrontendSupport(
            builder="buildkit",
            frontend=_frontend_of(buildkit) if buildkit else None,
            describe=f"built-in Dockerfile frontend of Docker Engine {self.server_version}",
            remedy="build on a newer Docker Engine, or with a buildx builder that has a newer BuildKit",
        )

    def describe(self) -> str:
        how = {
            "buildx": "docker buildx build",
            "builtin": "DOCKER_BUILDKIT=1 docker build",
            "none": "no BuildKit: no buildx plugin, and CLI 23 or later drives BuildKit only through buildx",
        }[self.driver]
        return f"docker CLI {self.path} {self.client_version} ({how})"


def parse_version(text: str) -> Version | None:
    match = _VERSION.search(text)
    return (int(match.group(1)), int(match.group(2))) if match else None


def _engine_buildkit(engine: Version) -> Version | None:
    found = None
    for release, buildkit in _ENGINE_BUILDKIT:
        if engine >= release:
            found = buildkit
    return found


def _frontend_of(buildkit: Version) -> Version:
    """BuildKit 0.N vendors Dockerfile frontend 1.(N-6) from 0.8 (frontend 1.2) on."""
    if buildkit < (0, 8):
        return (1, 0) if buildkit >= (0, 3) else (0, 0)
    return (1, buildkit[1] - 6)


def cli_path(setting: str, environ: Mapping[str, str]) -> str | None:
    """The CLI to use: IMAGECASCADE_DOCKER_CLI, then `[build] docker_cli`, then `docker` on PATH.

    A configured CLI that does not exist is a ConfigError; None when none is configured and PATH
    has no `docker`.
    """
    chosen = environ.get(ENV_CLI) or setting
    if not chosen:
        return shutil.which("docker", path=environ.get("PATH"))
    found = shutil.which(chosen, path=environ.get("PATH")) if os.sep not in chosen else chosen
    if found is None or not os.access(found, os.X_OK):
        origin = ENV_CLI if environ.get(ENV_CLI) else "[build] docker_cli"
        raise ConfigError(f"{origin}: docker CLI {chosen!r} does not exist or is not executable")
    return found


def _run(command: list[str], environ: Mapping[str, str]) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT,
            env=dict(environ),
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None


def probe(path: str, environ: Mapping[str, str]) -> DockerCli:
    """Ask the CLI at `path` its version, its engine's version and whether buildx answers."""
    done = _run([path, "version", "--format", "{{json .}}"], environ)
    client = server = ""
    if done is not None and done.stdout.strip():
        try:
            data = json.loads(done.stdout.strip().splitlines()[0])
        except json.JSONDecodeError:
            data = {}
        client = str((data.get("Client") or {}).get("Version") or "")
        server = str((data.get("Server") or {}).get("Version") or "")
    buildx = _run([path, "buildx", "version"], environ)
    if buildx is not None and buildx.returncode == 0 and "buildx" in buildx.stdout.lower():
        help_text = _run([path, "buildx", "build", "--help"], environ)
        inspect = _run([path, "buildx", "inspect"], environ)
        buildkit = ""
        if inspect is not None and inspect.returncode == 0:
            match = re.search(r"(?im)^\s*build\s*kit(?: version)?:\s*(v?[\d.]+\S*)", inspect.stdout)
            buildkit = match.group(1) if match else ""
        return DockerCli(
            path=path,
            client_version=client,
            server_version=server,
            driver="buildx",
            buildkit_version=buildkit,
            rawjson=help_text is not None and "rawjson" in help_text.stdout,
        )
    version = parse_version(client)
    engine = parse_version(server)
    builtin = version is not None and (18, 9) <= version < (23, 0) and (engine is None or engine >= (18, 9))
    return DockerCli(
        path=path, client_version=client, server_version=server, driver="builtin" if builtin else "none"
    )

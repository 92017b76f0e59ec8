"""Which builder and which Dockerfile frontend a Dockerfile needs, decided before building.

The features come from `dockerfile.buildkit_features` (BuildKit's own parser; what the classic
builder cannot build). This module adds the first Dockerfile frontend release that knows each
one, from BuildKit's frontend changelog (frontend/dockerfile/docs/reference.md and the
`docker/dockerfile` release notes): `RUN --mount` and octal `COPY --chmod` 1.2, `RUN --network`
1.3, heredocs, `COPY --link` and tmpfs `size=` 1.4, `ADD --checksum` and `--keep-git-dir` 1.6,
symbolic `--chmod` and secret mounts with `env=` 1.10; `COPY --parents`, `--exclude` and
`RUN --security`/`--device` only in the `-labs` frontend. A BuildKit's built-in frontend is the one
it vendors: frontend 1.N ships with BuildKit 0.N+6 (Docker Engine 20.10: BuildKit 0.8, frontend 1.2).

`refusal` says whether a builder (`FrontendSupport`) can build a Dockerfile: the classic builder
none of these, a BuildKit only what its frontend knows. A `# syntax=` directive is refused with
BuildKit: it makes BuildKit fetch a frontend image from a registry at build time, which no
freshness hash covers and which fails offline.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from imagecascade.core.dockerfile import BuildKitFeature, Dockerfile, Instruction, buildkit_features
from imagecascade.core.refusals import Refusal

Version = tuple[int, int]
LABS: Version = (99, 0)  # only the `docker/dockerfile:*-labs` frontend, fetched with `# syntax=`
# A feature Engine 20.10's frontend does not read and this table does not know yet.
_NEWER_THAN_20_10: Version = (1, 3)

# Feature name (without an ONBUILD prefix) -> the first frontend that reads it.
_FRONTEND: dict[str, Version] = {
    "RUN --mount": (1, 2),
    "COPY --chmod": (1, 2),
    "ADD --chmod": (1, 2),
    "RUN --network": (1, 3),
    "COPY --link": (1, 4),
    "ADD --link": (1, 4),
    "ADD --checksum": (1, 6),
    "ADD --keep-git-dir": (1, 6),
    "RUN --security": LABS,
    "RUN --device": LABS,
    "COPY --parents": LABS,
    "COPY --exclude": LABS,
    "ADD --exclude": LABS,
}
# RUN --mount options added after `--mount` itself.
_MOUNT_OPTIONS: dict[tuple[str, str], Version] = {("secret", "env"): (1, 10), ("tmpfs", "size"): (1, 4)}


@dataclasses.dataclass(frozen=True, kw_only=True)
class FrontendSupport:
    """What the chosen builder can build.

    `frontend` is the Dockerfile frontend version of a BuildKit builder, None when it is not
    known (then only the `# syntax=` rule applies); `describe` names it in messages, `remedy`
    says how to get one that can.
    """

    builder: Literal["classic", "buildkit"]
    frontend: Version | None
    describe: str
    remedy: str


@dataclasses.dataclass(frozen=True)
class SecretMount:
    id: str
    required: bool
    line: int


def version_text(version: Version) -> str:
    if version == LABS:
        return "the -labs Dockerfile frontend"
    return f"Dockerfile frontend {version[0]}.{version[1]} or newer"


def _mount_options(flag: str) -> dict[str, str]:
    options: dict[str, str] = {}
    for part in flag.partition("=")[2].split(","):
        key, _, value = part.partition("=")
        options[key.strip().lower()] = value.strip()
    return options


def _mounts(instruction: Instruction) -> list[dict[str, str]]:
    return [
        _mount_options(flag)
        for name, flag in zip(instruction.flag_names(), instruction.flags, strict=True)
        if name == "mount"
    ]


def needed(feature: BuildKitFeature, parsed: Dockerfile) -> tuple[str, Version]:
    """(the feature as shown, the first frontend that reads it)."""
    name = feature.feature.removeprefix("ONBUILD ")
    if name.endswith(" in FROM"):  # BuildKit's platform args: every BuildKit sets them
        return feature.feature, (1, 0)
    if name.startswith("heredoc in "):
        return feature.feature, (1, 4)
    version = _FRONTEND.get(name)
    if name in ("COPY --chmod", "ADD --chmod") and feature.needs == "newer-frontend":
        return f"{feature.feature} (symbolic)", (1, 10)
    if name == "RUN --mount":
        options: dict[str, Version] = {}
        for item in parsed.instructions:
            if item.line == feature.line and item.keyword == "RUN":
                for mount in _mounts(item):
                    kind = mount.get("type", "bind")
                    for key in mount:
                        if (kind, key) in _MOUNT_OPTIONS:
                            options[f"type={kind} with {key}="] = _MOUNT_OPTIONS[(kind, key)]
        if options:
            label, latest = max(options.items(), key=lambda pair: pair[1])
            return f"{feature.feature}={label}", latest
    if version is None:
        version = (1, 2) if feature.needs == "buildkit" else _NEWER_THAN_20_10
    return feature.feature, version


def secret_mounts(parsed: Dockerfile) -> list[SecretMount]:
    """Every `RUN --mount=type=secret`: its id (default: the target's file name) and `required`."""
    found: list[SecretMount] = []
    for item in parsed.instructions:
        if item.keyword != "RUN":
            continue
        for mount in _mounts(item):
            if mount.get("type") != "secret":
                continue
            target = mount.get("target") or mount.get("dst") or mount.get("destination") or ""
            secret_id = mount.get("id") or target.rstrip("/").rsplit("/", 1)[-1]
            required = mount.get("required", "false").lower() in ("", "true", "1")  # bare `required`
            found.append(SecretMount(secret_id, required, item.line))
    return found


def refusal(parsed: Dockerfile, support: FrontendSupport) -> Refusal | None:
    """Why `support` cannot build `parsed` (`FILE: line N: feature needs ...`) and the fix, or None."""
    if support.builder == "buildkit" and parsed.syntax is not None:
        value, line = parsed.syntax
        return Refusal(
            f"{parsed.source}: line {line}: `# syntax={value}` needs the frontend image {value} "
            "fetched from its registry at build time (outside the freshness hash, impossible offline)",
            f"remove the line to build with the {support.describe}",
        )
    for feature in buildkit_features(parsed):
        if support.builder == "classic":
            return Refusal(
                f"{parsed.source}: line {feature.line}: {feature.feature} needs BuildKit, "
                f"but {support.describe}",
                support.remedy,
            )
        shown, version = needed(feature, parsed)
        if support.frontend is not None and version > support.frontend:
            have = f"{support.frontend[0]}.{support.frontend[1]}"
            return Refusal(
                f"{parsed.source}: line {feature.line}: {shown} needs {version_text(version)}, "
                f"but the {support.describe} is {have}",
                support.remedy,
            )
    return None

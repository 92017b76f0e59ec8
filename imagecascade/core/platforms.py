"""Docker platforms (`os/arch[/variant]`) compared as containerd compares them.

Ported from containerd/platforms v1.0.0-rc.1, `database.go` (`normalizeOS`, `normalizeArch`):
names are lower-cased, `macos` is `darwin`, `x86_64`/`x86-64` are `amd64` (variant `v1` is
none), `aarch64` is `arm64` (variant `8`/`v8` is none), `i386` is `386`, `armhf` is `arm/v7`,
`armel` is `arm/v6`, and `arm` without a variant (or `7`) is `arm/v7`. Two platforms are the
same when their normalised os, architecture and variant are equal: an image whose config says
`linux/amd64` is what `platform = "linux/amd64"` declares, one that says `linux/arm64/v8` is
`linux/arm64`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any


@dataclasses.dataclass(frozen=True)
class Platform:
    """A normalised platform: `Platform("linux", "arm", "v7")`; str() is `linux/arm/v7`."""

    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        return "/".join(part for part in (self.os, self.architecture, self.variant) if part)


def normalize(os: str, architecture: str, variant: str = "") -> Platform:
    """The platform an image config's `Os`, `Architecture` and `Variant` (or a manifest list
    entry's `platform`) name, normalised; empty parts stay empty."""
    os = os.lower()
    if os == "macos":
        os = "darwin"
    architecture, variant = architecture.lower(), variant.lower()
    if architecture == "i386":
        architecture, variant = "386", ""
    elif architecture in ("x86_64", "x86-64", "amd64"):
        architecture = "amd64"
        variant = "" if variant == "v1" else variant
    elif architecture in ("aarch64", "arm64"):
        architecture = "arm64"
        variant = "" if variant in ("8", "v8") else variant
    elif architecture == "armhf":
        architecture, variant = "arm", "v7"
    elif architecture == "armel":
        architecture, variant = "arm", "v6"
    elif architecture == "arm":
        if variant in ("", "7"):
            variant = "v7"
        elif variant in ("5", "6", "8"):
            variant = "v" + variant
    return Platform(os, architecture, variant)


def parse(platform: str) -> Platform:
    """`linux/arm64/v8` -> Platform("linux", "arm64"). Raises ValueError for anything but
    two or three non-empty parts (a declaration's `platform` is checked for that form already)."""
    parts = platform.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise ValueError(f"platform {platform!r} is not of the form os/arch[/variant]")
    return normalize(*parts)


def platform_in(document: Mapping[str, Any]) -> Platform:
    """The platform an image config (`os`, `architecture`, `variant`), an engine's image inspect
    (`Os`, `Architecture`, `Variant`) or an index entry's `platform` names, normalised."""
    fields = {str(key).lower(): value for key, value in document.items()}
    return normalize(*(str(fields.get(key) or "") for key in ("os", "architecture", "variant")))

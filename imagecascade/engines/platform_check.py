"""Whether a built image is of the platform its image.toml declares, checked before any tag.

The hash records the declared platform, so an image of another one must never get the tag.
Two ways the engine makes one without failing, both measured on Docker Engine 20.10:

- the classic builder takes a local base of another platform as it is (`platform` reaches the
  engine, which neither pulls the declared one nor warns) and writes the base's platform into
  the image config; with `FROM scratch` it writes its own;
- BuildKit writes the requested platform into the config whatever it built on: when the local
  base is of another platform it asks the base's registry, and a single-platform image there is
  taken for any platform, so the config says linux/arm64 over linux/amd64 programs.

So the built image's config must name the declared platform, and the base (BASE_IMAGE) must be
of it: for the classic builder the local image it used; for BuildKit the local image when it is
of the declared platform (BuildKit uses it then), else what the base's registry offers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from imagecascade.core.platforms import Platform, parse
from imagecascade.errors import BackendError

if TYPE_CHECKING:
    from imagecascade.engines.engine import Engine
    from imagecascade.engines.registry import RegistryClient

Builder = Literal["classic", "buildkit"]


def platform_problem(
    engine: Engine,
    image_id: str,
    declared: str,
    base: str,
    *,
    builder: Builder,
    registry: RegistryClient | None = None,
) -> str:
    """Why image `image_id`, built on `base` (a reference) for the `declared` platform
    (`linux/arm64`), must not be tagged, as one line; "" when it may.

    Names what was declared, what the engine produced and the likely cause. For BuildKit, a base
    that is not in the local engine at the declared platform is looked up with `registry` (a
    registry that cannot be asked is a problem too: the image is never tagged unverified).
    """
    wanted = parse(declared)
    built = engine.inspect_image(image_id)
    if built is None:
        return f"the built image {image_id[:19]} is gone from the engine (removed meanwhile?)"
    local = engine.inspect_image(base) if base != "scratch" else None
    if built.platform != wanted:
        return (
            f"declared platform {wanted}, but the engine built {_shown(built.platform)}: "
            f"{_cause(builder, base, local.platform if local else None, built.platform, wanted)}"
        )
    if base == "scratch" or (local is not None and local.platform == wanted):
        return ""
    if builder == "classic":
        if local is None:
            return ""  # the classic builder pulled nothing and built from no local base: nothing to compare
        return (
            f"declared platform {wanted}, but its base {base} in the local engine is "
            f"{_shown(local.platform)}: the image config says {wanted}, the programs in it are "
            f"{_shown(local.platform)}; "
            f'make a {wanted} base available or declare platform = "{local.platform}"'
        )
    return _registry_problem(base, wanted, registry)


def _registry_problem(base: str, wanted: Platform, registry: RegistryClient | None) -> str:
    from imagecascade.engines.registry import ImageRef, RegistryClient

    image = ImageRef.parse(base)
    try:
        offered = (registry or RegistryClient()).image_platforms(image.repository, image.digest or image.tag)
    except BackendError as error:
        return f"declared platform {wanted}: cannot tell which platform its base {base} is ({error})"
    if offered is None:
        return f"declared platform {wanted}: cannot tell which platform its base {base} is (no such image)"
    if wanted in offered:
        return ""
    shown = ", ".join(_shown(platform) for platform in offered) or "no platform"
    declare = f'platform = "{offered[0]}"' if len(offered) == 1 else "the base's platform"
    return (
        f"declared platform {wanted}, but its base {base} is {shown} only: BuildKit takes a "
        f"single-platform base for any platform, so the image config would say {wanted} over "
        f"{shown} programs; push a {wanted} (or multi-platform) base or declare {declare}"
    )


def _cause(
    builder: Builder, base: str, base_platform: Platform | None, built: Platform | None, wanted: Platform
) -> str:
    if builder == "buildkit":
        return "BuildKit did not build for the requested platform"
    if base_platform is not None and base_platform != wanted:
        return (
            f"its base {base} in the local engine is {_shown(base_platform)}, and the classic builder builds "
            f"on a local base of another platform as it is, without pulling one for {wanted}; "
            f'make a {wanted} base available or declare platform = "{base_platform}"'
        )
    return (
        f"the classic builder makes images of {_shown(built)} here whatever the platform asked; "
        f'build with --builder buildkit or declare platform = "{built}"'
    )


def _shown(platform: Platform | None) -> str:
    return str(platform) if platform is not None and str(platform) else "an unnamed platform"

"""Why an image cannot be built as it stands, known before anything is built.

A refusal is a reason plus the fix. `invoke plan` shows them as `cannot build: <reason>`; the
cascade builds everything else, reports each refused image with its fix and blocks its
descendants. Refusals come from the declaration (`declaration_refusals`: an artifact without its
SHA-256, a required build arg that is empty) and may be added by whoever knows more at run time
(`Plan.with_refusals`: a backend that lacks a setting the image needs, a secret that is not
provided). Each reason is one line, free of
secret values.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from imagecascade.core.platforms import parse as parse_platform

if TYPE_CHECKING:  # declarations import this module's Refusal through their Dockerfile checks
    from imagecascade.core.declaration import ImageSpec


@dataclasses.dataclass(frozen=True)
class Refusal:
    """One reason an image cannot be built (`build arg X is empty`) and what fixes it."""

    reason: str
    fix: str

    def __str__(self) -> str:
        return self.reason


def declaration_refusals(spec: ImageSpec, root: Path, parent: ImageSpec | None = None) -> tuple[Refusal, ...]:
    """The refusals that follow from `spec` and its `parent`'s spec: a platform other than the
    parent's (an image is built on its parent, so it would be mislabelled), each unpinned artifact
    (its SHA-256 build arg is empty), then each other required build arg that is absent or blank."""
    declaration = _shown(spec.declaration_path, root)
    refusals = []
    if parent is not None and parse_platform(spec.platform) != parse_platform(parent.platform):
        refusals.append(
            Refusal(
                f"platform {spec.platform} differs from its parent {parent.name}'s {parent.platform} "
                "(it is built on its parent: the image would hold programs of another platform)",
                f"declare the same platform in {declaration} and {_shown(parent.declaration_path, root)}",
            )
        )
    for artifact in spec.unpinned_artifacts:
        refusals.append(
            Refusal(
                f"unpinned artifact {artifact.name} (build arg {artifact.sha256_build_arg} is empty)",
                f"run `invoke upstream` where {artifact.render(spec.build_args)} can be downloaded; "
                f"it records the SHA-256 in {declaration}",
            )
        )
    covered = {artifact.sha256_build_arg for artifact in spec.artifacts}
    for key in spec.required_build_args:
        value = spec.build_args.get(key)
        if key in covered:
            continue
        if value is None:
            state = "is not set"
        elif not value.strip():
            state = "is empty"
        else:
            continue
        refusals.append(Refusal(f"build arg {key} {state}", f"set build_args.{key} in {declaration}"))
    return tuple(refusals)


def describe(refusals: tuple[Refusal, ...]) -> str:
    """`cannot build: <reason>; <reason>`: the one line plan and cascade show."""
    return "cannot build: " + "; ".join(refusal.reason for refusal in refusals)


def _shown(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)

"""Freshness hashes: sha256 over a canonical encoding of everything that goes into an image."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from imagecascade.core.context import ContextEntry, scan_context
from imagecascade.core.declaration import ImageSpec
from imagecascade.core.digest_cache import DigestCache, file_digest

# Bump when the encoding changes: every hash then moves, and the lock explains why.
HASH_FORMAT = 1
TAG_LENGTH = 16  # hex characters of the hash used as the image tag (64 bits)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ImageInputs:
    """What one image is made of, apart from its parent's hash."""

    dockerfile_digest: str
    files: tuple[ContextEntry, ...]
    build_args: Mapping[str, str]
    platform: str
    target: str | None
    parent: str | None
    base: str | None
    inputs: Mapping[str, str] = dataclasses.field(default_factory=dict)  # build arg -> image name

    def file_map(self) -> dict[str, str]:
        return {entry.path: entry.describe() for entry in self.files}


def collect_inputs(spec: ImageSpec, cache: DigestCache | None, skip: frozenset[str]) -> ImageInputs:
    # image.toml is this tool's metadata, never sent: what in it changes the image (build args,
    # platform, target, parent, base) is hashed below, and a new description or smoke check must
    # not rebuild an hours-long lineage.
    skip = skip | {str(spec.declaration_path)}
    entries = scan_context(spec.context, spec.dockerfile, cache, skip)
    return ImageInputs(
        dockerfile_digest=file_digest(str(spec.dockerfile)),
        files=tuple(entries),
        build_args=dict(spec.build_args),
        platform=spec.platform,
        target=spec.target,
        parent=spec.parent,
        base=spec.base,
        inputs=dict(spec.inputs),
    )


def canonical_encoding(
    inputs: ImageInputs, parent_hash: str | None, input_hashes: Mapping[str, str] | None = None
) -> bytes:
    """The exact bytes that are hashed. Paths are relative and POSIX; no times, owners or git.

    `input_hashes` maps each input's build arg name to that image's freshness hash; it is encoded
    like the parent's hash, and only when the image has inputs, so images without inputs keep
    the hashes they had before inputs existed.
    """
    document: dict[str, Any] = {
        "format": HASH_FORMAT,
        "dockerfile": inputs.dockerfile_digest,
        "files": [[entry.path, entry.describe()] for entry in inputs.files],
        "build_args": dict(sorted(inputs.build_args.items())),
        "platform": inputs.platform,
        "target": inputs.target,
        "from": {"parent_hash": parent_hash} if inputs.parent is not None else {"base": inputs.base},
    }
    if inputs.inputs:
        document["inputs"] = {arg: (input_hashes or {})[arg] for arg in sorted(inputs.inputs)}
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    # A file name that is not UTF-8 is hashed as its own bytes (surrogateescape gives them back).
    return text.encode("utf-8", "surrogateescape")


def freshness_hash(
    inputs: ImageInputs, parent_hash: str | None, input_hashes: Mapping[str, str] | None = None
) -> str:
    """sha256 hex of the canonical encoding.

    Raises ValueError unless `parent_hash` is given exactly when the image has a parent and
    `input_hashes` has exactly the image's input build args.
    """
    if (inputs.parent is None) != (parent_hash is None):
        raise ValueError("a parent hash is required exactly when the image has a parent")
    if set(input_hashes or {}) != set(inputs.inputs):
        raise ValueError("an input hash is required for exactly each of the image's inputs")
    return hashlib.sha256(canonical_encoding(inputs, parent_hash, input_hashes)).hexdigest()


def short_hash(full: str) -> str:
    return full[:TAG_LENGTH]

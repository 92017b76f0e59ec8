"""One image's build request: BASE_IMAGE, input references, labels, references, secrets, log path.

Everything the backend needs for an image, decided by the cascade before any backend runs; the
labels say what the image is (title, freshness hash, parent hash) and where it came from (OCI
revision, source, created).
"""

from __future__ import annotations

import dataclasses
import datetime
import subprocess
import urllib.parse
from pathlib import Path

from imagecascade.core.backend import BuildRequest
from imagecascade.core.build_log import log_path
from imagecascade.core.plan import Plan, PlannedImage, image_reference

LABEL_REVISION = "org.opencontainers.image.revision"
LABEL_CREATED = "org.opencontainers.image.created"
LABEL_SOURCE = "org.opencontainers.image.source"
LABEL_TITLE = "org.opencontainers.image.title"
LABEL_DESCRIPTION = "org.opencontainers.image.description"
LABEL_HASH = "io.imagecascade.freshness-hash"
LABEL_PARENT_HASH = "io.imagecascade.parent-hash"


@dataclasses.dataclass(frozen=True)
class Provenance:
    revision: str  # commit, `-dirty` when the tree has changes; "unknown" outside git
    source: str  # the origin remote without credentials, or ""


def base_reference(plan: Plan, image: PlannedImage) -> str:
    """BASE_IMAGE: the parent's exact hash tag in the target, or the base as declared."""
    if image.spec.parent is None:
        assert image.spec.base is not None
        return image.spec.base
    parent = plan.get(image.spec.parent)
    return image_reference(parent.name, parent.tag, plan.settings.registry)


def input_references(plan: Plan, image: PlannedImage) -> dict[str, str]:
    """Each input's build arg -> that image's exact hash reference in the target (never :latest)."""
    return {
        arg: image_reference(name, plan.get(name).tag, plan.settings.registry)
        for arg, name in image.spec.inputs.items()
    }


def read_provenance(root: Path) -> Provenance:
    """The git commit (dirty-marked) and origin remote of `root`; "unknown" outside git."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return Provenance(revision="unknown", source="")
    status = git("status", "--porcelain")
    revision = commit + ("-dirty" if status else "")
    return Provenance(
        revision=revision, source=_without_credentials(git("remote", "get-url", "origin") or "")
    )


def _without_credentials(url: str) -> str:
    if "://" not in url:
        return url
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_request(
    plan: Plan, image: PlannedImage, provenance: Provenance, created: str, *, fresh: bool = False
) -> BuildRequest:
    """Everything the backend needs for one image: BASE_IMAGE, labels, both references, the log.

    `fresh` (--force) asks for no layer cache and freshly pulled external bases.
    """
    registry = plan.settings.registry
    sources = plan.settings.secrets
    base = base_reference(plan, image)
    labels = {
        LABEL_REVISION: provenance.revision,
        LABEL_CREATED: created,
        LABEL_SOURCE: provenance.source,
        LABEL_TITLE: image.name,
        LABEL_DESCRIPTION: image.spec.description,
        LABEL_HASH: image.hash,
        LABEL_PARENT_HASH: image.parent_hash if image.parent_hash is not None else base,
    }
    return BuildRequest(
        image=image,
        base_reference=base,
        build_args={**image.spec.build_args, **input_references(plan, image), "BASE_IMAGE": base},
        labels=labels,
        references=(
            image_reference(image.name, image.tag, registry),
            image_reference(image.name, "latest", registry),
        ),
        registry=registry,
        secrets={key: sources[key] for key in image.spec.secrets if key in sources},
        log_path=log_path(plan.settings.root, image.name, image.tag),
        fresh=fresh,
        checkout=plan.settings.root,
    )

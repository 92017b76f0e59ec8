"""The stand-in session: the real arr-ml-stack and arr-trainer Dockerfiles built on a stand-in parent.

arr-pytorch-base needs the CUDA base images and hours of compiling; its children only need a
parent with torch 2.6.0, torchvision 0.21.0 and torchaudio 2.6.0. This session makes one: a
Debian 12 base made offline with mmdebstrap, plus the official wheels from the public package
index (`standin/arr-pytorch-standin`), tagged `arr-pytorch-standin`, never `arr-pytorch-base`.
It copies `images/arr-ml-stack` and `images/arr-trainer` unchanged into a scratch repository
(`.cache/standin/repo`) where only arr-ml-stack's `parent` names the stand-in, builds all three
with BuildKit, the runner's pip configuration and CA bundle passed as the images' `pip_conf` and
`ca_bundle` secrets, then runs their real smoke checks on the CPU.

What the stand-in changes, said once here and printed by the session: Debian 12 has Python 3.11,
the production images Python 3.10 (Ubuntu 22.04). pip resolves the same top-level pins for cp311
wheels instead of cp310 ones, so compiled packages (numpy, scipy, pillow, tokenizers, ...) are
other files of the same versions, and an unpinned transitive dependency may resolve differently.
A lock resolved for 3.10 with hashes could not be installed as is; the session would have to
resolve the same top-level requirements for 3.11 in its scratch copy, never change the images.
The stand-in's torch is the PyPI CUDA build (with nvidia-* wheels), not the source build, so the
production parent's `torch-is-source-built`, `check-torch-libs` and CUDA architecture checks are
not inherited here; the stand-in's own checks are.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from imagecascade.core.backend import BuildEvent
from imagecascade.core.build_log import LOG_DIR
from imagecascade.core.cascade import CascadeResult, run_cascade
from imagecascade.core.decisions import CascadeOptions
from imagecascade.core.plan import Plan, compute_plan
from imagecascade.core.secrets import SecretSource
from imagecascade.core.settings import load_settings
from imagecascade.errors import BackendError, ConfigError
from imagecascade.smoke.results import ImageReport
from imagecascade.smoke.runner import find_targets, run_smoke
from imagecascade.smoke.session import SmokeSession

if TYPE_CHECKING:
    from imagecascade.engines.engine import Engine

STANDIN = "arr-pytorch-standin"
CHILDREN = ("arr-ml-stack", "arr-trainer")
BASE_IMAGE = "imagecascade-standin/debian:bookworm"
# `--variant=apt` runs the packages' maintainer scripts, so ca-certificates writes its bundle.
MMDEBSTRAP = (
    "set -o pipefail; mmdebstrap --quiet --variant=apt --include=python3,python3-pip,ca-certificates "
    "bookworm - | docker import -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' "
    "- {name}"
)
PARENT_LINE = 'parent = "arr-pytorch-base"'
PARENT_LOCK = "requirements.lock"
PYTHON_NOTE = (
    "Python: the stand-in runs Debian 12's Python 3.11, the production images Python 3.10 "
    "(Ubuntu 22.04). The Dockerfiles are built unchanged; pip resolves arr-ml-stack's pins for "
    "cp311 wheels (same versions, other files), so this proves the pins and the Dockerfiles, "
    "not the exact 3.10 wheels."
)


@dataclasses.dataclass(frozen=True)
class BuiltImage:
    name: str
    reference: str
    outcome: str
    reason: str
    seconds: float
    size_bytes: int | None


@dataclasses.dataclass(frozen=True)
class StandinResult:
    base_seconds: float | None  # None: the base image was already there
    images: tuple[BuiltImage, ...]
    cascade: CascadeResult
    smoke: tuple[ImageReport, ...]
    notes: tuple[str, ...]
    logs: Path


def runner_secrets(
    environ: Mapping[str, str], pip_conf: str | None, ca_bundle: str | None
) -> dict[str, SecretSource]:
    """The runner's own pip configuration and CA bundle as the `pip_conf` and `ca_bundle` secrets.

    Defaults: PIP_CONFIG_FILE, else the user's pip.conf (~/.config/pip/pip.conf, ~/.pip/pip.conf);
    PIP_CERT, REQUESTS_CA_BUNDLE or SSL_CERT_FILE, else /etc/ssl/certs/ca-certificates.crt. An
    empty string leaves one out. A file named but missing is a ConfigError.
    """
    home = Path(environ.get("HOME", "~")).expanduser()
    candidates = {
        "pip_conf": [pip_conf]
        if pip_conf is not None
        else [
            environ.get("PIP_CONFIG_FILE"),
            str(home / ".config/pip/pip.conf"),
            str(home / ".pip/pip.conf"),
        ],
        "ca_bundle": [ca_bundle]
        if ca_bundle is not None
        else [
            environ.get("PIP_CERT"),
            environ.get("REQUESTS_CA_BUNDLE"),
            environ.get("SSL_CERT_FILE"),
            "/etc/ssl/certs/ca-certificates.crt",
        ],
    }
    given = {"pip_conf": pip_conf, "ca_bundle": ca_bundle}
    sources: dict[str, SecretSource] = {}
    for secret_id, paths in candidates.items():
        for path in paths:
            if not path:
                continue
            if Path(path).is_file():
                sources[secret_id] = SecretSource(
                    id=secret_id, kind="file", location=str(Path(path).resolve()), origin="the runner"
                )
                break
            if given[secret_id]:
                raise ConfigError(f"--{secret_id.replace('_', '-')} {path}: no such file")
    return sources


def prepare_repository(root: Path, work: Path) -> Path:
    """A scratch repository: the stand-in and the two real image folders, arr-ml-stack re-parented."""
    repo = work / "repo"
    shutil.rmtree(repo, ignore_errors=True)
    (repo / "images").mkdir(parents=True)
    shutil.copytree(root / "standin" / STANDIN, repo / "images" / STANDIN)
    # arr-ml-stack's lock leaves out what its parent installs: the stand-in installs the same
    # hash-locked run-time packages as arr-pytorch-base before torch (its lock, copied in).
    lock = root / "images" / "arr-pytorch-base" / PARENT_LOCK
    shutil.copyfile(lock, repo / "images" / STANDIN / PARENT_LOCK)
    for name in CHILDREN:
        shutil.copytree(
            root / "images" / name,
            repo / "images" / name,
            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"),
        )
    declaration = repo / "images" / "arr-ml-stack" / "image.toml"
    text = declaration.read_text(encoding="utf-8")
    if text.count(PARENT_LINE) != 1:
        raise ConfigError(f"{root / 'images/arr-ml-stack/image.toml'}: expected one line {PARENT_LINE}")
    declaration.write_text(text.replace(PARENT_LINE, f'parent = "{STANDIN}"'), encoding="utf-8")
    (repo / "cascade.toml").write_text('[build]\njobs = 1\nbuilder = "buildkit"\n', encoding="utf-8")
    return repo


def ensure_base(engine: Engine, environ: Mapping[str, str]) -> float | None:
    """Make the Debian base offline when the engine lacks it; seconds taken, None when present."""
    if engine.image_exists(BASE_IMAGE):
        return None
    for tool in ("mmdebstrap", "docker"):
        if shutil.which(tool, path=environ.get("PATH")) is None:
            raise ConfigError(f"{tool} is not installed (scripts/provision installs mmdebstrap)")
    started = time.monotonic()
    done = subprocess.run(
        ["bash", "-c", MMDEBSTRAP.format(name=BASE_IMAGE)],
        capture_output=True,
        text=True,
        timeout=1800,
        env=dict(environ),
        check=False,
    )
    if done.returncode != 0:
        raise BackendError(f"cannot make the stand-in base {BASE_IMAGE}: {done.stderr.strip()[-500:]}")
    return time.monotonic() - started


def _image_size(engine: Engine, reference: str) -> int | None:
    try:
        return int(engine.client.images.get(reference).attrs.get("Size") or 0) or None
    except Exception:  # an image that is not there has no size; the table says so
        return None


def run_session(
    root: Path,
    engine: Engine,
    secrets: Mapping[str, SecretSource],
    *,
    environ: Mapping[str, str] | None = None,
    on_event: Callable[[BuildEvent], None] | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> StandinResult:
    """Build the stand-in, arr-ml-stack and arr-trainer when missing; smoke-check them.

    The complete build logs are the cascade's own, in the scratch repository's reports/build-logs/.
    """
    from imagecascade.engines.buildkit import choose_local_builder
    from imagecascade.engines.store import EngineStore

    environ = dict(os.environ if environ is None else environ)
    stage = on_stage or (lambda message: None)
    work = root / ".cache" / "standin"
    stage(f"base image {BASE_IMAGE}")
    base_seconds = ensure_base(engine, environ)
    repo = prepare_repository(root, work)
    settings = load_settings(repo).with_overrides(secrets=dict(secrets))
    plan: Plan = compute_plan(settings, use_cache=False)
    backend = choose_local_builder(settings, environ)
    stage(f"builder: {backend.description}")
    before = latest_tags(engine)
    try:
        result = run_cascade(plan, EngineStore(engine), backend, CascadeOptions(jobs=1), on_event=on_event)
    finally:
        restore_latest(engine, before)
    images = tuple(
        BuiltImage(
            name=item.name,
            reference=item.reference,
            outcome=item.outcome,
            reason=item.reason,
            seconds=item.duration,
            size_bytes=_image_size(engine, item.reference),
        )
        for item in result.results
    )
    reports: list[ImageReport] = []
    built = [item.name for item in result.results if item.outcome in ("built", "present")]
    if built:
        stage(f"smoke checks: {', '.join(built)}")
        reports = run_smoke(engine, find_targets(settings, engine, built), SmokeSession.for_repository(repo))
    notes = [PYTHON_NOTE]
    return StandinResult(
        base_seconds=base_seconds,
        images=images,
        cascade=result,
        smoke=tuple(reports),
        notes=tuple(notes),
        logs=repo / LOG_DIR,
    )


def latest_tags(engine: Engine) -> dict[str, str | None]:
    """What `<name>:latest` is now for the session's images (image id, or None)."""
    found = {}
    for name in (STANDIN, *CHILDREN):
        info = engine.inspect_image(f"{name}:latest")
        found[name] = info.id if info is not None else None
    return found


def restore_latest(engine: Engine, before: Mapping[str, str | None]) -> None:
    """Put `:latest` back where it was before the session: a stand-in-based arr-ml-stack keeps
    its own hash tag but never becomes the engine's `arr-ml-stack:latest`."""
    for name, image_id in before.items():
        if image_id is None:
            engine.remove_image(f"{name}:latest")
        else:
            engine.tag_image(image_id, f"{name}:latest")

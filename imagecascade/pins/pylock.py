"""Hash-locked Python requirements: every package an image installs, exact version and sha256.

`nox -s lock` runs `python -m imagecascade.pins.pylock`, which resolves each image's
`[[python_locks]]` (imagecascade.core.python_locks) with `uv pip compile` for the image's
Python and platform (not the host's), with `--generate-hashes` and `--only-binary :all:`, and
writes the lock with a header that records a digest of everything the resolution was made from.
A lock is resolved on top of what the image's ancestors install (their locks' pins and the
distributions they get from input images, with those distributions' own metadata), so it never
replaces the parent's packages; `isolated` locks (build tools installed apart) are resolved alone.

Only stale locks are resolved again, and uv prefers the versions already locked, so a change to
one requirements file never moves another image's lock (and never recompiles PyTorch).

`check` needs no network and no uv: it compares each top-level file (and the other inputs) with
what its lock records. Why uv: pip's resolver reports cannot take a target Python and platform
without listing every manylinux tag, write hashes, or take the real metadata of a source-built
torch (PyPI's torch 2.6.0 would pull the CUDA wheels into the lock); pip-tools resolves only for
the interpreter it runs on, and no Python 3.10 can be had here. uv does all three.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from imagecascade.core.declaration import ImageSpec, load_images
from imagecascade.core.python_locks import Provided, PythonLock, pins, requirement_lines
from imagecascade.core.settings import find_root, load_settings
from imagecascade.errors import CascadeError, ConfigError

INPUTS_MARK = "# inputs-sha256: "
FIX = "run `nox -s lock`"
# Options that shape the output; part of the digest, so changing them makes every lock stale.
RESOLVER_OPTIONS = ("--only-binary", ":all:", "--generate-hashes")


class ResolveFailed(CascadeError):
    """uv could not resolve a lock (a conflict, a missing wheel, or no index reachable)."""

    exit_code = 1


@dataclasses.dataclass(frozen=True, kw_only=True)
class LockTarget:
    """One lock to write or check, with what the image already has when it installs it."""

    image: str
    lock: PythonLock
    installed: Mapping[str, str]  # normalized name -> version, from the ancestors
    installed_by: tuple[str, ...]  # the ancestors that install them
    metadata: tuple[Provided, ...]  # every provided distribution the resolution needs

    @property
    def not_locked(self) -> set[str]:
        """Names that must not appear in the lock: installed already, or provided."""
        return set(self.installed) | {item.name for item in self.lock.provided}


def _lock_pins(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    return pins(requirement_lines(path.read_text(encoding="utf-8")))


def lock_targets(specs: Mapping[str, ImageSpec]) -> list[LockTarget]:
    """Every declared lock in dependency order, with what each image's ancestors install."""
    targets = []
    for name, spec in specs.items():
        chain = _parent_chain(specs, name)
        for lock in spec.python_locks:
            installed: dict[str, str] = {}
            metadata: dict[str, Provided] = {}
            if not lock.isolated:
                for ancestor in chain:
                    for theirs in ancestor.python_locks:
                        if theirs.isolated:
                            continue
                        installed.update(_lock_pins(theirs.lock))
                        for item in theirs.provided:
                            installed[item.name] = item.version
                            metadata[item.name] = item
            metadata.update({item.name: item for item in lock.provided})
            targets.append(
                LockTarget(
                    image=name,
                    lock=lock,
                    installed=dict(sorted(installed.items())),
                    installed_by=tuple(ancestor.name for ancestor in chain) if not lock.isolated else (),
                    metadata=tuple(metadata[key] for key in sorted(metadata)),
                )
            )
    return targets


def _parent_chain(specs: Mapping[str, ImageSpec], name: str) -> list[ImageSpec]:
    """The parents above `name`, root first. Not its inputs: their packages are not in the image."""
    chain: list[ImageSpec] = []
    parent = specs[name].parent
    while parent is not None and parent in specs:
        chain.insert(0, specs[parent])
        parent = specs[parent].parent
    return chain


def inputs_document(target: LockTarget) -> dict[str, Any]:
    """Everything the lock is made from, canonically; its sha256 is recorded in the lock."""
    lock = target.lock
    return {
        "format": 1,
        "requirements": requirement_lines(lock.requirements.read_text(encoding="utf-8")),
        "python": lock.python,
        "platform": lock.platform,
        "isolated": lock.isolated,
        "installed": sorted(target.installed.items()),
        "metadata": [[item.name, item.version, list(item.requires)] for item in target.metadata],
        "resolver": list(RESOLVER_OPTIONS),
    }


def inputs_digest(target: LockTarget) -> str:
    encoded = json.dumps(inputs_document(target), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(encoded).hexdigest()


def _shown(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def lock_problems(target: LockTarget, root: Path) -> list[str]:
    """Why the lock does not match its inputs, one line each (`path: problem`); empty when current.

    Needs no network: it compares the top-level file and the other inputs with what the lock
    records, never resolves.
    """
    lock = target.lock
    shown = _shown(lock.lock, root)
    top = lock.requirements.name
    if not lock.lock.is_file():
        return [f"{shown}: missing; {FIX}"]
    text = lock.lock.read_text(encoding="utf-8")
    recorded = next(
        (line[len(INPUTS_MARK) :].strip() for line in text.splitlines() if line.startswith(INPUTS_MARK)), ""
    )
    if not recorded:
        return [f"{shown}: not written by `nox -s lock` (no `{INPUTS_MARK.strip()}` line); {FIX}"]
    problems = []
    locked = pins(requirement_lines(text))
    provided = {item.name: item.version for item in lock.provided}
    wanted = pins(requirement_lines(lock.requirements.read_text(encoding="utf-8")))
    for name, version in sorted(wanted.items()):
        have = locked.get(name) or provided.get(name) or target.installed.get(name)
        if have is None:
            problems.append(
                f"{shown}: stale: {top} pins {name}=={version}, which the lock does not have; {FIX}"
            )
        elif have != version:
            problems.append(f"{shown}: stale: {top} pins {name}=={version}, the lock has {have}; {FIX}")
    for name in sorted(set(locked) & target.not_locked):
        where = "provided" if name in provided else f"installed by {', '.join(target.installed_by)}"
        problems.append(f"{shown}: locks {name}, which is {where}; {FIX}")
    if not problems and recorded != inputs_digest(target):
        problems.append(
            f"{shown}: stale: what it was resolved from changed ({top}, python, platform, provided "
            f"distributions or the packages the parent installs); {FIX}"
        )
    problems += _entry_problems(text, shown)
    return problems


def _entry_problems(text: str, shown: str) -> list[str]:
    problems = []
    joined = text.replace("\\\n", " ")
    for line in joined.splitlines():
        entry = line.split(" #", 1)[0].strip()
        if not entry or entry.startswith("#"):
            continue
        requirement = entry.split()[0]
        if entry.startswith("-"):
            problems.append(f"{shown}: option {requirement!r} does not belong in a lock")
        elif "==" not in requirement:
            problems.append(f"{shown}: {requirement} is not pinned with ==")
        elif "--hash=sha256:" not in entry:
            problems.append(f"{shown}: {requirement} has no sha256 hash")
    return problems


def check_locks(specs: Mapping[str, ImageSpec], root: Path, names: Sequence[str] = ()) -> list[str]:
    """One line per problem of every declared lock (of `names`, or all); empty when all are current."""
    return [
        problem
        for target in lock_targets(specs)
        if not names or target.image in names
        for problem in lock_problems(target, root)
    ]


def find_uv() -> str:
    """The uv binary: the one the `uv` package installed, else `uv` on PATH."""
    try:
        from uv import find_uv_bin  # type: ignore[import-not-found, import-untyped, unused-ignore]

        return str(find_uv_bin())
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        if found is None:
            raise ConfigError(
                f"uv is not installed: {FIX}, which installs it, or pip install '.[lock]'"
            ) from None
        return found


def _uv_config(metadata: Sequence[Provided]) -> str:
    """uv.toml with the real metadata of provided distributions (`dependency-metadata`)."""
    lines = []
    for item in metadata:
        lines += [
            "[[dependency-metadata]]",
            f"name = {json.dumps(item.name)}",
            f"version = {json.dumps(item.version)}",
            f"requires-dist = {json.dumps(list(item.requires))}",
            "",
        ]
    return "\n".join(lines)


def uv_command(
    target: LockTarget, uv: str, scratch: Path, *, upgrade: bool, extra: Sequence[str]
) -> list[str]:
    """`uv pip compile` for `target`, run in the image folder, writing `scratch/lock.txt`.

    `scratch` holds uv.toml (the provided distributions' metadata), provided.txt (their pins,
    resolved with the rest) and installed.txt (what the ancestors install, as constraints).
    """
    lock = target.lock
    provided = [str(scratch / "provided.txt")] if lock.provided else []
    command = [
        uv, "pip", "compile", lock.requirements.name, *provided,
        "--output-file", str(scratch / "lock.txt"),
        # The target is --python-version and --python-platform; without --python uv would look
        # for (and try to download) a Python 3.10 it never runs: only binary wheels are read.
        "--python", sys.executable,
        "--python-version", lock.python,
        "--python-platform", lock.platform,
        *RESOLVER_OPTIONS,
        "--no-header",
        "--config-file", str(scratch / "uv.toml"),
        "--quiet",
    ]  # fmt: skip
    if target.installed:
        command += ["--constraint", str(scratch / "installed.txt")]
    for name in sorted(target.not_locked):
        command += ["--no-emit-package", name]
    if upgrade:
        command.append("--upgrade")
    return [*command, *extra]


def header(target: LockTarget, uv_version: str) -> str:
    lock = target.lock
    verb = "installs" if len(target.installed_by) == 1 else "install"
    on = f", on top of what {' and '.join(target.installed_by)} {verb}" if target.installed_by else ""
    apart = "; installed apart from the image's packages" if lock.isolated else ""
    return (
        f"# Hash-locked by `nox -s lock` ({uv_version}): every package {target.image} installs from "
        f"{lock.requirements.name},\n# resolved for Python {lock.python} on {lock.platform}{on}{apart}.\n"
        f"# Do not edit: change {lock.requirements.name}, then run `nox -s lock`.\n"
        f"{INPUTS_MARK}{inputs_digest(target)}\n"
    )


def write_lock(target: LockTarget, uv: str, *, upgrade: bool = False, extra: Sequence[str] = ()) -> bool:
    """Resolve `target` with uv and write its lock atomically; False when the text is unchanged.

    Raises ResolveFailed with uv's own explanation when it cannot resolve.
    """
    lock = target.lock
    with tempfile.TemporaryDirectory(prefix="imagecascade-lock-") as folder:
        scratch = Path(folder)
        (scratch / "uv.toml").write_text(_uv_config(target.metadata), encoding="utf-8")
        (scratch / "installed.txt").write_text(
            "".join(f"{name}=={version}\n" for name, version in target.installed.items()), encoding="utf-8"
        )
        # The provided distributions are resolved with the rest (their requirements count), then
        # left out of the output by --no-emit-package.
        (scratch / "provided.txt").write_text(
            "".join(f"{item.name}=={item.version}\n" for item in lock.provided), encoding="utf-8"
        )
        if lock.lock.is_file():  # uv keeps the versions already locked unless --upgrade
            shutil.copyfile(lock.lock, scratch / "lock.txt")
        command = uv_command(target, uv, scratch, upgrade=upgrade, extra=extra)
        environment = {**os.environ, "UV_NO_PROGRESS": "1", "UV_PYTHON_DOWNLOADS": "never"}
        done = subprocess.run(
            command, cwd=lock.requirements.parent, capture_output=True, text=True, env=environment
        )
        if done.returncode != 0:
            raise ResolveFailed(
                f"{lock.requirements}: uv could not resolve it for Python {lock.python} on {lock.platform}:\n"
                + (done.stderr.strip() or done.stdout.strip())
            )
        # Annotations name the scratch files (`-c /tmp/.../installed.txt`): keep only their names.
        body = (scratch / "lock.txt").read_text(encoding="utf-8").replace(f"{scratch}/", "")
        version = subprocess.run([uv, "--version"], capture_output=True, text=True, check=False).stdout
        version = " ".join(version.split()[:2])  # `uv 0.13.9`, without the build target
    text = header(target, version or "uv") + body
    if lock.lock.is_file() and lock.lock.read_text(encoding="utf-8") == text:
        return False
    temporary = lock.lock.with_name(f".{lock.lock.name}.{os.getpid()}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, lock.lock)
    return True


def write_locks(
    specs: Mapping[str, ImageSpec],
    root: Path,
    names: Sequence[str] = (),
    *,
    upgrade: bool = False,
    extra: Sequence[str] = (),
    uv: str | None = None,
    out: Any = None,
) -> int:
    """Resolve every stale lock (every lock with `upgrade`), ancestors first; the count written.

    Each target is rebuilt after its ancestors' locks are written, so a child sees their new pins.
    """
    written = 0
    binary = uv
    for index in range(len(lock_targets(specs))):
        target = lock_targets(specs)[index]  # again: an ancestor's lock may just have changed
        if names and target.image not in names:
            continue
        shown = _shown(target.lock.lock, root)
        if not upgrade and not lock_problems(target, root):
            print(f"{shown}: current", file=out or sys.stdout)
            continue
        binary = binary or find_uv()
        changed = write_lock(target, binary, upgrade=upgrade, extra=extra)
        written += int(changed)
        print(f"{shown}: {'written' if changed else 'unchanged'}", file=out or sys.stdout)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m imagecascade.pins.pylock", description=__doc__.splitlines()[0]
    )
    parser.add_argument("images", nargs="*", help="only these images (default: every image)")
    parser.add_argument(
        "--check", action="store_true", help="only report stale locks (offline); exit 1 if any"
    )
    parser.add_argument(
        "--upgrade", action="store_true", help="resolve every lock again, newest versions allowed"
    )
    parser.add_argument(
        "--uv-arg", action="append", default=[], help="passed to `uv pip compile` (e.g. --uv-arg=--no-index)"
    )
    args = parser.parse_args(argv)
    try:
        root = find_root(Path.cwd())
        specs = load_images(load_settings(root))
        unknown = sorted(set(args.images) - set(specs))
        if unknown:
            raise ConfigError(f"unknown image {', '.join(unknown)} (known: {', '.join(specs)})")
        if args.check:
            problems = check_locks(specs, root, args.images)
            for problem in problems:
                print(problem)
            return 1 if problems else 0
        write_locks(specs, root, args.images, upgrade=args.upgrade, extra=args.uv_arg)
    except CascadeError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

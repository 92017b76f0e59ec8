"""The committed lock file: each image's full hash, its parent and the inputs that explain it."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from imagecascade.core.context import display_path
from imagecascade.core.freshness import HASH_FORMAT, ImageInputs, short_hash
from imagecascade.errors import ConfigError

LOCK_FORMAT = 1
_LONE_SURROGATE = re.compile("[\udc80-\udcff]")
_LISTED_NAMES = 3  # file names shown per kind of change before "+N more"


@dataclasses.dataclass(frozen=True, kw_only=True)
class LockEntry:
    hash: str
    parent: str | None
    parent_hash: str | None
    base: str | None
    platform: str
    target: str | None
    build_args: Mapping[str, str]
    dockerfile: str
    files: Mapping[str, str]
    hash_format: int = HASH_FORMAT
    # Build arg -> {"image": name, "hash": that image's freshness hash}.
    inputs: Mapping[str, Mapping[str, str]] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "hash": self.hash,
            "hash_format": self.hash_format,
            "parent": self.parent,
            "parent_hash": self.parent_hash,
            "base": self.base,
            "inputs": {arg: dict(self.inputs[arg]) for arg in sorted(self.inputs)},
            "platform": self.platform,
            "target": self.target,
            "build_args": dict(sorted(self.build_args.items())),
            "dockerfile": self.dockerfile,
            "files": dict(sorted(self.files.items())),
        }


def entry_for(
    inputs: ImageInputs,
    image_hash: str,
    parent_hash: str | None,
    input_hashes: Mapping[str, str] | None = None,
) -> LockEntry:
    hashes = input_hashes or {}
    return LockEntry(
        inputs={arg: {"image": image, "hash": hashes.get(arg, "")} for arg, image in inputs.inputs.items()},
        hash=image_hash,
        parent=inputs.parent,
        parent_hash=parent_hash,
        base=inputs.base,
        platform=inputs.platform,
        target=inputs.target,
        build_args=dict(inputs.build_args),
        dockerfile=inputs.dockerfile_digest,
        files=inputs.file_map(),
    )


FIX_HINT = "run `invoke hashes --write` to rewrite it from the images"
_CONFLICT_MARKER = re.compile(r"^(<{7}|={7}|>{7})(\s|$)", re.MULTILINE)
_HEX64 = re.compile(r"[0-9a-f]{64}")
_FILE_KINDS = ("file ", "exec ", "link ")


def read_lock(path: Path) -> dict[str, LockEntry]:
    """The recorded entries; an absent lock file records nothing.

    Anything else that is not a lock file this version wrote (merge-conflict markers, invalid
    JSON, a field of the wrong type) raises ConfigError: one line naming the file, the place and
    the fix.
    """
    if not path.exists():
        return {}
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror or error}") from error
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text (byte {error.start}); {FIX_HINT}") from error
    return parse_lock(text, str(path))


def parse_lock(text: str, source: str) -> dict[str, LockEntry]:
    """The entries of a lock file's text; ConfigError naming `source` (and the line) when it is not one."""
    path = source
    conflict = _CONFLICT_MARKER.search(text)
    if conflict:
        line = text.count("\n", 0, conflict.start()) + 1
        raise ConfigError(f"{path}:{line}: merge-conflict marker {conflict.group(1)[:1] * 7!r}; {FIX_HINT}")
    try:
        data = json.loads(text)
    except ValueError as error:
        if isinstance(error, json.JSONDecodeError):
            # Some of json's messages end in "at": the place they mean is lineno/colno.
            place = f" line {error.lineno} column {error.colno}" if error.msg.endswith(" at") else ""
            where, reason = f":{error.lineno}:{error.colno}", error.msg + place
        else:
            where, reason = "", str(error)
        raise ConfigError(f"{path}{where}: invalid JSON ({reason}); {FIX_HINT}") from error
    if not isinstance(data, dict) or data.get("format") != LOCK_FORMAT:
        raise ConfigError(f"{path}: not a format-{LOCK_FORMAT} lock file; {FIX_HINT}")
    images = data.get("images")
    if not isinstance(images, dict):
        raise ConfigError(f"{path}: `images` must be an object; {FIX_HINT}")
    entries: dict[str, LockEntry] = {}
    for name, raw in images.items():
        problem = _entry_problem(raw)
        if problem:
            raise ConfigError(f"{path}: images.{name}: {problem}; {FIX_HINT}")
        entries[name] = LockEntry(
            hash=raw["hash"],
            hash_format=raw.get("hash_format", 0),
            parent=raw["parent"],
            parent_hash=raw["parent_hash"],
            base=raw["base"],
            platform=raw["platform"],
            target=raw.get("target"),
            build_args=raw["build_args"],
            dockerfile=raw["dockerfile"],
            files=raw["files"],
            inputs={
                arg: {"image": item["image"], "hash": item["hash"]}
                for arg, item in raw.get("inputs", {}).items()
            },
        )
    return entries


def _entry_problem(raw: Any) -> str | None:
    """What is wrong with one recorded entry, or None."""
    if not isinstance(raw, dict):
        return "must be an object"
    for key in ("hash", "parent", "parent_hash", "base", "platform", "build_args", "dockerfile", "files"):
        if key not in raw:
            return f"`{key}` is missing"
    if not isinstance(raw["hash"], str) or not _HEX64.fullmatch(raw["hash"]):
        return "`hash` must be 64 lower-case hex digits"
    hash_format = raw.get("hash_format", 0)
    if not isinstance(hash_format, int) or isinstance(hash_format, bool):
        return "`hash_format` must be an integer"
    for key in ("parent", "parent_hash", "base", "target"):
        if raw.get(key) is not None and not isinstance(raw[key], str):
            return f"`{key}` must be a string or null"
    if not isinstance(raw["platform"], str) or not isinstance(raw["dockerfile"], str):
        return "`platform` and `dockerfile` must be strings"
    for key in ("build_args", "files"):
        value = raw[key]
        if not isinstance(value, dict) or not all(isinstance(item, str) for item in value.values()):
            return f"`{key}` must map names to strings"
    for file, described in raw["files"].items():
        if described != "dir" and not described.startswith(_FILE_KINDS):
            return f"files.{file}: {described!r} is not `file|exec|link <digest>` or `dir`"
    inputs = raw.get("inputs", {})
    if not isinstance(inputs, dict) or not all(
        isinstance(item, dict) and isinstance(item.get("image"), str) and isinstance(item.get("hash"), str)
        for item in inputs.values()
    ):
        return "`inputs` must map build args to {image, hash} strings"
    return None


def render_lock(entries: Mapping[str, LockEntry]) -> str:
    document = {
        "format": LOCK_FORMAT,
        "comment": "Written by `invoke hashes --write`; checked by the check-freshness-hashes hook.",
        "images": {name: entries[name].to_json() for name in entries},
    }
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    # File names that are not UTF-8 carry their bytes as lone surrogates: JSON escapes keep the
    # file valid UTF-8, and reading it back gives the same names.
    return _LONE_SURROGATE.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


def write_lock(path: Path, entries: Mapping[str, LockEntry]) -> bool:
    """Write the lock atomically; False when it already said exactly this."""
    text = render_lock(entries)
    if path.exists() and path.read_bytes() == text.encode("utf-8"):
        return False
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)
    return True


def _names(prefix: str, names: list[str]) -> str:
    shown = ", ".join(display_path(name) for name in names[:_LISTED_NAMES])
    more = f" (+{len(names) - _LISTED_NAMES} more)" if len(names) > _LISTED_NAMES else ""
    return f"{prefix} {shown}{more}"


def _kind(record: str) -> str:
    return record.partition(" ")[0]


def _detail(record: str) -> str:
    return record.partition(" ")[2]


def _input_reasons(old: LockEntry, new: LockEntry) -> list[str]:
    reasons = []
    for arg in sorted(set(old.inputs) | set(new.inputs)):
        was, now = old.inputs.get(arg), new.inputs.get(arg)
        if was is None and now is not None:
            reasons.append(f"input {arg} {now['image']} added")
        elif now is None and was is not None:
            reasons.append(f"input {arg} removed (was {was['image']})")
        elif was is not None and now is not None:
            if was["image"] != now["image"]:
                reasons.append(f"input {arg} {was['image']} → {now['image']}")
            elif was["hash"] != now["hash"]:
                reasons.append(f"input {arg} {now['image']} changed")
    return reasons


def explain(old: LockEntry | None, new: LockEntry | None) -> list[str]:
    """Why `new` differs from what the lock recorded, most telling reason first.

    `new` may be None when the hashes are known to agree (or there is no record to compare).
    """
    if old is None:
        return ["not in the lock file"]
    if new is None or old.hash == new.hash:
        return []
    reasons: list[str] = []
    if old.parent != new.parent:
        reasons.append(f"parent {old.parent or '(none)'} → {new.parent or '(none)'}")
    elif new.parent is not None and old.parent_hash != new.parent_hash:
        reasons.append(f"parent {new.parent} changed")
    reasons += _input_reasons(old, new)
    if old.base != new.base:
        reasons.append(f"base {old.base or '(none)'} → {new.base or '(none)'}")
    if old.dockerfile != new.dockerfile:
        reasons.append("Dockerfile changed")
    added = sorted(set(new.files) - set(old.files))
    removed = sorted(set(old.files) - set(new.files))
    both = sorted(set(old.files) & set(new.files))
    # Each record is "<kind> <detail>"; a link's detail (its target) may hold spaces.
    content = [path for path in both if _detail(old.files[path]) != _detail(new.files[path])]
    if old.dockerfile != new.dockerfile:
        # The Dockerfile inside the context is already reported as "Dockerfile changed".
        content = [path for path in content if _detail(new.files[path]) != new.dockerfile]
    mode = [path for path in both if _kind(old.files[path]) != _kind(new.files[path]) and path not in content]
    if added:
        reasons.append(_names("added", added))
    if removed:
        reasons.append(_names("removed", removed))
    if content:
        reasons.append(_names("changed", content))
    if mode:
        reasons.append(_names("mode changed", mode))
    for key in sorted(set(old.build_args) | set(new.build_args)):
        before, after = old.build_args.get(key), new.build_args.get(key)
        if before != after:
            if before is None:
                reasons.append(f"build arg {key} added ({after!r})")
            elif after is None:
                reasons.append(f"build arg {key} removed (was {before!r})")
            else:
                reasons.append(f"build arg {key} {before!r} → {after!r}")
    if old.platform != new.platform:
        reasons.append(f"platform {old.platform} → {new.platform}")
    if old.target != new.target:
        reasons.append(f"target {old.target} → {new.target}")
    if not reasons and old.hash_format != new.hash_format:
        reasons.append(f"hash format {old.hash_format} → {new.hash_format}")
    if not reasons:
        reasons.append(f"hash {short_hash(old.hash)} → {short_hash(new.hash)} (inputs not recorded)")
    return reasons

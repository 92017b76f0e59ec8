"""Invoke tasks: thin wrappers that parse options, call the imagecascade package and render."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from invoke import Collection, Context, Exit, task

from imagecascade.errors import BackendError, CascadeError
from imagecascade.settings import Settings, find_root, load_settings



def _settings(**overrides: Any) -> Settings:
    try:
        return load_settings(find_root(Path.cwd())).with_overrides(**overrides)
    except CascadeError as error:
        raise Exit(f"error: {error}", code=error.exit_code) from error


def _fail(error: CascadeError) -> Exit:
    return Exit(f"error: {error}", code=error.exit_code)


@task(
    help={
        "write": "rewrite the lock file with the current hashes",
        "check": "exit 1 when the lock file is stale (the default)",
    }
)
def hashes(c: Context, write: bool = False, check: bool = False) -> None:
    """Check (default) or rewrite the freshness hashes recorded in images.lock.json."""
    from imagecascade.hook import check_hashes, write_hashes

    if write and check:
        raise Exit("error: --write and --check exclude each other", code=2)
    root = _settings().root
    try:
        code = write_hashes(root, sys.stdout) if write else check_hashes(root, sys.stdout, fix_hint=True)
    except CascadeError as error:
        raise _fail(error) from error
    if code:
        raise Exit(code=code)


def _build_states(plan: Any) -> dict[str, tuple[str, str]]:
    """present/missing per image, or unknown with the reason when the store cannot answer."""
    from imagecascade.store import open_store

    try:
        store = open_store(plan.settings.registry)
    except BackendError as error:
        return {image.name: ("unknown", str(error)) for image in plan.images}
    states: dict[str, tuple[str, str]] = {}
    for image in plan.images:
        try:
            states[image.name] = ("present" if store.has(image.name, image.tag) else "missing", "")
        except BackendError as error:
            states[image.name] = ("unknown", str(error))
    return states


@task(
    help={
        "json": "print the plan as JSON for scripts and CI",
        "registry": "look images up in this registry instead of the configured one",
        "offline": "do not ask the engine or registry whether images are built",
    }
)
def plan(c: Context, json_: bool = False, registry: str | None = None, offline: bool = False) -> None:
    """Show every image's hash, lock state, build state and why it is stale."""
    from imagecascade.plan import compute_plan, plan_document

    try:
        current = compute_plan(_settings(registry=registry))
    except CascadeError as error:
        raise _fail(error) from error
    states = (
        {image.name: ("unknown", "--offline") for image in current.images}
        if offline
        else _build_states(current)
    )
    if json_:
        print(json.dumps(plan_document(current, states), indent=2))
        return
    from imagecascade.render import console, plan_table

    out = console()
    out.print(plan_table(current, states))
    for name in current.removed:
        out.print(f"[red]{name}[/]: recorded in the lock file but images/{name} is gone")


@task(help={"format": "tree (default), mermaid or dot"})
def graph(c: Context, format: str = "tree") -> None:
    """Draw the cascade of images, stale ones marked."""
    from imagecascade.graph import render
    from imagecascade.plan import compute_plan

    if format not in ("tree", "mermaid", "dot"):
        raise Exit(f"error: --format: unknown graph format {format!r} (tree, mermaid, dot)", code=2)
    try:
        current = compute_plan(_settings())
    except CascadeError as error:
        raise _fail(error) from error
    labels = {image.name: image.tag for image in current.images}
    stale = [image.name for image in current.images if not image.locked]
    print(render(current.specs, labels, stale, format))  # type: ignore[arg-type]


# Invoke reads `--json` as the `json_` parameter.
plan.help["json"] = plan.help.pop("json")
ns = Collection(hashes, plan, graph)

"""Invoke tasks: thin wrappers that parse options, call the imagecascade package and render."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from invoke.collection import Collection
from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import Task, task

from imagecascade.assembly import BACKENDS
from imagecascade.core.settings import Settings, find_root, load_settings
from imagecascade.errors import INTERRUPTED, BackendError, CascadeError, ConfigError
from imagecascade.signals import interrupt_name, quiet_broken_pipe, termination_as_interrupt


def _settings(**overrides: Any) -> Settings:
    try:
        return load_settings(find_root(Path.cwd())).with_overrides(**overrides)
    except CascadeError as error:
        raise Exit(f"error: {error}", code=error.exit_code) from error


def _pipe_safe(body: Callable[..., None]) -> Callable[..., None]:
    """A reader that stops early (`invoke plan --json | head -1`) ends the task quietly, exit 0."""

    @functools.wraps(body)
    def run(*args: Any, **kwargs: Any) -> None:
        with quiet_broken_pipe():
            body(*args, **kwargs)

    return run


def _fail(error: CascadeError) -> Exit:
    return Exit(f"error: {error}", code=error.exit_code)


def _warn(lines: list[str]) -> None:
    for line in lines:
        print(f"warning: {line}", file=sys.stderr)


@task(
    help={
        "write": "rewrite the lock file with the current hashes",
        "check": "exit 1 when the lock file is stale (the default)",
    }
)
@_pipe_safe
def hashes(c: Context, write: bool = False, check: bool = False) -> None:
    """Check (default) or rewrite the freshness hashes recorded in images.lock.json."""
    from imagecascade.core.hook import check_hashes, write_hashes

    if write and check:
        raise Exit("error: --write and --check exclude each other", code=2)
    root = _settings().root
    try:
        code = write_hashes(root, sys.stdout) if write else check_hashes(root, sys.stdout, fix_hint=True)
    except CascadeError as error:
        raise _fail(error) from error
    if code:
        raise Exit(code=code)
    if not write:
        print("images.lock.json: current")  # the hook stays silent on success; a person asked


@task(
    help={
        "json": "print the plan as JSON for scripts and CI",
        "registry": "look images up in this registry instead of the configured one",
        "offline": "do not ask the engine or registry whether images are built",
        "backend": "show where missing images would be built with this backend: local (default), cloudbuild",
        "project": "the Cloud Build project images that require Cloud Build would use",
        "builder": "the local builder whose refusals to show: auto, buildkit or classic "
        "(default: [build] builder, else auto)",
    }
)
@_pipe_safe
def plan(
    c: Context,
    json_: bool = False,
    registry: str | None = None,
    offline: bool = False,
    backend: str = "local",
    project: str | None = None,
    builder: str | None = None,
) -> None:
    """Show every image's hash, lock state, build state, where it would be built and why it is stale.

    Exits 3 when a build state is unknown (the engine or registry could not answer), unless --offline.
    """
    from imagecascade.assembly import check_backend, check_secret_ids, placed, plan_refusals
    from imagecascade.core.build_checks import check_before_build
    from imagecascade.core.plan import compute_plan, plan_document
    from imagecascade.core.secrets import load_local_secrets

    try:
        check_backend(backend)
        settings = _settings(registry=registry, builder=builder, cloudbuild_project=project)
        sources = load_local_secrets(settings.root)
        settings = settings.with_overrides(secrets=sources)
        current = placed(compute_plan(settings), backend)
        warnings = [*current.warnings, *check_before_build(current)]
        check_secret_ids(current, sources)  # a typo in cascade.local.toml: as `invoke cascade` says
        current = plan_refusals(current, backend, settings)
    except CascadeError as error:
        raise _fail(error) from error
    _warn(warnings)
    from imagecascade.engines.store import BuildStates, look_up_build_states, open_store

    if offline:
        states = BuildStates({image.name: ("unknown", "--offline") for image in current.images})
    else:
        try:
            states = look_up_build_states(current, lambda: open_store(current.settings.registry))
        except CascadeError as error:  # e.g. an unreadable docker config.json: bad input, exit 2
            raise _fail(error) from error
    if json_:
        document = plan_document(current, states.states, backend)
        document["build_state_error"] = states.problem
        print(json.dumps(document, indent=2))
    else:
        from imagecascade.rendering.terminal import console, plan_fixes, plan_table

        out = console()
        out.print(plan_table(current, states.states, backend))
        for line in plan_fixes(current, states.states):
            out.print(line, markup=False, highlight=False)
        for name in current.removed:
            out.print(f"[red]{name}[/]: recorded in the lock file but images/{name} is gone")
    if states.problem:  # said once, however many images it hides; scripts see exit 3
        unknown = [name for name, (state, _) in states.states.items() if state == "unknown"]
        message = f"error: build state unknown for {', '.join(unknown)}: {states.problem}"
        raise Exit(message, code=BackendError.exit_code)


@task(help={"format": "tree (default), mermaid or dot"})
@_pipe_safe
def graph(c: Context, format: str = "tree") -> None:
    """Draw the cascade of images, stale ones marked."""
    from imagecascade.core.graph import render
    from imagecascade.core.plan import compute_plan

    if format not in ("tree", "mermaid", "dot"):
        raise Exit(f"error: --format: unknown graph format {format!r} (tree, mermaid, dot)", code=2)
    try:
        current = compute_plan(_settings())
    except CascadeError as error:
        raise _fail(error) from error
    _warn(list(current.warnings))
    labels = {image.name: image.tag for image in current.images}
    stale = [image.name for image in current.images if not image.locked]
    print(render(current.specs, labels, stale, format))  # type: ignore[arg-type]


# Invoke reads `--json` as the `json_` parameter.
plan.help["json"] = plan.help.pop("json")


def _run_cascade(
    options: Any,
    registry: str | None,
    jobs: int | None,
    backend: str,
    cloud_settings: dict[str, Any] | None = None,
    cloud: dict[str, Any] | None = None,
    builder: str | None = None,
    secret: list[str] | None = None,
) -> None:
    """Plan, build what is missing, render progress and the summary, map the outcome to an exit code."""
    import dataclasses

    from imagecascade.assembly import (
        check_secret_ids,
        choose_backend,
        placed,
        target_store,
        why_missing,
        with_refusals,
    )
    from imagecascade.core.build_checks import check_before_build
    from imagecascade.core.cascade import run_cascade
    from imagecascade.core.decisions import selection
    from imagecascade.core.plan import compute_plan
    from imagecascade.core.run_lock import exclusive_cascade
    from imagecascade.core.secrets import load_local_secrets, parse_secret_flags
    from imagecascade.engines.credentials import CredentialResolver
    from imagecascade.rendering.terminal import (
        CascadeReporter,
        console,
        dry_run_table,
        failure_logs,
        plain_output,
        refusal_fixes,
        summary_table,
    )

    settings = _settings(registry=registry, jobs=jobs, builder=builder, **(cloud_settings or {}))
    options = dataclasses.replace(options, jobs=settings.jobs)
    out = console()
    try:
        with termination_as_interrupt():
            sources = {**load_local_secrets(settings.root), **parse_secret_flags(secret or [], Path.cwd())}
            settings = settings.with_overrides(secrets=sources)
            current = placed(compute_plan(settings), backend)
            _warn([*current.warnings, *check_before_build(current, selection(current, options))])
            check_secret_ids(current, sources)
            credentials = CredentialResolver()
            chosen = choose_backend(backend, settings, current, cloud, credentials)
            description = getattr(chosen, "description", "")  # which local builder, when local
            if description:
                print(f"builder: {description}", flush=True)
            current = with_refusals(current, chosen, settings)
            store = target_store(backend, settings, credentials)
            if options.dry_run:
                result = run_cascade(current, store, chosen, options)
            else:
                names = [image.name for image in current.images]

                def waiting(message: str) -> None:
                    print(f"waiting: {message}", file=sys.stderr, flush=True)

                # Decided and built under the lock: a second run sees what the first one pushed.
                with (
                    exclusive_cascade(settings.cache_dir, waiting),
                    CascadeReporter(out, names, live=not plain_output(out.is_terminal)) as reporter,
                ):
                    result = run_cascade(current, store, chosen, options, on_event=reporter)
    except KeyboardInterrupt as interrupt:
        # The scheduler absorbs interrupts once builds run: this one came before any build started.
        message = f"interrupted by {interrupt_name(interrupt)}: nothing was built"
        raise Exit(message, code=INTERRUPTED) from None
    except CascadeError as error:
        raise _fail(error) from error
    except OSError as error:  # the lock file under .cache/ cannot be created
        raise Exit(f"error: {error}", code=2) from error
    if options.dry_run:
        out.print(dry_run_table(result, why_missing(current, store, result)))
        for line in refusal_fixes(result):
            out.print(line, markup=False, highlight=False)
        code, message = result.verdict()  # a refused image: exit 2, as the real run would
        if code:
            raise Exit(message, code=code)
        return
    out.print(summary_table(result))
    for line in failure_logs(result):
        out.print(line, markup=False, highlight=False)
    for line in refusal_fixes(result):
        out.print(line, markup=False, highlight=False)
    unlocked = result.unlocked_builds(current)
    if unlocked:
        print(
            f"note: images.lock.json does not record the hashes just built ({', '.join(unlocked)}); "
            "run `invoke hashes --write` and commit it",
            file=sys.stderr,
        )
    code, message = result.verdict()
    if code:
        raise Exit(message, code=code)


_CLOUD_HELP = {
    "project": "cloudbuild: the Google Cloud project (default: [cloudbuild] project in cascade.toml)",
    "region": "cloudbuild: region to build in (default: image.toml, then cascade.toml, else global)",
    "bucket": "cloudbuild: bucket for source tarballs (default: <project>_cloudbuild, if the project's)",
    "machine_type": "cloudbuild: machine type, e.g. E2_HIGHCPU_32 (default: image.toml, then the YAML)",
    "disk_size": "cloudbuild: disk size in GB, up to 4000 (default: image.toml, then the YAML)",
    "timeout": "cloudbuild: build timeout in minutes, up to 1440 (default: image.toml, the YAML, 60)",
    "worker_pool": "cloudbuild: private pool projects/P/locations/R/workerPools/NAME (builds in its region)",
    "queued_timeout": "cloudbuild: cancel a build this run submitted still queued N seconds after creation",
    "service_account": "cloudbuild: service account (email) builds run as; needs a logs bucket or logging",
    "logs_bucket": "cloudbuild: gs://BUCKET[/PREFIX] for build logs (default: cascade.toml, the YAML)",
    "logging": "cloudbuild: LEGACY, GCS_ONLY, CLOUD_LOGGING_ONLY or NONE (default: cascade.toml, the YAML)",
}
_CASCADE_HELP = {
    "registry": "push to and look up in this registry (REF/<image>) instead of the configured one",
    "jobs": "images built at the same time (default from cascade.toml, else 2)",
    "force": "rebuild even when the hash tag exists",
    "dry_run": "print what would be built and why; build nothing, send nothing",
    "backend": f"where to build: {', '.join(BACKENDS)} (local sends images that require Cloud Build there)",
    **_CLOUD_HELP,
    "builder": "local: auto (BuildKit when the docker CLI can drive it), buildkit or classic "
    "(default: [build] builder, else auto)",
    "secret": "a build secret, repeatable: id=ID,src=PATH or id=ID,env=VAR (docker's syntax); "
    "never hashed, logged or stored",
}


def _number(flag: str, value: Any, kind: type) -> Any:
    """Invoke hands optional flags over as strings."""
    if value is None:
        return None
    try:
        return kind(value)
    except ValueError:
        raise Exit(f"error: --{flag.replace('_', '-')}: {value!r} is not a number", code=2) from None


def _cloud_flags(flags: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(settings overrides, CloudBuildFlags fields) from a task's arguments (its `locals()`)."""
    cloud_settings = {"cloudbuild_project": flags["project"], "cloudbuild_bucket": flags["bucket"]}
    cloud = {
        "machine_type": flags["machine_type"],
        "disk_size_gb": _number("disk_size", flags["disk_size"], int),
        "timeout_minutes": _number("timeout", flags["timeout"], int),
        "worker_pool": flags["worker_pool"],
        "region": flags["region"],
        "queued_timeout": _number("queued_timeout", flags["queued_timeout"], float),
        "service_account": flags["service_account"],
        "logs_bucket": flags["logs_bucket"],
        "logging": flags["logging"],
    }
    return cloud_settings, cloud


@task(help=_CASCADE_HELP, iterable=["secret"])
@_pipe_safe
def cascade(
    c: Context,
    registry: str | None = None,
    jobs: int | None = None,
    force: bool = False,
    dry_run: bool = False,
    backend: str = "local",
    project: str | None = None,
    region: str | None = None,
    bucket: str | None = None,
    machine_type: str | None = None,
    disk_size: int | None = None,
    timeout: int | None = None,
    worker_pool: str | None = None,
    queued_timeout: float | None = None,
    service_account: str | None = None,
    logs_bucket: str | None = None,
    logging: str | None = None,
    builder: str | None = None,
    secret: list[str] | None = None,
) -> None:
    """Build every image missing in the target: parents first, independent lineages in parallel."""
    from imagecascade.core.decisions import CascadeOptions

    cloud_settings, cloud = _cloud_flags(locals())
    jobs = _number("jobs", jobs, int)
    _run_cascade(
        CascadeOptions(force=force, dry_run=dry_run),
        registry,
        jobs,
        backend,
        cloud_settings,
        cloud,
        builder=builder,
        secret=secret,
    )


def _image_task(name: str, description: str) -> Task[Any]:
    def build_image(
        c: Context,
        force: bool = False,
        with_parents: bool = False,
        registry: str | None = None,
        dry_run: bool = False,
        backend: str = "local",
        project: str | None = None,
        region: str | None = None,
        bucket: str | None = None,
        machine_type: str | None = None,
        disk_size: int | None = None,
        timeout: int | None = None,
        worker_pool: str | None = None,
        queued_timeout: float | None = None,
        service_account: str | None = None,
        logs_bucket: str | None = None,
        logging: str | None = None,
        builder: str | None = None,
        secret: list[str] | None = None,
    ) -> None:
        from imagecascade.core.decisions import CascadeOptions

        options = CascadeOptions(only=(name,), with_parents=with_parents, force=force, dry_run=dry_run)
        cloud_settings, cloud = _cloud_flags(locals())
        _run_cascade(options, registry, None, backend, cloud_settings, cloud, builder=builder, secret=secret)

    build_image.__doc__ = (description or f"Build image {name}") + (
        f"\n\nBuilds images/{name} when its hash tag is missing in the target."
    )
    return Task(
        _pipe_safe(build_image),
        name=f"build-{name.replace('.', '-').replace('_', '-')}",
        help={
            "force": "rebuild even when the hash tag exists",
            "with_parents": "also build missing parent images first (otherwise a missing parent stops)",
            "registry": _CASCADE_HELP["registry"],
            "dry_run": _CASCADE_HELP["dry_run"],
            "backend": _CASCADE_HELP["backend"],
            "builder": _CASCADE_HELP["builder"],
            "secret": _CASCADE_HELP["secret"],
            **_CLOUD_HELP,
        },
        iterable=["secret"],
    )


def _image_tasks() -> list[Task[Any]]:
    """One `build-<image>` task per images/<name>/image.toml, read cheaply (no hashing)."""
    import tomllib

    try:
        images_dir = find_root(Path.cwd()) / "images"
    except CascadeError:
        return []
    found = []
    for declaration in sorted(images_dir.glob("*/image.toml")):
        try:
            description = str(tomllib.loads(declaration.read_text(encoding="utf-8")).get("description", ""))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            description = ""  # the task still exists; running it reports the problem
        found.append(
            _image_task(
                declaration.parent.name, description.strip().splitlines()[0] if description.strip() else ""
            )
        )
    return found


@task(help={"check": "only report unpinned or moved bases and unpinned or changed artifacts; exit 1 if any"})
def upstream(c: Context, check: bool = False) -> None:
    """Pin each external base to its tag's digest now, and each downloaded artifact to its SHA-256."""
    from imagecascade.engines.registry import RegistryClient
    from imagecascade.pins.upstream import repin

    settings = _settings()
    try:
        report = repin(settings, RegistryClient(), check=check)
    except CascadeError as error:
        raise _fail(error) from error
    for pin in report.changed:
        print(pin.describe())
    total = len(report.pins)
    if not report.changed:
        print(f"{total} pin{'s' if total != 1 else ''} (external references and artifacts): all current")
        return
    if check:
        raise Exit(f"not current: {report.counts()}; run `invoke upstream` to pin them", code=1)
    print(f"pinned: {report.counts()}")
    lock = settings.lock_path.name
    if report.lock_written:
        print(f"{lock}: these entries changed:")
    else:
        print(f"{lock} was stale before and is left as it is; the new pins change these entries:")
    for line in report.lock_lines:
        print(f"  {line}")
    if not report.lock_written:
        print("run `invoke hashes --write`, then `invoke cascade`")
    else:
        print("run `invoke cascade` to build them")


def _names_an_image(argv: list[str], task_name: str, value_flags: tuple[str, ...]) -> bool:
    """Whether `invoke <task_name> ...` in `argv` gives a positional argument.

    invoke makes every positional argument required, and `invoke ref --json` names none: `image`
    is declared positional only when the command line has one, else it stays a plain flag.
    """
    if task_name not in argv:
        return False
    tokens = argv[argv.index(task_name) + 1 :]
    skip = False
    for token in tokens:
        if skip:
            skip = False
        elif token in value_flags:
            skip = True
        elif not token.startswith("-"):
            return True
    return False


@task(
    help={
        "image": "the image (default with --json: every image)",
        "digest": "print REGISTRY/image@sha256:... (needs a registry) instead of the hash tag",
        "json": "print every image's reference, digest and whether it is built, as JSON",
        "registry": "look up in this registry instead of the configured one",
    },
    positional=["image"] if _names_an_image(sys.argv, "ref", ("-r", "--registry", "-i", "--image")) else [],
)
@_pipe_safe
def ref(
    c: Context,
    image: str | None = None,
    digest: bool = False,
    json_: bool = False,
    registry: str | None = None,
) -> None:
    """Print the full reference of an image at its current hash in the target; exit 4 when not built."""
    import dataclasses

    from imagecascade.core.plan import compute_plan
    from imagecascade.engines.store import built_references, open_store, pinned, require_built

    try:
        current = compute_plan(_settings(registry=registry))
        names = [item.name for item in current.images]
        if image and image not in names:
            raise ConfigError(f"no such image: {image} (images/ has: {', '.join(names)})")
        if not image and not json_:
            raise ConfigError("name an image (invoke ref IMAGE), or pass --json for every image")
        store = open_store(current.settings.registry)
        found = built_references(current, store, [image] if image else names, digest=digest)
        if json_:
            print(json.dumps([dataclasses.asdict(item) for item in found], indent=2))
        require_built(found, store.description)  # exit 4 naming every image not built
        if not json_:
            print(pinned(found[0]))
    except CascadeError as error:
        raise _fail(error) from error


ref.help["json"] = ref.help.pop("json")


@task(
    help={
        "keep": "also keep this many newest earlier images of each image (default 1)",
        "dry_run": "only print what would be removed, and which rule keeps or removes each image",
        "registry": "prune the local tags of this registry's images instead of the configured one",
    }
)
@_pipe_safe
def prune(c: Context, keep: int = 1, dry_run: bool = False, registry: str | None = None) -> None:
    """Remove this repository's superseded images from the local engine (never from a registry)."""
    from imagecascade.core.plan import compute_plan
    from imagecascade.engines.engine import Engine
    from imagecascade.engines.prune import RULES, prune_candidates, remove, size_text

    keep = _number("keep", keep, int)
    if keep < 0:
        raise Exit("error: --keep must be 0 or more", code=2)
    try:
        with termination_as_interrupt():
            current = compute_plan(_settings(registry=registry))
            engine = Engine.from_environment()
            candidates = prune_candidates(current, engine, keep)
            if dry_run:
                print(f"rule: {RULES.replace('--keep', f'{keep}')}")
            if not candidates:
                print("nothing to prune: no labelled images of this repository in the local engine")
            removed = freed = 0
            for candidate in candidates:
                if candidate.verdict != "remove":
                    print(f"keep {candidate.describe()}: {candidate.reason}")
                    continue
                if dry_run:
                    print(f"would remove {candidate.describe()}: {candidate.reason}")
                    continue
                problem = remove(engine, candidate)
                if problem:
                    print(f"kept {candidate.describe()}: {problem}")
                    continue
                removed, freed = removed + 1, freed + candidate.size
                print(f"removed {candidate.describe()}")
    except KeyboardInterrupt as interrupt:
        raise Exit(f"interrupted by {interrupt_name(interrupt)}", code=INTERRUPTED) from None
    except CascadeError as error:
        raise _fail(error) from error
    if not dry_run:
        print(f"removed {removed} image{'s' if removed != 1 else ''} (up to {size_text(freed)})")


ns = Collection(hashes, plan, graph, cascade, upstream, ref, prune, *_image_tasks())

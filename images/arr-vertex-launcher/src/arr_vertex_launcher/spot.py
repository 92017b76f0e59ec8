"""Vertex AI spot scheduling for the W&B launch agent, switched on by VERTEX_SPOT=1.

wandb's Vertex runner creates a `google.cloud.aiplatform.CustomJob` and calls its
`run()` or `submit()` without a scheduling strategy. When VERTEX_SPOT asks for spot
capacity, those two methods are wrapped so that the job is submitted with
`scheduling.strategy = SPOT`, unless the caller chose a strategy itself.

A `.pth` file in the interpreter's site-packages (placed at image build time, where
the package was installed) calls `install()` at every interpreter start. That only
reads the environment and, when spot is requested, adds an import hook that patches
`google.cloud.aiplatform.jobs` the first time it is imported, so processes that never
touch Vertex pay nothing. `status()` tells whether the patch is in place.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import Any

ENV_VAR = "VERTEX_SPOT"
TARGET_MODULE = "google.cloud.aiplatform.jobs"
PATCHED_METHODS = ("run", "submit")
_MARK = "__arr_vertex_spot__"
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")

# Process-wide state, read by status(): set by install() and patch().
REQUESTED = False  # VERTEX_SPOT asks for spot capacity
HOOKED = False  # install() ran (normally from the .pth file) and will patch the module
ACTIVE = False  # CustomJob.run and CustomJob.submit now request spot capacity
PROBLEM: str | None = None  # why spot scheduling could not be switched on


class SpotPatchError(RuntimeError):
    """Spot capacity was requested but the installed aiplatform cannot be patched."""


def spot_requested(environ: Mapping[str, str]) -> bool:
    """Whether VERTEX_SPOT asks for spot capacity; ValueError for a value that is neither."""
    value = environ.get(ENV_VAR, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{ENV_VAR}={environ.get(ENV_VAR)!r} is not one of 1/0, true/false, yes/no, on/off")


def with_spot(method: Callable[..., Any], strategy: Any) -> Callable[..., Any]:
    """`method` with its `scheduling_strategy` argument defaulted to `strategy`."""
    import inspect  # here, not at the top: the .pth imports this module in every process

    signature = inspect.signature(method)
    if "scheduling_strategy" not in signature.parameters:
        raise SpotPatchError(
            f"{getattr(method, '__qualname__', method)} takes no scheduling_strategy "
            "(google-cloud-aiplatform is too old for spot scheduling)"
        )

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        if bound.arguments.get("scheduling_strategy") is None:
            bound.arguments["scheduling_strategy"] = strategy
        return method(*bound.args, **bound.kwargs)

    setattr(wrapper, _MARK, True)
    return wrapper


def _spot_strategy(jobs: ModuleType) -> Any:
    compat = getattr(jobs, "gca_custom_job_compat", None)
    if compat is None:
        from google.cloud.aiplatform.compat.types import custom_job as compat  # type: ignore[no-redef]
    return compat.Scheduling.Strategy.SPOT


def patch(jobs: ModuleType) -> None:
    """Make `jobs.CustomJob.run` and `.submit` request spot capacity."""
    global ACTIVE, PROBLEM
    try:
        custom_job = jobs.CustomJob
        strategy = _spot_strategy(jobs)
        wrapped = {
            name: with_spot(getattr(custom_job, name), strategy)
            for name in PATCHED_METHODS
            if not getattr(getattr(custom_job, name), _MARK, False)
        }
    except (AttributeError, ImportError, SpotPatchError) as error:
        PROBLEM = f"{ENV_VAR} asks for spot capacity but {jobs.__name__} cannot be patched: {error}"
        raise SpotPatchError(PROBLEM) from error
    for name, method in wrapped.items():
        setattr(custom_job, name, method)
    ACTIVE = True
    PROBLEM = None


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Finds TARGET_MODULE through the other finders and patches it once executed."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != TARGET_MODULE:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        execute = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            execute(module)
            patch(module)

        # The loader instance belongs to this one spec, so shadowing its method is local.
        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def install(environ: Mapping[str, str] | None = None) -> bool:
    """Arrange for spot scheduling when the environment asks for it; never raises.

    Returns whether spot scheduling was requested. Called from the .pth file, where
    an exception would only print a warning, so problems are kept in PROBLEM.
    """
    global REQUESTED, HOOKED, PROBLEM
    try:
        REQUESTED = spot_requested(os.environ if environ is None else environ)
    except ValueError as error:
        REQUESTED = False
        PROBLEM = str(error)
        return False
    if not REQUESTED:
        return False
    if TARGET_MODULE in sys.modules:
        try:
            patch(sys.modules[TARGET_MODULE])
        except SpotPatchError:
            return True
    elif not any(isinstance(finder, _PatchOnImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _PatchOnImport())
    HOOKED = True
    return True


def status() -> dict[str, Any]:
    """The spot-scheduling state of this process, for the smoke check and the entrypoint."""
    patched: list[str] = []
    jobs = sys.modules.get(TARGET_MODULE)
    custom_job = getattr(jobs, "CustomJob", None)
    for name in PATCHED_METHODS:
        if getattr(getattr(custom_job, name, None), _MARK, False):
            patched.append(name)
    return {
        "requested": REQUESTED,
        "hooked": HOOKED,
        "active": ACTIVE,
        "patched_methods": patched,
        "problem": PROBLEM,
    }

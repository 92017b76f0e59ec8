"""Every error a user can see, each with its own exit code.

Only the entry points (tasks.py, noxfile.py, the hook) turn these into exits.
"""

from __future__ import annotations


class CascadeError(Exception):
    """Root of every error this package raises on purpose."""

    exit_code = 1


class ConfigError(CascadeError):
    """Bad input: an image declaration, a Dockerfile, a settings file or an option."""

    exit_code = 2


class BackendError(CascadeError):
    """The engine, a registry or a cloud service failed or could not be reached.

    Never means "image missing": callers stop instead of rebuilding.
    """

    exit_code = 3


class BuildFailed(CascadeError):
    """One or more images failed to build or were blocked by a failed parent."""

    exit_code = 1


class NotBuilt(CascadeError):
    """An image that an operation needs has not been built yet."""

    exit_code = 4

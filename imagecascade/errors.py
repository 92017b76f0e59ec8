"""Every error a user can see, each with its own exit code.

Only the entry points (tasks.py, noxfile.py, the hook) turn these into exits. The exit codes, as
README's table documents them:

    0    success: everything asked for is built, present or current
    1    a build failed (its descendants blocked); a check found problems (stale lock, smoke failure)
    2    bad input: an image declaration, Dockerfile, settings file or option; an image that cannot
         be built as declared (the rest was built)
    3    the Docker Engine, a registry or a cloud service failed or could not be reached
    4    an image the command needs is not built
    130  interrupted: Ctrl-C, SIGTERM or SIGHUP
"""

from __future__ import annotations

INTERRUPTED = 130


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

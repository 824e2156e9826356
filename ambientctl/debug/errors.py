"""Errors of `ambientctl`'s debugging commands (`ztunnel-config`, `why`, `analyze`).

Raised by the modules of `ambientctl.debug`; caught once, in the command functions registered by
`ambientctl.debug.register`, which print the message to stderr and exit with `exit_code`.
Every message names the object and, where we know one, the fix. These are the user's (or the
environment's) problems, never a bug of ours: bugs propagate as ordinary exceptions.
"""

from __future__ import annotations


class DebugError(Exception):
    """Base of every error the debugging commands report to the user (exit code 2)."""

    exit_code = 2


class AdminUnreachableError(DebugError):
    """The ztunnel admin endpoint did not answer (or answered something that is not a dump)."""


class NotFoundError(DebugError):
    """A pod, service or IP named on the command line is not in the configuration."""


class SourceError(DebugError):
    """The configuration source (a manifest folder) could not be read."""

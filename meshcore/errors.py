"""The base error of the shared package; each subsystem below it subclasses this."""

from __future__ import annotations


class MeshCoreError(Exception):
    """Base of every error raised by meshcore."""

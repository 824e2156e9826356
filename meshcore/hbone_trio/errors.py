"""Errors of the trio HBONE adapters (one base: `HboneTrioError`).

`ConnectionLostError` and `StreamResetError` are also `trio.BrokenResourceError`s, so code that
treats a tunnel as a plain trio stream handles them without knowing HBONE ("it broke", not "we
closed it": ClosedResourceError is for our own closes).
"""

from __future__ import annotations

import trio

from meshcore.errors import MeshCoreError


class HboneTrioError(MeshCoreError):
    """Base error of the trio HBONE adapters."""


class ConnectionLostError(HboneTrioError, trio.BrokenResourceError):
    """The HBONE connection under a tunnel failed (TLS error, peer gone, GOAWAY, PING timeout)."""


class StreamResetError(HboneTrioError, trio.BrokenResourceError):
    """The peer (or we) reset the tunnel's HTTP/2 stream; `error_code` says why."""

    def __init__(self, message: str, *, stream_id: int, error_code: int, remote: bool) -> None:
        super().__init__(message)
        self.stream_id = stream_id
        self.error_code = error_code
        self.remote = remote

"""Errors of the waypoint process (one base: `WaypointError`).

Raised by the config parsing (`waypoint.config`, operator's fault: the message names the flag),
by the sans-IO HTTP layer (`waypoint.http`, the peer's fault: `HttpProtocolError` carries the
status to answer) and by the upstream side (`waypoint.proxy.upstream`, `UpstreamError`: the
backend's or the network's fault, with Envoy-style response flags for telemetry). The route
and policy gates have their own errors (`RouteConfigError`, `PolicyConfigError`), which the
xDS client NACKs.
"""

from __future__ import annotations

from meshcore.errors import MeshCoreError


class WaypointError(MeshCoreError):
    """Base error of the waypoint process."""


class WaypointConfigError(WaypointError):
    """A flag or environment variable is missing or invalid (operator's fault; fix the flag)."""


class HttpProtocolError(WaypointError):
    """The downstream peer broke HTTP/1.1 or HTTP/2 (peer's fault); answer `status` if we can.

    `stream_id` is set for an HTTP/2 stream-level problem (that stream is reset, the
    connection lives on); None means the whole tunnel is closed after the answer.
    """

    def __init__(self, message: str, *, status: int = 400, stream_id: int | None = None,
                 refused: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.stream_id = stream_id
        self.refused = refused  # an upstream HTTP/2 REFUSED_STREAM (retriable as such)


class UpstreamError(WaypointError):
    """An attempt to a backend endpoint produced no response.

    `reset` is a retry reason (`waypoint.resilience.retry.RESET_REASONS`: connect-failure,
    refused-stream, reset, timeout) and `flags` the Envoy response flag for metrics (UF: upstream
    connection failure, UC: upstream connection termination, UT: upstream request timeout,
    UO: overflow, UH: no healthy upstream).
    """

    def __init__(self, message: str, *, reset: str, flags: str, upstream: str = "") -> None:
        super().__init__(message)
        self.reset = reset
        self.flags = flags
        self.upstream = upstream

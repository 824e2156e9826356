"""What the upstream pool's HTTP/1.1 and HTTP/2 halves share: keys, settings, counters.

Used by `waypoint.proxy.pool` (HTTP/1.1 keep-alive, the entry point) and
`waypoint.proxy.pool_h2` (multiplexed HTTP/2). Pure definitions and one helper.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable

import trio

from meshcore.hbone_trio import ConnectionLostError, StreamResetError

log = logging.getLogger("waypoint.pool")
READ_SIZE = 256 * 1024
PUMP_HIGH_WATER = 64 * 1024
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
BROKEN = (trio.BrokenResourceError, trio.ClosedResourceError, StreamResetError,
          ConnectionLostError)
OpenStream = Callable[[], Awaitable[trio.abc.Stream]]
PoolKey = tuple[str, str, str]  # (endpoint ip:port, "h1" | "h2", expected identity)


@dataclasses.dataclass(frozen=True)
class PoolConfig:
    """See docs/waypoint.md "Upstream connection pool" for why these values."""

    max_idle_per_host: int = 32
    idle_timeout: float = 30.0


@dataclasses.dataclass
class PoolCounters:
    opened: int = 0  # connections opened
    reused: int = 0  # exchanges on a connection that had served one before
    stale_retries: int = 0  # reused connections found dead, request resent on a fresh one
    closed_idle: int = 0  # idle connections closed by the peer, by timeout or unexpected data
    h2_streams: int = 0  # HTTP/2 streams opened
    # HTTP/1.1 request bodies not written to their end (mostly: the response ended first;
    # also timeouts and broken backends); their connections are closed, never reused.
    cut_uploads: int = 0


async def close_quietly(stream: trio.abc.Stream) -> None:
    """Close an upstream stream now (shielded, bounded): it is never reused."""
    with trio.CancelScope(shield=True), trio.move_on_after(1):
        await trio.aclose_forcefully(stream)

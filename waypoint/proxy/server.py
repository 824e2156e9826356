"""Assemble and run the waypoint data path: HBONE listener → tunnels → requests → HBONE out.

Who calls it: `waypoint.app.run` (with the xDS-fed state and the CertificateManager) and the
component tests (with hand-built state and test certificates). `serve_waypoint(...)` owns an
HBONE client pool, the upstream state, the request handler and the tunnel tasks, all in its
nursery; it calls `task_status.started(WaypointProxy)` once the listeners accept.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Awaitable, Callable, Sequence

import trio

from meshcore.hbone_trio import ServerConfig, open_hbone_client, serve_hbone
from meshcore.identity import SpiffeId
from meshcore.tlsconfig import WorkloadCredentials
from waypoint.http import Limits
from waypoint.proxy.downstream import Downstream
from waypoint.proxy.handler import Observers, RequestHandler
from waypoint.proxy.listener import WaypointProxy
from waypoint.proxy.upstream import UpstreamConfig, Upstreams
from waypoint.state import WaypointState


async def serve_waypoint(
    listeners: Sequence[trio.SocketListener],
    *,
    state: Callable[[], WaypointState],
    waypoint: str,
    identity: SpiffeId,
    credentials: Callable[[], Awaitable[WorkloadCredentials]],
    credentials_nowait: Callable[[], WorkloadCredentials | None],
    observers: Observers | None = None,
    upstream: UpstreamConfig | None = None,
    limits: Limits | None = None,
    rng: random.Random | None = None,
    task_status: trio.TaskStatus[WaypointProxy] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled. `waypoint` is this Gateway's `ns/name` (for policy targeting)."""
    upstream = upstream or UpstreamConfig(limits=limits or Limits())
    async with open_hbone_client() as hbone, trio.open_nursery() as nursery:
        upstreams = Upstreams(hbone, credentials, upstream, rng)
        handler = RequestHandler(state, waypoint, upstreams, observers or Observers(), nursery,
                                 rng)
        proxy = WaypointProxy(Downstream(handler, limits), nursery, identity, credentials_nowait)
        # Envoy's connect_terminate listener: 100 concurrent streams per connection.
        await nursery.start(functools.partial(
            serve_hbone, listeners, proxy.credentials_for, proxy.handle_connect,
            config=ServerConfig()))
        task_status.started(proxy)

"""Assemble and run the waypoint data path: HBONE listener → tunnels → requests → HBONE out.

Who calls it: `waypoint.app.run` (with the xDS-fed state and the CertificateManager) and the
component tests (with hand-built state and test certificates). `serve_waypoint(...)` owns an
HBONE client pool, the upstream HTTP connection pool, the upstream state, the request handler
and the tunnel tasks, all in its nursery; it calls `task_status.started(WaypointProxy)` once
the listeners accept.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Sequence
from functools import partial

import trio

from meshcore.hbone_trio import (
    ConnectOutcome,
    ConnectRequest,
    ServerConfig,
    TunnelStream,
    open_hbone_client,
    serve_hbone,
)
from meshcore.identity import SpiffeId
from meshcore.tlsconfig import WorkloadCredentials
from waypoint.http import Limits
from waypoint.proxy.downstream import Downstream
from waypoint.proxy.handler import Observers, RequestHandler
from waypoint.proxy.listener import WaypointProxy
from waypoint.proxy.pool import UpstreamPool
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
        pool = UpstreamPool(nursery, upstream.limits, upstream.pool)
        upstreams = Upstreams(hbone, credentials, upstream, rng, pool=pool)
        handler = RequestHandler(state, waypoint, upstreams, observers or Observers(), nursery,
                                 rng)
        proxy = WaypointProxy(Downstream(handler, limits), nursery, identity, credentials_nowait)

        async def handle_connect(request: ConnectRequest) -> ConnectOutcome:
            admitted = await proxy.admit(request)
            if isinstance(admitted, ConnectOutcome):
                return admitted

            async def serve(tunnel: TunnelStream) -> None:
                await proxy.downstream.serve_tunnel(tunnel, admitted)

            return ConnectOutcome.serve_here(serve)  # the HTTP inside is parsed in place

        await nursery.start(partial(serve_hbone, listeners, proxy.credentials_for,
                                    handle_connect, config=ServerConfig()))
        task_status.started(proxy)

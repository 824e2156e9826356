"""The waypoint's configuration feed: Delta xDS on the asyncio bridge → `WaypointState` in trio.

Who calls it: `waypoint.app` starts `await nursery.start(client.run, bridge)`; the proxy reads
`current()` per tunnel and per request, readiness uses `wait_synced()` / `synced`.
Subscribes (wildcard) to Address, Authorization, RouteConfiguration and L7Authorization
(`waypoint.state.WAYPOINT_TYPES`) on one stream.

How: `meshcore.xds.client.XdsClient.run` runs on the bridge's loop (`bridge.call`); its
handler applies each delta to the one `WaypointStore` (single writer, on the loop thread; a
`ResourceRejected` from a gate becomes a NACK and the last good state stays) and hands the new
immutable state to trio with `bridge.to_trio`. The data path never waits on the control plane.
(ztunnel's `ConfigClient` does the same for its two types; the delivery part could move to
meshcore and be shared.)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping

import trio

from meshcore.grpc_bridge import AsyncioBridge
from meshcore.protos.envoy.config.core.v3 import Node
from meshcore.wds import ResourceUpdate
from meshcore.xds.client import Backoff, ChannelOpener, XdsClient, XdsClientStatistics
from meshcore.xds.protocol import ReceivedDelta
from waypoint.state import WAYPOINT_TYPES, WaypointState, WaypointStore


class WaypointConfigClient:
    """Trio-facing holder of the latest `WaypointState`."""

    def __init__(self, open_channel: ChannelOpener, *, node: Node,
                 token_provider: Callable[[], str] | None = None,
                 metadata: Mapping[str, str] | None = None,
                 backoff: Backoff | None = None) -> None:
        self._store = WaypointStore()  # only touched on the asyncio thread
        self._current = self._store.state
        self._changed = trio.Event()
        self._bridge: AsyncioBridge | None = None
        self._running = False
        self.xds = XdsClient(open_channel, node=node, type_urls=WAYPOINT_TYPES,
                             handler=self._apply, token_provider=token_provider,
                             metadata=metadata, backoff=backoff or Backoff())

    def current(self) -> WaypointState:
        """The latest applied state (empty before the first response). Never blocks."""
        return self._current

    @property
    def synced(self) -> bool:
        return frozenset(WAYPOINT_TYPES) <= self._current.synced_types

    def statistics(self) -> XdsClientStatistics:
        return self.xds.statistics()

    async def wait_synced(self) -> WaypointState:
        """Wait until every subscribed type was received once."""
        return await self.wait_for(lambda s: frozenset(WAYPOINT_TYPES) <= s.synced_types)

    async def wait_for(self, predicate: Callable[[WaypointState], bool]) -> WaypointState:
        while not predicate(self._current):
            await self._changed.wait()
        return self._current

    async def run(self, bridge: AsyncioBridge, *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the xDS client on `bridge` until cancelled."""
        self._bridge = bridge
        self._running = True
        task_status.started()
        try:
            await bridge.call(self.xds.run)
        finally:
            self._running = False

    def _apply(self, delta: ReceivedDelta) -> None:
        """On the asyncio thread: apply (ResourceRejected → NACK by XdsClient), hand to trio."""
        state = self._store.apply(delta.type_url,
                                  [ResourceUpdate(r.name, r.value) for r in delta.resources],
                                  delta.removed)
        assert self._bridge is not None
        self._bridge.to_trio(self._publish, state)

    def _publish(self, state: WaypointState) -> None:
        """On the trio thread (a `run_sync_soon` callback: must not raise)."""
        with contextlib.suppress(Exception):
            if state.generation >= self._current.generation:
                self._current = state
                self._changed.set()
                self._changed = trio.Event()

"""The waypoint's configuration feed: Delta xDS on the asyncio bridge → `WaypointState` in trio.

Who calls it: `waypoint.app` starts `await nursery.start(client.run, bridge)`; the proxy reads
`current()` per tunnel and per request, readiness uses `wait_synced()` / `synced`.
Subscribes (wildcard) to Address, Authorization, RouteConfiguration and L7Authorization
(`waypoint.state.WAYPOINT_TYPES`) on one stream.

How: `meshcore.xds.bridge_client.XdsSnapshotClient` (shared with ztunnel) runs the xDS client
on the bridge's loop and publishes to trio; this subclass only picks the store: one
`WaypointStore` (single writer, on the loop thread; a `ResourceRejected` from a gate becomes a
NACK and the last good state stays). The data path never waits on the control plane.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from meshcore.protos.envoy.config.core.v3 import Node
from meshcore.xds.bridge_client import XdsSnapshotClient
from meshcore.xds.client import Backoff, ChannelOpener
from waypoint.state import WAYPOINT_TYPES, WaypointState, WaypointStore


class WaypointConfigClient(XdsSnapshotClient[WaypointState]):
    """Trio-facing holder of the latest `WaypointState`."""

    def __init__(self, open_channel: ChannelOpener, *, node: Node,
                 token_provider: Callable[[], str] | None = None,
                 metadata: Mapping[str, str] | None = None,
                 backoff: Backoff | None = None) -> None:
        store = WaypointStore()
        super().__init__(open_channel, node=node, type_urls=WAYPOINT_TYPES, apply=store.apply,
                         initial=store.state, token_provider=token_provider,
                         metadata=metadata, backoff=backoff)

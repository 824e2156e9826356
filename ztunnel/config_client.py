"""ztunnel's configuration feed: Delta xDS on the asyncio bridge, snapshots delivered to trio.

Who calls it: ztunnel's main starts `ConfigClient.run(bridge, task_status=...)` in its nursery
(`await nursery.start(client.run, bridge)`); the data path reads `current()` per connection
and `wait_synced()` gates readiness. What it hands to: immutable `meshcore.wds.Snapshot`s.

How it works: `meshcore.xds.bridge_client.XdsSnapshotClient` (shared with the waypoint) runs
the xDS client on the bridge's asyncio thread and publishes to trio; this subclass only picks
the store (one `meshcore.wds.Store`, the single writer, touched on the asyncio thread) and the
subscribed types (Address and Authorization). A `ConversionError` from the store becomes a NACK
and the previous snapshot stays current; with istiod down the last snapshot keeps being served.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from meshcore.protos.envoy.config.core.v3 import Node
from meshcore.wds.store import Snapshot, Store
from meshcore.xds.bridge_client import XdsSnapshotClient
from meshcore.xds.client import Backoff, ChannelOpener
from meshcore.xds.types import ZTUNNEL_TYPES


class ConfigClient(XdsSnapshotClient[Snapshot]):
    """Trio-facing holder of the latest workload-API snapshot, fed by Delta xDS."""

    def __init__(
        self,
        open_channel: ChannelOpener,
        *,
        node: Node,
        type_urls: Sequence[str] = ZTUNNEL_TYPES,
        token_provider: Callable[[], str] | None = None,
        metadata: Mapping[str, str] | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        store = Store()
        super().__init__(
            open_channel, node=node, type_urls=type_urls, apply=store.apply,
            initial=store.snapshot, token_provider=token_provider, metadata=metadata,
            backoff=backoff,
        )

"""ztunnel's configuration feed: Delta xDS on the asyncio bridge, snapshots delivered to trio.

Who calls it: ztunnel's main starts `ConfigClient.run(bridge, task_status=...)` in its nursery
(`await nursery.start(client.run, bridge)`); the data path reads `current()` per connection
and `wait_synced()` gates readiness. What it hands to: immutable `meshcore.wds.Snapshot`s.

How it works: `meshcore.xds.client.XdsClient.run` runs on the bridge's asyncio thread (via
`bridge.call`, so a crash there propagates into this trio task and trio cancellation stops
it). Its handler applies each delta to the one `meshcore.wds.Store` (the single writer,
living on the asyncio thread) and sends the resulting snapshot to trio through a memory
channel (`bridge.to_trio`). A `ConversionError` from the store becomes a NACK and the
previous snapshot stays current. When istiod is down the client reconnects with back-off and
the last snapshot keeps being served; on reconnect it resumes with the versions it has.

This is the one ztunnel module that names the asyncio xDS client (the crossing happens
through `meshcore.grpc_bridge` only); trio code elsewhere imports only `meshcore.wds`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping, Sequence

import trio

from meshcore.grpc_bridge import AsyncioBridge
from meshcore.protos.envoy.config.core.v3 import Node
from meshcore.wds.store import ResourceUpdate, Snapshot, Store
from meshcore.xds.client import Backoff, ChannelOpener, XdsClient, XdsClientStatistics
from meshcore.xds.protocol import ReceivedDelta
from meshcore.xds.types import ZTUNNEL_TYPES


class ConfigClient:
    """Trio-facing holder of the latest config snapshot, fed by Delta xDS."""

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
        self._store = Store()  # touched only on the asyncio thread, by _apply
        self._type_urls = frozenset(type_urls)
        self._current = self._store.snapshot
        self._changed = trio.Event()
        self._connected = False
        self._connection_event = trio.Event()
        self._send: trio.MemorySendChannel[Snapshot] | None = None
        self._bridge: AsyncioBridge | None = None
        self._xds = XdsClient(
            open_channel,
            node=node,
            type_urls=type_urls,
            handler=self._apply,
            token_provider=token_provider,
            metadata=metadata,
            backoff=backoff or Backoff(),
            on_connection=self._connection_changed,
        )

    def current(self) -> Snapshot:
        """The latest applied snapshot (empty before the first response). Never blocks."""
        return self._current

    def statistics(self) -> XdsClientStatistics:
        """The xDS client's counters (connected, connects, NACKs, last error, ...)."""
        return self._xds.statistics()

    @property
    def connected(self) -> bool:
        """Whether an xDS stream to istiod is open right now (as last reported to trio)."""
        return self._connected

    async def wait_connection(self, connected: bool) -> None:
        """Wait until the xDS stream is open (`True`) or down (`False`)."""
        while self._connected != connected:
            await self._connection_event.wait()

    async def wait_synced(self) -> Snapshot:
        """Wait until every subscribed type has been received once; return that snapshot."""
        return await self.wait_for(lambda s: self._type_urls <= s.synced_types)

    async def wait_for(self, predicate: Callable[[Snapshot], bool]) -> Snapshot:
        """Wait until the current snapshot satisfies `predicate`; return it."""
        while not predicate(self._current):
            await self._changed.wait()
        return self._current

    async def run(
        self,
        bridge: AsyncioBridge,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run the xDS client on `bridge` and publish its snapshots; returns only when cancelled."""
        send, receive = trio.open_memory_channel[Snapshot](math.inf)
        self._send, self._bridge = send, bridge
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._publish, receive)
            task_status.started()
            async with send:
                await bridge.call(self._xds.run)

    def _apply(self, delta: ReceivedDelta) -> None:
        """On the asyncio thread: apply atomically (ConversionError -> NACK), hand to trio."""
        snapshot = self._store.apply(
            delta.type_url,
            [ResourceUpdate(r.name, r.value) for r in delta.resources],
            delta.removed,
        )
        assert self._bridge is not None
        self._bridge.to_trio(self._deliver, snapshot)

    def _deliver(self, snapshot: Snapshot) -> None:
        """On the trio thread. A snapshot racing with shutdown is dropped, not raised: an
        exception in a `run_sync_soon` callback would take trio down."""
        assert self._send is not None
        with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
            self._send.send_nowait(snapshot)

    def _connection_changed(self, connected: bool) -> None:
        """On the asyncio thread: report stream up/down to trio."""
        if self._bridge is not None:
            self._bridge.to_trio(self._set_connected, connected)

    def _set_connected(self, connected: bool) -> None:
        self._connected = connected
        self._connection_event.set()
        self._connection_event = trio.Event()

    async def _publish(self, receive: trio.MemoryReceiveChannel[Snapshot]) -> None:
        async with receive:
            async for snapshot in receive:
                self._current = snapshot
                self._changed.set()
                self._changed = trio.Event()
        self._connected = False
        self._connection_event = trio.Event()

"""A trio-facing config feed: Delta xDS on the asyncio bridge, immutable snapshots for trio.

Who calls it: ztunnel (`ztunnel.config_client.ConfigClient`, over `meshcore.wds.Store`) and the
waypoint (`waypoint.config_client.WaypointConfigClient`, over `waypoint.state.WaypointStore`)
subclass `XdsSnapshotClient`, passing their store's `apply` and its initial snapshot. Their main
starts `await nursery.start(client.run, bridge)`; the data path reads `current()` per connection
or request, readiness uses `synced` / `wait_synced()`, the admin view `statistics()`.
What it hands to: the store's immutable snapshots (anything with `generation` and
`synced_types`), unchanged.

How it works: `meshcore.xds.client.XdsClient.run` runs on the bridge's asyncio thread (via
`bridge.call`, so a crash there propagates into the trio task and trio cancellation stops it).
Its handler applies each delta to the one store (the single writer, touched only on the asyncio
thread) and hands the resulting snapshot to trio with `bridge.to_trio`. A `ResourceRejected`
from the store (`meshcore.wds.ConversionError`, the waypoint's route/policy errors) becomes a
NACK and the previous snapshot stays current. When istiod is down the client reconnects with
back-off and the last snapshot keeps being served; on reconnect it resumes with the versions it
has. Stream up/down is reported to trio too (`connected`, `wait_connection`).

Invariants: trio state (`current()`, `connected`, the events) changes only in `to_trio`
callbacks on the trio thread, which never raise (an exception there would take trio down);
the published generation never goes backwards. This module names the asyncio xDS client but
imports no asyncio or grpclib itself: the crossing happens through `meshcore.grpc_bridge`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Generic, Protocol, TypeVar

import trio

from meshcore.grpc_bridge import AsyncioBridge
from meshcore.protos.envoy.config.core.v3 import Node
from meshcore.wds.store import ResourceUpdate
from meshcore.xds.client import Backoff, ChannelOpener, XdsClient, XdsClientStatistics
from meshcore.xds.protocol import ReceivedDelta


class XdsSnapshot(Protocol):
    """What the feed needs to know about a snapshot (frozen dataclasses satisfy it)."""

    @property
    def generation(self) -> int: ...

    @property
    def synced_types(self) -> frozenset[str]: ...


S = TypeVar("S", bound=XdsSnapshot)
# `Store.apply(type_url, upserts, removed) -> snapshot`; raises ResourceRejected to NACK.
ApplyDelta = Callable[[str, Iterable[ResourceUpdate], Iterable[str]], S]


class XdsSnapshotClient(Generic[S]):
    """Trio-facing holder of the latest snapshot of one store, fed by Delta xDS."""

    def __init__(
        self,
        open_channel: ChannelOpener,
        *,
        node: Node,
        type_urls: Sequence[str],
        apply: ApplyDelta[S],
        initial: S,
        token_provider: Callable[[], str] | None = None,
        metadata: Mapping[str, str] | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self._apply_delta = apply  # called only on the asyncio thread, by _apply
        self.type_urls = frozenset(type_urls)
        self._current = initial
        self._changed = trio.Event()
        self._connected = False
        self._connection_event = trio.Event()
        self._bridge: AsyncioBridge | None = None
        self._running = False
        self.xds = XdsClient(
            open_channel,
            node=node,
            type_urls=type_urls,
            handler=self._apply,
            token_provider=token_provider,
            metadata=metadata,
            backoff=backoff or Backoff(),
            on_connection=self._connection_changed,
        )

    def current(self) -> S:
        """The latest applied snapshot (the initial one before the first response). Never blocks."""
        return self._current

    @property
    def synced(self) -> bool:
        """Whether every subscribed type has been received at least once."""
        return self.type_urls <= self._current.synced_types

    def statistics(self) -> XdsClientStatistics:
        """The xDS client's counters (connected, connects, NACKs, last error, ...)."""
        return self.xds.statistics()

    @property
    def connected(self) -> bool:
        """Whether an xDS stream to istiod is open right now (as last reported to trio)."""
        return self._connected

    async def wait_connection(self, connected: bool) -> None:
        """Wait until the xDS stream is open (`True`) or down (`False`)."""
        while self._connected != connected:
            await self._connection_event.wait()

    async def wait_synced(self) -> S:
        """Wait until every subscribed type has been received once; return that snapshot."""
        return await self.wait_for(lambda s: self.type_urls <= s.synced_types)

    async def wait_for(self, predicate: Callable[[S], bool]) -> S:
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
        self._bridge = bridge
        self._running = True
        task_status.started()
        try:
            await bridge.call(self.xds.run)
        finally:
            self._running = False
            self._set_connected(False)

    def _apply(self, delta: ReceivedDelta) -> None:
        """On the asyncio thread: apply atomically (ResourceRejected -> NACK), hand to trio."""
        snapshot = self._apply_delta(
            delta.type_url,
            [ResourceUpdate(r.name, r.value) for r in delta.resources],
            delta.removed,
        )
        assert self._bridge is not None
        self._bridge.to_trio(self._publish, snapshot)

    def _publish(self, snapshot: S) -> None:
        """On the trio thread (a `run_sync_soon` callback: must not raise). A snapshot that
        races with shutdown is dropped; generations only move forward."""
        if not self._running or snapshot.generation < self._current.generation:
            return
        self._current = snapshot
        self._changed.set()
        self._changed = trio.Event()

    def _connection_changed(self, connected: bool) -> None:
        """On the asyncio thread: report stream up/down to trio."""
        if self._bridge is not None:
            self._bridge.to_trio(self._set_connected, connected)

    def _set_connected(self, connected: bool) -> None:
        """On the trio thread; never raises."""
        if connected and not self._running:
            return  # a late report after run() ended
        self._connected = connected
        self._connection_event.set()
        self._connection_event = trio.Event()

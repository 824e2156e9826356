"""The Delta ADS gRPC service (grpclib): streams, debounced pushes, counters, settle waits.

Who calls it: istiod_lite's main adds an `XdsServer` to its `grpclib.server.Server` and feeds it
the translated workload API with `set_resources(type_url, {name: message})` (the full desired
state of one type; the cache diffs and versions it). Clients are ztunnels and waypoints
(`meshcore.xds.client`). What it hands to: each stream's `ClientStream` state machine decides
what to send; this module only moves messages, waits, logs and counts.

Behaviour:
* `DeltaAggregatedResources` is served; `StreamAggregatedResources` (state of the world)
  answers UNIMPLEMENTED (the base class's handler).
* Each stream runs two tasks: the receive loop (requests -> state machine -> responses) and
  the push loop (cache changes -> state machine -> responses). One lock per stream keeps
  "decide, then send" atomic, so responses leave in the order they were decided.
* Debounce: after a change a stream waits until no change arrived for `quiet` seconds, but no
  longer than `max_delay` after the first unpushed change, then pushes once (coalescing
  bursts). A stream's first responses (on subscribe) are never delayed.
* A NACK is logged at WARNING with the node id, type, nonce and the client's message, and the
  rejected versions are not re-sent (rule 4 of `subscription`).
* `wait_settled(generation)` returns once every connected client has answered every push up to
  that generation (ACKed it, or NACKed versions that will not be re-sent), with no sleeping.

Invariants: everything runs on the asyncio loop that serves the grpclib server; `set_resources`
must be called on that loop's thread (it is synchronous and never blocks).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import itertools
import logging
import time
from collections.abc import Collection, Mapping

import betterproto
import grpclib.const
import grpclib.server
from grpclib.exceptions import GRPCError

from istiod_lite.xds.cache import ResourceCache
from istiod_lite.xds.errors import XdsProtocolError
from istiod_lite.xds.subscription import (
    Ack,
    ClientStream,
    Nack,
    ResourceFilter,
    StaleNonce,
    Step,
)
from meshcore.protos.envoy.service.discovery.v3 import (
    AggregatedDiscoveryServiceBase,
    DeltaDiscoveryRequest,
    DeltaDiscoveryResponse,
)
from meshcore.xds.types import DELTA_METHOD

log = logging.getLogger("istiod_lite.xds")

_SHUTDOWN_MESSAGE = "istiod_lite is shutting down; reconnect"
_RESET_TIMEOUT = 1.0
DeltaStream = grpclib.server.Stream[DeltaDiscoveryRequest, DeltaDiscoveryResponse]


@dataclasses.dataclass(frozen=True, slots=True)
class DebounceConfig:
    """Push coalescing: wait `quiet` s after the last change, at most `max_delay` s in total."""

    quiet: float = 0.010
    max_delay: float = 0.100


@dataclasses.dataclass(frozen=True, slots=True)
class LatencySummary:
    """Seconds from a change reaching the cache to the response carrying it being sent."""

    count: int = 0
    mean: float = 0.0
    p50: float = 0.0
    p90: float = 0.0
    p99: float = 0.0
    max: float = 0.0  # over the recent window, like the percentiles


@dataclasses.dataclass(frozen=True, slots=True)
class ClientStatistics:
    stream_id: int
    node_id: str
    role: str
    node_name: str
    types: tuple[str, ...]
    settled_generation: int


@dataclasses.dataclass(frozen=True, slots=True)
class XdsServerStatistics:
    generation: int
    connected_clients: int
    clients: tuple[ClientStatistics, ...]
    pushes: int  # responses sent, initial ones included
    resources_sent: int
    removals_sent: int
    acks: int
    nacks: int
    stale_nonces: int
    push_latency: LatencySummary


class _Connection:
    __slots__ = ("closing", "first_unpushed", "lock", "state", "wake")

    def __init__(self, state: ClientStream) -> None:
        self.state = state
        self.closing = asyncio.Event()
        self.wake = asyncio.Event()
        self.lock = asyncio.Lock()
        self.first_unpushed: float | None = None  # monotonic time of the oldest unpushed change


class XdsServer(AggregatedDiscoveryServiceBase):
    """Delta ADS over grpclib. Add to a `grpclib.server.Server`; feed with `set_resources`."""

    def __init__(
        self,
        *,
        debounce: DebounceConfig = DebounceConfig(),
        resource_filter: ResourceFilter | None = None,
        latency_window: int = 1024,
    ) -> None:
        self.cache = ResourceCache()
        self._debounce = debounce
        self._filter = resource_filter
        self._connections: set[_Connection] = set()
        self._closed = False
        self._ids = itertools.count(1)
        self._last_change = 0.0
        self._progress = asyncio.Event()
        self._latencies: collections.deque[float] = collections.deque(maxlen=latency_window)
        self._latency_count = 0
        self._latency_sum = 0.0
        self._pushes = self._resources_sent = self._removals_sent = 0
        self._acks = self._nacks = self._stale = 0

    # --- input ----------------------------------------------------------------------------

    def set_resources(self, type_url: str, resources: Mapping[str, betterproto.Message]) -> int:
        """Make `resources` the full desired state of `type_url`; return the cache generation.

        Only what changed is pushed (after the debounce). Call on the server's event loop.
        """
        change = self.cache.set_resources(type_url, resources)
        if not change.empty:
            now = time.monotonic()
            self._last_change = now
            for conn in self._connections:
                if conn.first_unpushed is None:
                    conn.first_unpushed = now
                conn.wake.set()
        return self.cache.generation

    def set_all_resources(
        self, by_type_url: Mapping[str, Mapping[str, betterproto.Message]]
    ) -> int:
        """`set_resources` for several types at once (e.g. a translator's ResourceSet
        `.by_type_url`); the debounce makes it one push per client. Returns the generation."""
        for type_url, resources in by_type_url.items():
            self.set_resources(type_url, resources)
        return self.cache.generation

    # --- observation ----------------------------------------------------------------------

    def statistics(self) -> XdsServerStatistics:
        clients = tuple(
            ClientStatistics(
                stream_id=c.state.stream_id,
                node_id=c.state.node.id if c.state.node else "",
                role=c.state.node.role if c.state.node else "",
                node_name=c.state.node.node_name if c.state.node else "",
                types=tuple(c.state.types),
                settled_generation=min(
                    (t.settled_generation for t in c.state.types.values()), default=-1
                ),
            )
            for c in sorted(self._connections, key=lambda c: c.state.stream_id)
        )
        return XdsServerStatistics(
            generation=self.cache.generation,
            connected_clients=len(self._connections),
            clients=clients,
            pushes=self._pushes,
            resources_sent=self._resources_sent,
            removals_sent=self._removals_sent,
            acks=self._acks,
            nacks=self._nacks,
            stale_nonces=self._stale,
            push_latency=self._latency_summary(),
        )

    async def wait_settled(
        self,
        generation: int | None = None,
        *,
        clients: int = 0,
        type_urls: Collection[str] = (),
    ) -> None:
        """Wait until `clients` clients are connected, each subscribed to `type_urls`, and all
        connected clients have settled `generation` (default: the current generation).

        "Settled" means the client answered every push up to it: ACKed, or NACKed versions that
        will not be re-sent. Never sleeps: woken by every request and push.
        """
        target = self.cache.generation if generation is None else generation
        wanted = set(type_urls)
        while not (
            len(self._connections) >= clients
            and all(
                c.state.types and wanted <= c.state.types.keys() and c.state.settled(target)
                for c in self._connections
            )
        ):
            event = self._progress
            await event.wait()

    # --- grpclib plumbing -----------------------------------------------------------------

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        mapping = super().__mapping__()
        mapping[DELTA_METHOD] = grpclib.const.Handler(
            self._delta_stream,
            grpclib.const.Cardinality.STREAM_STREAM,
            DeltaDiscoveryRequest,
            DeltaDiscoveryResponse,
        )
        return mapping

    async def _delta_stream(self, stream: DeltaStream) -> None:
        if self._closed:
            raise GRPCError(grpclib.const.Status.UNAVAILABLE, _SHUTDOWN_MESSAGE)
        conn = _Connection(ClientStream(next(self._ids), resource_filter=self._filter))
        self._connections.add(conn)
        receiver = asyncio.create_task(self._receive_loop(conn, stream))
        pusher = asyncio.create_task(self._push_loop(conn, stream))
        closing = asyncio.create_task(conn.closing.wait())
        tasks = (receiver, pusher, closing)
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if closing in done:
                raise GRPCError(grpclib.const.Status.UNAVAILABLE, _SHUTDOWN_MESSAGE)
            for task in done:
                task.result()  # raises what ended the stream, if anything
        except XdsProtocolError as e:
            log.warning("closing xDS stream %d: %s", conn.state.stream_id, e)
            raise GRPCError(grpclib.const.Status.INVALID_ARGUMENT, str(e)) from e
        except asyncio.CancelledError:
            # grpclib cancels handlers on Server.close() without telling the client; reset the
            # stream so the client reconnects instead of waiting on a live connection forever.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(stream.cancel(), _RESET_TIMEOUT)
            raise
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._connections.discard(conn)
            node = conn.state.node.id if conn.state.node else "?"
            log.info("xDS stream %d from %s closed", conn.state.stream_id, node)
            self._signal_progress()

    def close(self) -> None:
        """End every stream with UNAVAILABLE (clients reconnect elsewhere or later) and refuse
        new ones. Call before `grpclib.server.Server.close()` for a clean shutdown."""
        self._closed = True
        for conn in self._connections:
            conn.closing.set()

    async def _receive_loop(self, conn: _Connection, stream: DeltaStream) -> None:
        async for request in stream:
            async with conn.lock:
                first = conn.state.node is None
                step = conn.state.receive(request, self.cache)
                if first and conn.state.node is not None:
                    log.info(
                        "xDS stream %d: %s connected (role %s, node %s)",
                        conn.state.stream_id, conn.state.node.id, conn.state.node.role,
                        conn.state.node.node_name or "?",
                    )
                self._count_events(conn, step)
                await self._send(stream, step, latency_from=None)
            self._signal_progress()

    async def _push_loop(self, conn: _Connection, stream: DeltaStream) -> None:
        while True:
            await conn.wake.wait()
            await self._debounce_wait(conn)
            conn.wake.clear()
            first_unpushed, conn.first_unpushed = conn.first_unpushed, None
            async with conn.lock:
                step = conn.state.poll(self.cache)
                await self._send(stream, step, latency_from=first_unpushed)
            self._signal_progress()

    async def _debounce_wait(self, conn: _Connection) -> None:
        quiet, max_delay = self._debounce.quiet, self._debounce.max_delay
        start = conn.first_unpushed if conn.first_unpushed is not None else time.monotonic()
        while True:
            deadline = min(self._last_change + quiet, start + max_delay)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            await asyncio.sleep(remaining)

    async def _send(
        self, stream: DeltaStream, step: Step, *, latency_from: float | None
    ) -> None:
        for response in step.responses:
            await stream.send_message(response)
            self._pushes += 1
            self._resources_sent += len(response.resources)
            self._removals_sent += len(response.removed_resources)
            if latency_from is not None and response.type_url not in step.initial:
                self._record_latency(time.monotonic() - latency_from)

    def _count_events(self, conn: _Connection, step: Step) -> None:
        node = conn.state.node.id if conn.state.node else "?"
        for event in step.events:
            if isinstance(event, Ack):
                self._acks += 1
            elif isinstance(event, Nack):
                self._nacks += 1
                names = sorted(event.rejected)
                shown = ", ".join(names[:5]) + (f" (+{len(names) - 5} more)" if names[5:] else "")
                log.warning(
                    "xDS NACK from %s for %s nonce %s (code %d): %s; not re-sending: %s",
                    node, event.type_url, event.nonce, event.code, event.message, shown,
                )
            elif isinstance(event, StaleNonce):
                self._stale += 1
                log.debug("stale nonce %s from %s for %s", event.nonce, node, event.type_url)

    def _signal_progress(self) -> None:
        event, self._progress = self._progress, asyncio.Event()
        event.set()

    def _record_latency(self, seconds: float) -> None:
        self._latencies.append(seconds)
        self._latency_count += 1
        self._latency_sum += seconds

    def _latency_summary(self) -> LatencySummary:
        if not self._latencies:
            return LatencySummary()
        ordered = sorted(self._latencies)

        def pct(p: float) -> float:
            return ordered[min(len(ordered) - 1, int(p * len(ordered)))]

        return LatencySummary(
            count=self._latency_count,
            mean=self._latency_sum / self._latency_count,
            p50=pct(0.50),
            p90=pct(0.90),
            p99=pct(0.99),
            max=ordered[-1],
        )

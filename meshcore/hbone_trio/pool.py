"""HboneClient: pooled HBONE connections and `connect()` -> an open CONNECT tunnel.

Who calls it: ztunnel's outbound proxy (and the waypoint's upstream side). `connect()` returns a
`TunnelStream` after the peer answered 200; the caller relays bytes over it and closes it.

Pooling (ztunnel's, AMBIENT-INTERNALS §2.5): connections are keyed by (source identity, expected
destination identities, destination socket address). A key's connection carries up to
`max_streams_per_connection` (100) tunnels; past that, or when the peer's own limit or a GOAWAY
forbids new streams, another connection is dialed. Connections with no tunnel for
`idle_timeout` are closed (GOAWAY). Each connection PINGs its peer (10 s / 20 s by default).

Invariants: one dial at a time per key (concurrent `connect()` calls for the same key wait for
that dial and then share the connection); a stream is reserved synchronously (no await between
choosing a connection and opening the stream), so the per-connection limit holds exactly. All
connection tasks live in the client's nursery: leaving `open_hbone_client()` closes them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Collection, Sequence

import trio

from meshcore import hbone, tlsconfig
from meshcore.hbone_trio.client import (
    Address,
    ClientConfig,
    HboneConnectError,
    HboneStatusError,
    SocketFactory,
    default_socket_factory,
    dial_hbone,
)
from meshcore.hbone_trio.connection import HboneTrioConnection
from meshcore.hbone_trio.tunnel import TunnelStream
from meshcore.identity import SpiffeId

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, order=True)
class PoolKey:
    source: SpiffeId
    expected: tuple[SpiffeId, ...]
    address: Address


@dataclasses.dataclass(frozen=True)
class PoolStatistics:
    connections: int
    tunnels: int
    dials: int
    keys: int


class HboneClient:
    """The HBONE connection pool; build it with `open_hbone_client()`."""

    def __init__(
        self,
        nursery: trio.Nursery,
        config: ClientConfig,
        socket_factory: SocketFactory,
        contexts: tlsconfig.TlsContextCache,
    ) -> None:
        self._nursery = nursery
        self.config = config
        self._socket_factory = socket_factory
        self._contexts = contexts
        self._pools: dict[PoolKey, list[HboneTrioConnection]] = {}
        self._dial_locks: dict[PoolKey, trio.Lock] = {}
        self._dials = 0

    async def connect(
        self,
        address: Address,
        authority: str,
        source: tlsconfig.WorkloadCredentials,
        expected: Collection[SpiffeId],
        headers: Sequence[tuple[str, str]] = (),
    ) -> TunnelStream:
        """Open a CONNECT tunnel to `authority` through the HBONE peer at `address`.

        Returns the tunnel after a 200. Raises HboneStatusError (non-200), HboneConnectError /
        HboneHandshakeError (dialing), ConnectionLostError (the connection died meanwhile).
        """
        key = PoolKey(source.identity, tuple(sorted(set(expected))), address)
        tunnel = self._open_on_pooled(key, authority, headers)
        if tunnel is None:
            lock = self._dial_locks.setdefault(key, trio.Lock())
            async with lock:
                tunnel = self._open_on_pooled(key, authority, headers)
                if tunnel is None:
                    conn = await self._dial(key, source)
                    tunnel = conn.open_tunnel_nowait(authority, headers)
        try:
            with trio.fail_after(self.config.response_timeout):
                response = await tunnel.wait_response()
        except trio.TooSlowError as exc:
            await tunnel.reset()
            raise HboneConnectError(
                f"HBONE peer {address[0]}:{address[1]} did not answer CONNECT {authority} within"
                f" {self.config.response_timeout}s",
                address=address,
            ) from exc
        except BaseException:
            await tunnel.reset()
            raise
        if response.status != 200:
            await tunnel.reset()
            raise HboneStatusError(
                f"HBONE peer {address[0]}:{address[1]} answered CONNECT {authority} with"
                f" {response.status}",
                status=response.status,
                authority=authority,
                address=address,
            )
        return tunnel

    def _open_on_pooled(
        self, key: PoolKey, authority: str, headers: Sequence[tuple[str, str]]
    ) -> TunnelStream | None:
        for conn in self._pools.get(key, ()):
            if conn.usable and len(conn.tunnels) < self.config.max_streams_per_connection:
                try:
                    return conn.open_tunnel_nowait(authority, headers)
                except hbone.TooManyStreamsError:
                    continue
        return None

    async def _dial(
        self, key: PoolKey, source: tlsconfig.WorkloadCredentials
    ) -> HboneTrioConnection:
        conn_ready: list[HboneTrioConnection] = []

        async def run(task_status: trio.TaskStatus[None]) -> None:
            conn = await dial_hbone(
                key.address,
                source,
                key.expected,
                config=self.config,
                contexts=self._contexts,
                socket_factory=self._socket_factory,
            )
            async with trio.open_nursery() as conn_nursery:
                await conn_nursery.start(conn.run)
                self._dials += 1
                self._pools.setdefault(key, []).append(conn)
                conn_ready.append(conn)
                task_status.started()
                conn_nursery.start_soon(self._reap_when_idle, conn)
            # The connection ended (peer closed, error, idle reap): forget it.
            pool = self._pools.get(key, [])
            if conn in pool:
                pool.remove(conn)
            if not pool:
                self._pools.pop(key, None)
                self._dial_locks.pop(key, None)

        await self._nursery.start(run)
        return conn_ready[0]

    async def _reap_when_idle(self, conn: HboneTrioConnection) -> None:
        while not conn.closed:
            await conn.wait_idle()
            if conn.closed:
                return
            with trio.move_on_after(self.config.idle_timeout):
                await conn.wait_busy()
                continue
            log.debug("closing idle HBONE connection %s", conn.label)
            await conn.aclose()
            return

    def statistics(self) -> PoolStatistics:
        conns = [c for pool in self._pools.values() for c in pool]
        return PoolStatistics(
            connections=len(conns),
            tunnels=sum(len(c.tunnels) for c in conns),
            dials=self._dials,
            keys=len(self._pools),
        )

    def connections(self, key: PoolKey | None = None) -> list[HboneTrioConnection]:
        if key is not None:
            return list(self._pools.get(key, ()))
        return [c for pool in self._pools.values() for c in pool]

    async def aclose(self) -> None:
        """Close every pooled connection (GOAWAY, then close)."""
        for conn in self.connections():
            await conn.aclose()


@contextlib.asynccontextmanager
async def open_hbone_client(
    config: ClientConfig | None = None,
    *,
    socket_factory: SocketFactory = default_socket_factory,
    contexts: tlsconfig.TlsContextCache | None = None,
) -> AsyncIterator[HboneClient]:
    """An HboneClient whose connections live inside this context; all closed on exit."""
    async with trio.open_nursery() as nursery:
        client = HboneClient(
            nursery,
            config or ClientConfig(),
            socket_factory,
            contexts or tlsconfig.TlsContextCache(),
        )
        try:
            yield client
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                await client.aclose()
            nursery.cancel_scope.cancel()

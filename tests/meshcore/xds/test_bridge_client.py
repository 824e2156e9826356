"""XdsSnapshotClient over any store: real bridge, real grpclib xDS server on loopback."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import AsyncIterator, Iterable, Mapping

import pytest
import trio
from grpclib.server import Server

from istiod_lite.xds import DebounceConfig, XdsServer
from meshcore.grpc_bridge import AsyncioBridge, open_asyncio_bridge
from meshcore.protos.envoy.config.core.v3 import Node
from meshcore.wds import ResourceUpdate
from meshcore.xds import ResourceRejected
from meshcore.xds.bridge_client import XdsSnapshotClient
from meshcore.xds.client import Backoff, tcp_channel

pytestmark = pytest.mark.trio

FRUIT = "type.googleapis.com/test.Fruit"
VEG = "type.googleapis.com/test.Veg"
NODE = Node(id="test~127.0.0.1~bridge-client.default~default.svc.cluster.local")


@dataclasses.dataclass(frozen=True)
class Basket:
    """A toy snapshot: the names held per type."""

    generation: int = 0
    synced_types: frozenset[str] = frozenset()
    names: Mapping[str, frozenset[str]] = dataclasses.field(default_factory=dict)


class Rotten(ResourceRejected):
    """A resource the toy store refuses (names starting with 'rotten')."""


class BasketStore:
    """A toy single-writer store; records on which thread it was applied."""

    def __init__(self) -> None:
        self.basket = Basket()
        self.threads: set[str] = set()

    def apply(self, type_url: str, upserts: Iterable[ResourceUpdate],
              removed: Iterable[str] = ()) -> Basket:
        self.threads.add(threading.current_thread().name)
        upserts = list(upserts)
        for u in upserts:
            if u.name.startswith("rotten"):
                raise Rotten(f"{u.name} is rotten")
            assert Node().parse(u.value).id == u.name  # the bytes the server was given
        names = set(self.basket.names.get(type_url, frozenset()))
        names.difference_update(removed)
        names.update(u.name for u in upserts)
        b = self.basket
        self.basket = Basket(b.generation + 1, b.synced_types | {type_url},
                             {**b.names, type_url: frozenset(names)})
        return self.basket


class ControlPlane:
    """An XdsServer + grpclib Server on loopback, driven from trio through the control bridge."""

    def __init__(self, bridge: AsyncioBridge, port: int) -> None:
        self.bridge, self.port = bridge, port
        self.xds = XdsServer(debounce=DebounceConfig(quiet=0.001, max_delay=0.005))
        self.grpc: Server | None = None

    @classmethod
    @contextlib.asynccontextmanager
    async def serving(cls, bridge: AsyncioBridge, port: int, **names: tuple[str, ...]
                      ) -> AsyncIterator[ControlPlane]:
        """Serving `fruit=(...)` and `veg=(...)` at first; stopped on exit."""
        cp = cls(bridge, port)
        for kind, type_url in (("fruit", FRUIT), ("veg", VEG)):
            await cp.put(type_url, *names.get(kind, ()))
        await bridge.call(cp._start)
        try:
            yield cp
        finally:
            with trio.CancelScope(shield=True):
                await bridge.call(cp._stop)

    async def put(self, type_url: str, *names: str) -> None:
        await self.bridge.call(self._put, type_url, names)

    async def settled(self) -> None:
        await self.bridge.call(self.xds.wait_settled)

    async def _start(self) -> None:
        self.grpc = Server([self.xds])  # built on the control loop (grpclib binds it)
        await self.grpc.start("127.0.0.1", self.port)

    async def _put(self, type_url: str, names: tuple[str, ...]) -> None:
        self.xds.set_resources(type_url, {n: Node(id=n) for n in names})

    async def _stop(self) -> None:
        assert self.grpc is not None
        self.xds.close()
        self.grpc.close()
        await self.grpc.wait_closed()


def client_for(port: int, store: BasketStore) -> XdsSnapshotClient[Basket]:
    return XdsSnapshotClient(tcp_channel("127.0.0.1", port), node=NODE, type_urls=(FRUIT, VEG),
                             apply=store.apply, initial=store.basket,
                             backoff=Backoff(initial=0.01, maximum=0.05))


async def test_snapshots_of_the_store_reach_trio_in_order(unused_tcp_port: int) -> None:
    """Each applied snapshot reaches trio, newer generations later; the store runs off-trio."""
    store = BasketStore()
    client = client_for(unused_tcp_port, store)
    assert client.current() is store.basket and not client.synced
    async with open_asyncio_bridge() as control, open_asyncio_bridge() as bridge, \
            ControlPlane.serving(control, unused_tcp_port, fruit=("apple",)) as cp, \
            trio.open_nursery() as nursery:
        await nursery.start(client.run, bridge)
        synced = await client.wait_synced()
        assert client.synced and synced.synced_types == {FRUIT, VEG}
        assert synced.names == {FRUIT: {"apple"}, VEG: set()}  # VEG arrived empty
        await cp.put(VEG, "leek")
        leek = await client.wait_for(lambda b: "leek" in b.names[VEG])
        await cp.put(FRUIT, "pear")
        pear = await client.wait_for(lambda b: "pear" in b.names[FRUIT])
        assert pear.names == {FRUIT: {"pear"}, VEG: {"leek"}}
        assert synced.generation < leek.generation < pear.generation
        assert client.current() is pear
        assert store.threads == {"asyncio-grpc-bridge"}
        nursery.cancel_scope.cancel()


async def test_a_rejected_response_is_nacked_and_the_last_snapshot_stays(
        unused_tcp_port: int) -> None:
    """A store error NACKs the response; trio keeps the previous snapshot; a fix gets through."""
    client = client_for(unused_tcp_port, BasketStore())
    async with open_asyncio_bridge() as control, open_asyncio_bridge() as bridge, \
            ControlPlane.serving(control, unused_tcp_port, fruit=("apple",)) as cp, \
            trio.open_nursery() as nursery:
        await nursery.start(client.run, bridge)
        good = await client.wait_synced()
        await cp.put(FRUIT, "apple", "rotten-fig")
        await cp.settled()  # the client answered: with a NACK
        assert client.current() is good
        stats = client.statistics()
        assert stats.nacks == 1 and "rotten-fig is rotten" in stats.last_nack
        await cp.put(FRUIT, "apple", "fig")
        fixed = await client.wait_for(lambda b: "fig" in b.names[FRUIT])
        assert fixed.names[FRUIT] == {"apple", "fig"}
        nursery.cancel_scope.cancel()


async def test_connection_state_follows_the_stream_and_ends_with_run(
        unused_tcp_port: int) -> None:
    """`connected` goes up with the stream, down when istiod stops, and stays down after run."""
    client = client_for(unused_tcp_port, BasketStore())
    assert not client.connected
    async with open_asyncio_bridge() as control, open_asyncio_bridge() as bridge:
        async with trio.open_nursery() as nursery:
            async with ControlPlane.serving(control, unused_tcp_port, veg=("leek",)):
                await nursery.start(client.run, bridge)
                await client.wait_connection(True)
                synced = await client.wait_synced()
            await client.wait_connection(False)  # istiod stopped
            assert not client.connected and client.current() is synced  # last state served
            assert client.statistics().last_error
            async with ControlPlane.serving(control, unused_tcp_port, veg=("leek",)):
                await client.wait_connection(True)
                nursery.cancel_scope.cancel()
        assert not client.connected

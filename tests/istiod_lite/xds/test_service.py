"""The Delta ADS service with the real xDS client: subscribe, push, ACK, NACK, removal, resume."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator

import grpclib.const
import pytest
from grpclib.exceptions import GRPCError
from grpclib.server import Server
from grpclib.testing import ChannelFor

from istiod_lite.xds import DebounceConfig, XdsServer
from meshcore.protos.envoy.config.core.v3 import Node
from meshcore.protos.envoy.service.discovery.v3 import (
    AggregatedDiscoveryServiceStub,
    DiscoveryRequest,
)
from meshcore.protos.istio import workload as wl
from meshcore.wds import Store
from meshcore.wds.store import ResourceUpdate
from meshcore.xds.client import Backoff, XdsClient, tcp_channel
from meshcore.xds.protocol import ReceivedDelta
from meshcore.xds.types import TYPE_ADDRESS, TYPE_AUTHORIZATION, ZTUNNEL_TYPES
from tests.meshcore.wds.factories import addresses, pod_uid, policy, service, workload

NODE = Node(id="ztunnel~10.0.0.5~ztunnel-abc.istio-system~istio-system.svc.cluster.local")
FAST = DebounceConfig(quiet=0.001, max_delay=0.005)


class Proxy:
    """A client-side store fed by an XdsClient, as ztunnel wires it (minus the trio hop)."""

    def __init__(self) -> None:
        self.store = Store()

    def handle(self, delta: ReceivedDelta) -> None:
        self.store.apply(
            delta.type_url, [ResourceUpdate(r.name, r.value) for r in delta.resources],
            delta.removed,
        )

    def workload_names(self) -> set[str]:
        return {w.name for w in self.store.snapshot.workloads.values()}


def reuse(channel: object) -> object:
    @contextlib.asynccontextmanager
    async def opener() -> AsyncIterator[object]:
        yield channel

    return opener


@contextlib.asynccontextmanager
async def running(client: XdsClient) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(client.run())
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def initial_state(server: XdsServer) -> int:
    server.set_resources(TYPE_ADDRESS, addresses(
        service("web"),
        workload("web-1", address="10.0.0.1"),
        workload("web-2", address="10.0.0.2"),
    ))
    return server.set_resources(TYPE_AUTHORIZATION, {"shop/deny": policy("deny")})


@pytest.mark.asyncio
async def test_subscribe_push_ack_and_removal() -> None:
    """A client gets the full state, then only changes and removals, and ACKs each."""
    server = XdsServer(debounce=FAST)
    initial_state(server)
    proxy = Proxy()
    async with ChannelFor([server]) as channel:
        client = XdsClient(reuse(channel), node=NODE, type_urls=ZTUNNEL_TYPES,
                           handler=proxy.handle)
        async with running(client):
            await server.wait_settled(clients=1, type_urls=ZTUNNEL_TYPES)
            assert proxy.workload_names() == {"web-1", "web-2"}
            assert set(proxy.store.snapshot.policies) == {"shop/deny"}
            sent_before = server.statistics().resources_sent

            gen = server.set_resources(TYPE_ADDRESS, addresses(
                service("web"), workload("web-1", address="10.0.0.11"),
            ))
            await server.wait_settled(gen)
            assert proxy.workload_names() == {"web-1"}
            snap = proxy.store.snapshot
            assert snap.workloads[pod_uid("shop", "web-1")].addresses[0].exploded == "10.0.0.11"
            stats = server.statistics()
            assert stats.resources_sent == sent_before + 1  # only web-1; web and policy unchanged
            assert stats.removals_sent == 1
            assert stats.connected_clients == 1 and stats.clients[0].role == "ztunnel"
            assert stats.nacks == 0 and stats.acks == client.statistics().acks == 3
            assert stats.push_latency.count >= 1


@pytest.mark.asyncio
async def test_nack_keeps_last_good_state_and_is_not_resent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A bad resource is NACKed (logged with node and message), not resent, and fixed later."""
    server = XdsServer(debounce=FAST)
    initial_state(server)
    proxy = Proxy()
    bad = wl.Address(workload=wl.Workload(uid=pod_uid("shop", "bad"), namespace="shop",
                                          addresses=[b"\x0a\x00"]))
    async with ChannelFor([server]) as channel:
        client = XdsClient(reuse(channel), node=NODE, type_urls=ZTUNNEL_TYPES,
                           handler=proxy.handle)
        async with running(client):
            await server.wait_settled(clients=1, type_urls=ZTUNNEL_TYPES)
            good = proxy.store.snapshot
            items = addresses(service("web"), workload("web-1", address="10.0.0.1"),
                              workload("web-2", address="10.0.0.2"))
            with caplog.at_level(logging.WARNING, logger="istiod_lite.xds"):
                gen = server.set_resources(TYPE_ADDRESS, {**items, pod_uid("shop", "bad"): bad})
                await server.wait_settled(gen)
            assert proxy.store.snapshot is good
            assert client.statistics().nacks == 1
            assert "addresses[0]" in client.statistics().last_nack
            assert server.statistics().nacks == 1
            assert any(NODE.id in r.message and "addresses[0]" in r.message
                       for r in caplog.records)

            pushes = server.statistics().pushes
            gen = server.set_resources(TYPE_AUTHORIZATION, {"shop/deny": policy("deny")})
            await server.wait_settled(gen)  # nothing changed: nothing (re)sent
            assert server.statistics().pushes == pushes

            fixed = {**items, pod_uid("shop", "bad"): wl.Address(workload=workload("bad"))}
            gen = server.set_resources(TYPE_ADDRESS, fixed)
            await server.wait_settled(gen)
            assert "bad" in proxy.workload_names()
            assert server.statistics().nacks == 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.asyncio
async def test_reconnect_resumes_with_initial_versions() -> None:
    """After istiod restarts, the client reconnects and receives only what changed."""
    port = free_port()
    first = XdsServer(debounce=FAST)
    initial_state(first)
    grpc = Server([first])
    await grpc.start("127.0.0.1", port)
    proxy = Proxy()
    client = XdsClient(tcp_channel("127.0.0.1", port), node=NODE, type_urls=ZTUNNEL_TYPES,
                       handler=proxy.handle, backoff=Backoff(initial=0.01, maximum=0.05))
    async with running(client):
        await first.wait_settled(clients=1, type_urls=ZTUNNEL_TYPES)
        grpc.close()
        await grpc.wait_closed()
        assert proxy.workload_names() == {"web-1", "web-2"}  # last good state kept

        second = XdsServer(debounce=FAST)
        initial_state(second)
        second.set_resources(TYPE_ADDRESS, addresses(
            service("web"), workload("web-1", address="10.0.0.1"),
            workload("web-3", address="10.0.0.3"),
        ))
        grpc = Server([second])
        await grpc.start("127.0.0.1", port)
        try:
            await second.wait_settled(clients=1, type_urls=ZTUNNEL_TYPES)
            assert proxy.workload_names() == {"web-1", "web-3"}
            stats = second.statistics()
            assert stats.resources_sent == 1  # web-3 only
            assert stats.removals_sent == 1  # web-2
            assert client.statistics().connects == 2
        finally:
            grpc.close()
            await grpc.wait_closed()


@pytest.mark.asyncio
async def test_state_of_the_world_is_unimplemented() -> None:
    """StreamAggregatedResources answers UNIMPLEMENTED."""
    async with ChannelFor([XdsServer()]) as channel:
        stub = AggregatedDiscoveryServiceStub(channel)
        with pytest.raises(GRPCError) as info:
            async for _ in stub.stream_aggregated_resources([DiscoveryRequest(type_url="x")]):
                pass
        assert info.value.status is grpclib.const.Status.UNIMPLEMENTED


@pytest.mark.asyncio
async def test_stream_without_node_is_rejected() -> None:
    """A first request without node.id ends the stream with INVALID_ARGUMENT."""
    from meshcore.protos.envoy.service.discovery.v3 import DeltaDiscoveryRequest

    async with ChannelFor([XdsServer()]) as channel:
        stub = AggregatedDiscoveryServiceStub(channel)
        with pytest.raises(GRPCError) as info:
            async for _ in stub.delta_aggregated_resources(
                [DeltaDiscoveryRequest(type_url=TYPE_ADDRESS)]
            ):
                pass
        assert info.value.status is grpclib.const.Status.INVALID_ARGUMENT
        assert "node.id" in (info.value.message or "")


async def burst_pushes(debounce: DebounceConfig) -> tuple[int, set[str]]:
    """Connect a client, make five changes a loop iteration apart, return (pushes, names)."""
    server = XdsServer(debounce=debounce)
    initial_state(server)
    proxy = Proxy()
    async with ChannelFor([server]) as channel:
        client = XdsClient(reuse(channel), node=NODE, type_urls=ZTUNNEL_TYPES,
                           handler=proxy.handle)
        async with running(client):
            await server.wait_settled(clients=1, type_urls=ZTUNNEL_TYPES)
            before = server.statistics().pushes
            for i in range(5):
                server.set_resources(TYPE_ADDRESS, addresses(workload(f"w-{i}")))
                await asyncio.sleep(0)  # let the push loop see each change
            await server.wait_settled()
            return server.statistics().pushes - before, proxy.workload_names()


@pytest.mark.asyncio
async def test_burst_of_changes_is_pushed_once() -> None:
    """Changes closer together than the quiet period reach a client as one push."""
    pushes, names = await burst_pushes(DebounceConfig(quiet=0.2, max_delay=5.0))
    assert (pushes, names) == (1, {"w-4"})

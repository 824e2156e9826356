"""ztunnel's ConfigClient through the real bridge against a real grpclib server on loopback."""

from __future__ import annotations

import socket

import pytest
import trio
from grpclib.server import Server

from istiod_lite.xds import DebounceConfig, XdsServer
from meshcore.grpc_bridge import open_asyncio_bridge
from meshcore.protos.envoy.config.core.v3 import Node
from meshcore.protos.istio import workload as wl
from meshcore.wds import Snapshot
from meshcore.xds.client import Backoff, tcp_channel
from meshcore.xds.types import TYPE_ADDRESS, TYPE_AUTHORIZATION
from tests.meshcore.wds.factories import addresses, pod_uid, policy, service, workload
from ztunnel.config_client import ConfigClient

pytestmark = pytest.mark.trio

NODE = Node(id="ztunnel~127.0.0.1~ztunnel-x.istio-system~istio-system.svc.cluster.local")


class ControlPlane:
    """An XdsServer + grpclib Server on their own asyncio thread (methods run on that loop)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.xds = XdsServer(debounce=DebounceConfig(quiet=0.001, max_delay=0.005))
        self.grpc: Server | None = None

    async def start(self, items: dict[str, wl.Address]) -> None:
        self.grpc = Server([self.xds])  # built on its own loop (grpclib binds the current loop)
        self.xds.set_resources(TYPE_ADDRESS, items)
        self.xds.set_resources(TYPE_AUTHORIZATION, {"shop/deny": policy("deny")})
        await self.grpc.start("127.0.0.1", self.port)

    async def set_addresses(self, items: dict[str, wl.Address]) -> None:
        self.xds.set_resources(TYPE_ADDRESS, items)

    async def stop(self) -> None:
        assert self.grpc is not None
        self.xds.close()
        self.grpc.close()
        await self.grpc.wait_closed()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def names(snapshot: Snapshot) -> set[str]:
    return {w.name for w in snapshot.workloads.values()}


async def test_snapshots_arrive_and_last_good_state_survives_istiod_stopping() -> None:
    """Snapshots reach trio; with istiod down the last one is served; a restart resumes."""
    port = free_port()
    web = [service("web"), workload("web-1", address="10.0.0.1")]
    async with open_asyncio_bridge() as control, open_asyncio_bridge() as bridge:
        first = ControlPlane(port)
        await control.call(first.start, addresses(*web))
        client = ConfigClient(tcp_channel("127.0.0.1", port), node=NODE,
                              backoff=Backoff(initial=0.01, maximum=0.05))
        async with trio.open_nursery() as nursery:
            await nursery.start(client.run, bridge)
            synced = await client.wait_synced()
            assert names(synced) == {"web-1"} and set(synced.policies) == {"shop/deny"}

            await control.call(first.set_addresses,
                               addresses(*web, workload("web-2", address="10.0.0.2")))
            pushed = await client.wait_for(lambda s: "web-2" in names(s))
            assert pushed.generation > synced.generation

            await control.call(first.stop)
            await client.wait_connection(False)
            assert client.current() is pushed  # istiod down: the last good state is served
            assert client.statistics().last_error

            second = ControlPlane(port)
            await control.call(second.start, addresses(*web, workload("web-3", address="10.0.0.3")))
            resumed = await client.wait_for(lambda s: "web-3" in names(s))
            assert names(resumed) == {"web-1", "web-3"}
            assert pod_uid("shop", "web-2") not in resumed.workloads
            stats = await control.call(_stats, second.xds)
            assert stats.resources_sent == 1 and stats.removals_sent == 1  # resumed, not resent
            nursery.cancel_scope.cancel()
            await control.call(second.stop)


async def _stats(xds: XdsServer):
    return xds.statistics()

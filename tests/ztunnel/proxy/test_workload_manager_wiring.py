"""The data path started the production way: ZDS (a fake agent) → WorkloadManager → PodProxy.

Same namespace mesh as `test_pod_proxy_netns.py`, but the pods' netns fds travel over a real
SOCK_SEQPACKET ZDS connection and `pod_proxy_factory` is what the manager calls. Also covers the
drain on DelWorkload: new connections refused, open ones kept, idle HBONE connections closed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest
import trio

from meshcore.zds import codec
from tests.support.netns import Netns
from tests.ztunnel.inpod.fake_agent import AgentConnection, FakeAgent
from tests.ztunnel.proxy.builders import ConfigFeed, snapshot
from tests.ztunnel.proxy.netns_mesh import (
    A_IP,
    APP_PORT,
    B_IP,
    C_IP,
    TIMEOUT,
    app_connect,
    base_items,
    proxy_context,
    refused,
    roundtrip,
    start_apps,
)
from ztunnel.inpod.netns import NetnsSocketFactory
from ztunnel.inpod.workload_manager import WorkloadManager, WorkloadManagerConfig
from ztunnel.proxy.pod_proxy import pod_proxy_factory

pytestmark = [pytest.mark.netns, pytest.mark.trio]

# Far longer than the test's own deadline: the drain must end because connections end.
DRAIN_TIMEOUT = 60.0


@pytest.fixture
def sock_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="zds-")  # unix socket paths are limited to 107 bytes
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def add(conn: AgentConnection, name: str, ns: Netns) -> codec.Ack:
    fd = os.open(ns.path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return await conn.request(codec.AddWorkload(f"uid-{name}", name, "shop", name), [fd])
    finally:
        os.close(fd)


async def test_manager_serves_pods_and_drains_on_delete(
    topology: dict[str, Netns], sock_dir: str
) -> None:
    """Pods added over ZDS carry traffic; deleting B refuses new traffic, keeps the open one,
    and the drain ends as soon as that connection ends (idle HBONE closed, not waited for)."""
    agent = FakeAgent(os.path.join(sock_dir, "ztunnel.sock"))
    await agent.listen()
    sockets = NetnsSocketFactory()
    config = WorkloadManagerConfig(socket_path=agent.path, drain_timeout=DRAIN_TIMEOUT)
    manager = WorkloadManager(pod_proxy_factory(proxy_context(ConfigFeed(snapshot(
        *base_items())))), sockets, config)
    try:
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                echo_b, _ = await start_apps(nursery, topology)
                await nursery.start(manager.run)
                conn = await agent.accept()
                assert await add(conn, "a", topology["a"]) == codec.Ack()
                assert await add(conn, "b", topology["b"]) == codec.Ack()
                assert await conn.request(codec.SnapshotSent()) == codec.Ack()

                first = await app_connect(topology["a"], B_IP, APP_PORT)
                assert await roundtrip(first, b"one") == b"one"
                held = await app_connect(topology["a"], B_IP, APP_PORT)
                await held.send_all(b"two")
                assert await held.receive_some(3) == b"two"

                assert await conn.request(codec.DelWorkload("uid-b")) == codec.Ack()
                # New streams on the still-open HBONE connection are refused (503)...
                assert await refused(await app_connect(topology["a"], B_IP, APP_PORT))
                # ...and plaintext to B finds no 15006 listener any more.
                with pytest.raises(OSError):
                    await app_connect(topology["c"], B_IP, APP_PORT)
                await held.send_all(b"three")  # the open connection keeps working
                assert await held.receive_some(5) == b"three"
                await held.send_eof()
                assert await held.receive_some(10) == b""
                await manager.wait_drained()
                assert manager.statistics().active_proxy_count == 1
                assert echo_b.peers == [A_IP, A_IP]
                assert C_IP not in echo_b.peers
                nursery.cancel_scope.cancel()
    finally:
        agent.close()
        sockets.close()

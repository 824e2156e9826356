"""Our ZDS client against the node agent's real ZDS server (`cni_plugin.agent.zds_server`)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable

import pytest
import trio

from cni_plugin.agent.zds_server import ZdsServer, ZtunnelUnavailable, serve_zds
from meshcore.zds import codec
from tests.support.netns import Netns
from tests.ztunnel.inpod.probes import Proxies, fds_to, greet_in
from ztunnel.inpod.netns import NetnsSocketFactory
from ztunnel.inpod.workload_manager import WorkloadManager, WorkloadManagerConfig

pytestmark = [pytest.mark.netns, pytest.mark.trio]


async def test_agent_snapshot_reaches_ztunnel(netns_factory: Callable[[str], Netns]) -> None:
    """A pod the agent knows before ztunnel connects arrives in the snapshot and gets served."""
    pod = netns_factory("pod")
    sock_dir = tempfile.mkdtemp(prefix="zds-")
    sockets = NetnsSocketFactory()
    server = ZdsServer()
    fd = os.open(pod.path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with pytest.raises(ZtunnelUnavailable):  # no ztunnel yet; the agent remembers the pod
            await server.add_workload(codec.AddWorkload("uid-1", "web", "ns1", "web-sa"), fd)
        os.close(fd)
        path = os.path.join(sock_dir, "ztunnel.sock")
        manager = WorkloadManager(Proxies(), sockets, WorkloadManagerConfig(socket_path=path))
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                await nursery.start(serve_zds, path, server)
                await nursery.start(manager.run)
                await manager.wait_ready()
                await manager.wait_serving("uid-1")
                assert await greet_in(pod) == b"hbone:web\n"
                assert fds_to(pod) == 2  # the agent's dup and ztunnel's
                nursery.cancel_scope.cancel()
    finally:
        sockets.close()
        shutil.rmtree(sock_dir, ignore_errors=True)

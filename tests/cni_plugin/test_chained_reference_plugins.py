"""ambient-cni chained behind Debian's reference plugins (bridge + host-local), run as a runtime."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from cni_plugin.agent.server import Agent, serve_agent
from cni_plugin.redirect import rules as R
from tests.cni_plugin.cni_runner import add_list, check_list, del_list, exec_plugin
from tests.cni_plugin.netns_topology import Topology, observe_nft, observe_routing, original_dst

pytestmark = [pytest.mark.netns, pytest.mark.trio]

SUBNET_GW = "10.88.7.1"
ARGS = "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-1;K8S_POD_UID=uid-7"

@pytest.fixture
async def workdir(nursery: trio.Nursery) -> AsyncIterator[str]:
    """A running agent plus a scratch directory (agent socket, plugin log, host-local data)."""
    if not os.access("/usr/lib/cni/bridge", os.X_OK):
        pytest.fail("reference plugins missing: apt-get install containernetworking-plugins")
    directory = tempfile.mkdtemp(prefix="acni-")
    await nursery.start(serve_agent, os.path.join(directory, "agent.sock"), Agent())
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def _conflist(workdir: str, bridge: str) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": "ambient-test",
        "plugins": [
            {"type": "bridge", "bridge": bridge, "isGateway": True, "ipMasq": False,
             "ipam": {"type": "host-local", "dataDir": os.path.join(workdir, "ipam"),
                      "ranges": [[{"subnet": "10.88.7.0/24", "gateway": SUBNET_GW}]],
                      "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "ambient-cni", "agentSocket": os.path.join(workdir, "agent.sock"),
             "logFile": os.path.join(workdir, "plugin.log"), "logLevel": "debug"},
        ],
    }


def _traffic(topo: Topology, pod_ip: str) -> tuple[tuple[str, int], tuple[str, int]]:
    outbound = topo.listen(topo.pod, R.OUTBOUND_PORT)
    inbound = topo.listen(topo.pod, R.INBOUND_PLAINTEXT_PORT)
    app = topo.sock(topo.pod)
    app.connect(("198.51.100.20", 5432))
    out_conn, _ = outbound.accept()
    client = topo.sock(topo.node)
    client.connect((pod_ip, 8080))
    in_conn, _ = inbound.accept()
    return original_dst(out_conn), original_dst(in_conn)


async def test_chain_add_check_del(bare_netns: Topology, workdir: str) -> None:
    """bridge+host-local then ambient-cni: IP assigned, result passed through, captured, undone."""
    topo = bare_netns
    conflist = _conflist(workdir, bridge=f"br{topo.node[-6:]}")
    kw = {"container_id": "ctr-chain", "netns": topo.pod_path, "ifname": "eth0",
          "cni_args": ARGS, "process_netns": topo.node_path}
    before = observe_nft(topo.pod), observe_routing(topo.pod)

    def runtime_add() -> list[dict[str, Any] | None]:
        exec_plugin("ADD", {"cniVersion": "1.0.0", "name": "lo", "type": "loopback"},
                    container_id="ctr-chain", netns=topo.pod_path, ifname="lo",
                    process_netns=topo.node_path)
        return add_list(conflist, **kw)

    bridge_result, our_result = await trio.to_thread.run_sync(runtime_add)
    assert our_result == bridge_result
    assert our_result is not None
    pod_ip = our_result["ips"][0]["address"].split("/")[0]
    assert pod_ip.startswith("10.88.7.")
    assert R.NAT_TABLE in observe_nft(topo.pod)

    out_dst, in_dst = await trio.to_thread.run_sync(_traffic, topo, pod_ip)
    assert out_dst == ("198.51.100.20", 5432)
    assert in_dst == (pod_ip, 8080)

    await trio.to_thread.run_sync(lambda: check_list(conflist, our_result, **kw))
    await trio.to_thread.run_sync(lambda: del_list(conflist, our_result, **kw))
    assert observe_nft(topo.pod).strip() == ""
    ip_rules, routes = observe_routing(topo.pod)
    assert ip_rules == before[1][0]  # our fwmark rule is gone
    assert [r for r in routes if r[3] == R.ROUTE_TABLE] == []  # and so is table 100
    await trio.to_thread.run_sync(lambda: del_list(conflist, our_result, **kw))  # again: no-op

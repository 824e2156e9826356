"""The plugin executable over the CNI protocol against a real agent, in real namespaces."""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from cni_plugin.agent.server import Agent, serve_agent
from cni_plugin.redirect import apply
from cni_plugin.redirect import rules as R
from tests.cni_plugin.cni_runner import PluginFailure, exec_plugin
from tests.cni_plugin.netns_topology import (
    NODE_IP,
    POD_IP,
    Topology,
    observe_nft,
    observe_routing,
    original_dst,
)

pytestmark = [pytest.mark.netns, pytest.mark.trio]

PREV = {
    "cniVersion": "1.0.0",
    "interfaces": [{"name": "eth0", "mac": "02:00:00:00:00:02", "sandbox": "x"}],
    "ips": [{"address": f"{POD_IP}/24", "gateway": NODE_IP, "interface": 0}],
    "dns": {},
}
ARGS = "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-1;K8S_POD_UID=uid-1"


@pytest.fixture
async def agent_dir(nursery: trio.Nursery) -> AsyncIterator[str]:
    """A running agent; yields the directory holding its socket and the plugin log."""
    directory = tempfile.mkdtemp(prefix="acni-")
    await nursery.start(serve_agent, os.path.join(directory, "agent.sock"), Agent())
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def _conf(agent_dir: str, **extra: Any) -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "ambient-cni",
            "agentSocket": os.path.join(agent_dir, "agent.sock"),
            "logFile": os.path.join(agent_dir, "plugin.log"), "prevResult": PREV, **extra}


async def _plugin(command: str, conf: dict[str, Any], netns: str) -> dict[str, Any] | None:
    return await trio.to_thread.run_sync(lambda: exec_plugin(
        command, conf, container_id="ctr-1", netns=netns, cni_args=ARGS))


async def _plugin_error(command: str, conf: dict[str, Any] | bytes, netns: str) -> dict[str, Any]:
    with pytest.raises(PluginFailure) as info:
        await _plugin(command, conf, netns)  # type: ignore[arg-type]
    return info.value.error


def _outbound_redirected(topo: Topology) -> tuple[str, int]:
    listener = topo.listen(topo.pod, R.OUTBOUND_PORT)
    app = topo.sock(topo.pod)
    app.connect(("203.0.113.7", 8443))
    conn, _ = listener.accept()
    return original_dst(conn)


def _inbound_redirected(topo: Topology) -> tuple[str, int]:
    listener = topo.listen(topo.pod, R.INBOUND_PLAINTEXT_PORT)
    client = topo.sock(topo.node)
    client.connect((POD_IP, 80))
    conn, _ = listener.accept()
    return original_dst(conn)


async def test_add_redirects_and_del_restores(topo: Topology, agent_dir: str) -> None:
    """ADD passes prevResult through and captures traffic both ways; DEL leaves no trace."""
    before = observe_nft(topo.pod), observe_routing(topo.pod)
    assert await _plugin("ADD", _conf(agent_dir), topo.pod_path) == PREV
    assert await trio.to_thread.run_sync(_outbound_redirected, topo) == ("203.0.113.7", 8443)
    assert await trio.to_thread.run_sync(_inbound_redirected, topo) == (POD_IP, 80)
    assert await _plugin("CHECK", _conf(agent_dir), topo.pod_path) is None
    assert await _plugin("ADD", _conf(agent_dir), topo.pod_path) == PREV  # repeated ADD
    assert await _plugin("DEL", _conf(agent_dir), topo.pod_path) is None
    assert (observe_nft(topo.pod), observe_routing(topo.pod)) == before
    assert await _plugin("DEL", _conf(agent_dir), topo.pod_path) is None  # idempotent
    log = await trio.Path(agent_dir, "plugin.log").read_text()
    assert "ADD container=ctr-1" in log


async def test_check_reports_missing_rules(topo: Topology, agent_dir: str) -> None:
    """CHECK fails (code 5) when the rules were removed behind the agent's back."""
    await _plugin("ADD", _conf(agent_dir), topo.pod_path)
    apply.remove(topo.pod_path)
    error = await _plugin_error("CHECK", _conf(agent_dir), topo.pod_path)
    assert error["code"] == 5 and "missing" in error["msg"]


async def test_del_after_netns_is_gone(topo: Topology, agent_dir: str) -> None:
    """DEL succeeds when the pod netns has already been deleted."""
    await _plugin("ADD", _conf(agent_dir), topo.pod_path)
    from pyroute2 import netns as pnetns

    pnetns.remove(topo.pod)
    assert await _plugin("DEL", _conf(agent_dir), topo.pod_path) is None


async def test_add_with_vanished_netns_fails_cleanly(topo: Topology, agent_dir: str) -> None:
    """ADD for a netns that no longer exists: error 3, node netns untouched."""
    node_before = observe_nft(topo.node), observe_routing(topo.node)
    error = await _plugin_error("ADD", _conf(agent_dir), topo.pod_path + "-gone")
    assert error["code"] == 3 and "does not exist" in error["msg"]
    assert (observe_nft(topo.node), observe_routing(topo.node)) == node_before


@pytest.mark.parametrize("mutate, code", [
    pytest.param(lambda c: json.dumps(c)[:-5].encode(), 6, id="truncated-json"),
    pytest.param(lambda c: {**c, "cniVersion": "9.9.9"}, 1, id="unknown-version"),
    pytest.param(lambda c: {**c, "agentSocket": 42}, 7, id="agent-socket-not-string"),
    pytest.param(lambda c: {k: v for k, v in c.items() if k != "prevResult"}, 7, id="unchained"),
])
async def test_malformed_config_changes_nothing(topo: Topology, agent_dir: str, mutate: Any,
                                                code: int) -> None:
    """Bad config yields the spec error code and leaves both namespaces untouched."""
    before = [(observe_nft(ns), observe_routing(ns)) for ns in (topo.pod, topo.node)]
    conf = mutate(_conf(agent_dir))
    if isinstance(conf, bytes):
        error = await trio.to_thread.run_sync(_raw_plugin, conf, topo.pod_path)
    else:
        error = await _plugin_error("ADD", conf, topo.pod_path)
    assert error["code"] == code and error["msg"]
    assert [(observe_nft(ns), observe_routing(ns)) for ns in (topo.pod, topo.node)] == before


def _raw_plugin(stdin: bytes, netns: str) -> dict[str, Any]:
    import subprocess

    from tests.cni_plugin.cni_runner import find_plugin

    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c", "CNI_NETNS": netns,
           "CNI_IFNAME": "eth0", "CNI_ARGS": ARGS, "CNI_PATH": "/usr/lib/cni"}
    proc = subprocess.run([find_plugin("ambient-cni")], input=stdin, env=env,
                          capture_output=True, timeout=30)
    assert proc.returncode == 1
    return json.loads(proc.stdout)


async def test_status_and_unreachable_agent(topo: Topology, agent_dir: str) -> None:
    """STATUS succeeds with the agent up; with no agent STATUS is 50 and ADD is 11."""
    assert await _plugin("STATUS", _conf(agent_dir, prevResult=None), "") is None
    gone = _conf(agent_dir, agentSocket=os.path.join(agent_dir, "nobody.sock"))
    assert (await _plugin_error("STATUS", gone, ""))["code"] == 50
    assert (await _plugin_error("ADD", gone, topo.pod_path))["code"] == 11
    assert observe_nft(topo.pod).strip() == ""


async def test_garbage_on_agent_socket_gets_error_and_close(agent_dir: str) -> None:
    """A non-protocol line on the agent socket gets a decode error (6) and the connection closes."""
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.connect(os.path.join(agent_dir, "agent.sock"))
    await sock.send(b"GET / HTTP/1.1\r\n\r\n")
    data = b""
    while chunk := await sock.recv(4096):
        data += chunk
    sock.close()
    reply = json.loads(data)
    assert reply["ok"] is False and reply["code"] == 6


async def test_add_hands_pod_netns_to_ztunnel(topo: Topology, nursery: trio.Nursery) -> None:
    """With ZDS on, ADD succeeds once ztunnel acks an AddWorkload carrying the pod's netns fd."""
    from cni_plugin.agent.zds_server import ZdsServer, serve_zds
    from meshcore.zds import codec
    from meshcore.zds.seqpacket import recv_datagram_async, send_datagram_async

    directory = tempfile.mkdtemp(prefix="acni-")
    zds = ZdsServer()
    await nursery.start(serve_zds, os.path.join(directory, "zt.sock"), zds)
    await nursery.start(serve_agent, os.path.join(directory, "agent.sock"), Agent(zds=zds))

    pending = await _plugin_error("ADD", _conf(directory), topo.pod_path)
    assert pending["code"] == 11 and "ztunnel" in pending["msg"]
    assert R.NAT_TABLE in observe_nft(topo.pod)  # rules stay in: the pod is pending

    zt = trio.socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    await zt.connect(os.path.join(directory, "zt.sock"))
    await send_datagram_async(zt, codec.encode_hello())
    for _ in range(2):  # snapshot: the pending pod, then SnapshotSent
        received = await recv_datagram_async(zt)
        assert received is not None
        for fd in received[1]:
            os.close(fd)
        await send_datagram_async(zt, codec.encode_response(codec.Ack()))

    async def ztunnel() -> None:
        received = await recv_datagram_async(zt)
        assert received is not None
        data, fds = received
        assert codec.decode_request(data, len(fds)) == codec.AddWorkload("uid-1", "web-1", "shop")
        assert os.fstat(fds[0]).st_ino == os.stat(topo.pod_path).st_ino
        os.close(fds[0])
        await send_datagram_async(zt, codec.encode_response(codec.Ack()))

    nursery.start_soon(ztunnel)
    assert await _plugin("ADD", _conf(directory), topo.pod_path) == PREV
    zt.close()
    shutil.rmtree(directory, ignore_errors=True)


async def test_concurrent_adds_for_one_pod_all_succeed(topo: Topology) -> None:
    """Several ADDs racing for the same netns all succeed and leave exactly one rule set."""
    from cni_plugin.agent_protocol import AgentRequest, PodIp, PodRef

    agent = Agent()
    request = AgentRequest("add", "ctr-1", topo.pod_path, "eth0", PodRef("web-1", "shop", "u"),
                           (PodIp("eth0", f"{POD_IP}/24", NODE_IP),))
    responses = []

    async def add() -> None:
        responses.append(await agent.handle(request))

    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(add)
    assert all(r.ok for r in responses) and sum(r.changed for r in responses) == 1
    assert apply.is_installed(topo.pod_path, R.RedirectConfig())

"""The node agent end to end on a manifest folder, real pod netns and a scripted ztunnel."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
import yaml

from cni_plugin.agent.app import AgentOptions, run_agent
from cni_plugin.agent.pod_netns import NETNS_ANNOTATION
from cni_plugin.agent.reconciler import Reconciler
from cni_plugin.redirect import rules as R
from cni_plugin.redirect.host_rules import PROBE_SET_V4
from meshcore.model import REDIRECTION_ANNOTATION, Pod
from meshcore.model.folder import scan_folder
from meshcore.model.pod_status import remove_pod_status, write_pod_status
from meshcore.zds import codec
from tests.cni_plugin.cni_runner import exec_plugin
from tests.cni_plugin.netns_topology import (
    Topology,
    destroy_topology,
    make_topology,
    observe_nft,
    observe_routing,
)
from tests.cni_plugin.zds_peer import ScriptedZtunnel

pytestmark = [pytest.mark.netns, pytest.mark.trio]

NODE = "node-1"


@pytest.fixture
def pods(request: pytest.FixtureRequest) -> Iterator[dict[str, Topology]]:
    """Two pod netns (`a`, `b`), named after the test, removed afterwards."""
    if os.geteuid() != 0:
        pytest.fail("netns tests need root (run them as root, as CI does)")
    made = {name: make_topology(f"{request.node.nodeid}-{name}", wire=False)
            for name in ("a", "b")}
    try:
        yield made
    finally:
        for topo in made.values():
            destroy_topology(topo)


@dataclass
class Cluster:
    """The manifest folder (as the sandbox would keep it) and the pods' netns."""

    root: Path
    pods: dict[str, Topology]

    def write_namespace(self, mode: str | None) -> None:
        labels = {"istio.io/dataplane-mode": mode} if mode else {}
        _dump(self.root / "namespace.yaml", {"apiVersion": "v1", "kind": "Namespace",
                                             "metadata": {"name": "shop", "labels": labels}})

    def write_pods(self, opt_out: frozenset[str] = frozenset(),
                   only: tuple[str, ...] | None = None) -> None:
        docs = []
        for name in only if only is not None else tuple(self.pods):
            labels = {"app": name} | ({"istio.io/dataplane-mode": "none"}
                                      if name in opt_out else {})
            docs.append({"apiVersion": "v1", "kind": "Pod",
                         "metadata": {"name": name, "namespace": "shop", "uid": f"uid-{name}",
                                      "labels": labels},
                         "spec": {"nodeName": NODE, "serviceAccountName": name,
                                  "containers": [{"name": "app"}]}})
        _dump(self.root / "pods.yaml", *docs)

    def annotation(self, name: str) -> str | None:
        pod = scan_folder(self.root).model.get("Pod", "shop", name)
        assert isinstance(pod, Pod)
        return pod.annotations.get(REDIRECTION_ANNOTATION)

    def dumps(self) -> dict[str, tuple[str, Any]]:
        return {name: (observe_nft(t.pod), observe_routing(t.pod))
                for name, t in self.pods.items()}

    def inode(self, name: str) -> int:
        return os.stat(self.pods[name].pod_path).st_ino


def _dump(path: Path, *docs: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump_all(docs))
    os.replace(tmp, path)


@pytest.fixture
def cluster(pods: dict[str, Topology], tmp_path: Path) -> Cluster:
    """Unlabelled namespace `shop` with pods a and b on this node; overlays name their netns."""
    c = Cluster(tmp_path / "manifests", pods)
    c.root.mkdir()
    c.write_namespace(None)
    c.write_pods()
    for i, (name, topo) in enumerate(pods.items()):  # what the sandbox writes per pod
        write_pod_status(c.root, "shop", name, pod_ip=f"10.77.1.{i + 2}",
                         annotations={NETNS_ANNOTATION: topo.pod_path})
    return c


@dataclass
class RunningAgent:
    reconciler: Reconciler
    scope: trio.CancelScope
    done: trio.Event

    async def stop(self) -> None:
        self.scope.cancel()
        await self.done.wait()


async def _start(nursery: trio.Nursery, options: AgentOptions) -> RunningAgent:
    scope, done = trio.CancelScope(), trio.Event()

    async def runner(task_status: trio.TaskStatus[Reconciler]) -> None:
        try:
            with scope:
                await run_agent(options, task_status=task_status)
        finally:
            done.set()

    reconciler = await nursery.start(runner)
    return RunningAgent(reconciler, scope, done)


@pytest.fixture
def options(cluster: Cluster, tmp_path: Path) -> AgentOptions:
    """Agent options on the test's folder and sockets."""
    return AgentOptions(node=NODE, manifests=str(cluster.root),
                        agent_socket=str(tmp_path / "agent.sock"),
                        zds_socket=str(tmp_path / "ztunnel.sock"), poll_interval=0.05)


async def test_label_restart_optout_unlabel(cluster: Cluster, options: AgentOptions,
                                            nursery: trio.Nursery) -> None:
    """Labelling enrolls running pods (pending → enabled on ack); restarts resync by snapshot
    without duplicating rules; opt-out and unlabel remove exactly what was installed."""
    before = cluster.dumps()
    agent = await _start(nursery, options)
    assert agent.reconciler.statistics()["enrolled"] == 0
    assert options.zds_socket is not None
    zt = await ScriptedZtunnel.connect(options.zds_socket)
    assert await zt.receive_snapshot() == {}
    assert cluster.dumps() == before  # unlabelled: nothing touched

    # Label the namespace: both running pods are enrolled, each pending until ztunnel acks.
    cluster.write_namespace("ambient")
    seen = {}
    for _ in range(2):
        message, inode = await zt.expect()
        assert isinstance(message, codec.AddWorkload)
        name = message.name
        assert (message.uid, message.namespace, message.service_account, inode) == (
            f"uid-{name}", "shop", name, cluster.inode(name))
        assert R.NAT_TABLE in observe_nft(cluster.pods[name].pod)  # rules in before the hand-off
        assert cluster.annotation(name) == "pending"
        await zt.ack()
        seen[name] = inode
    assert set(seen) == {"a", "b"}
    await agent.reconciler.wait_synced()
    assert [cluster.annotation(n) for n in ("a", "b")] == ["enabled", "enabled"]
    enrolled = cluster.dumps()
    assert all(enrolled[n] != before[n] for n in ("a", "b"))

    # Agent restart: the new agent finds the rules, changes nothing, re-sends both pods.
    await agent.stop()
    assert await zt.wait_closed()
    zt.close()
    agent = await _start(nursery, options)
    assert agent.reconciler.statistics()["enrolled"] == 2
    zt = await ScriptedZtunnel.connect(options.zds_socket)
    assert await zt.receive_snapshot() == {"uid-a": cluster.inode("a"),
                                           "uid-b": cluster.inode("b")}
    await agent.reconciler.wait_synced()
    assert cluster.dumps() == enrolled  # no rule duplicated
    assert [cluster.annotation(n) for n in ("a", "b")] == ["enabled", "enabled"]

    # ztunnel restart: the snapshot again names both pods.
    zt.close()
    zt = await ScriptedZtunnel.connect(options.zds_socket)
    assert set(await zt.receive_snapshot()) == {"uid-a", "uid-b"}

    # Pod a opts out: its rules go first, then ztunnel is told, then the annotation goes.
    cluster.write_pods(opt_out=frozenset({"a"}))
    message, _ = await zt.expect()
    assert message == codec.DelWorkload("uid-a")
    assert cluster.dumps()["a"] == before["a"]
    await zt.ack()
    await agent.reconciler.wait_synced()
    assert cluster.annotation("a") is None
    assert cluster.annotation("b") == "enabled"
    assert cluster.dumps() == {"a": before["a"], "b": enrolled["b"]}

    # Unlabel the namespace: everything is removed; the netns are exactly as before.
    cluster.write_namespace(None)
    message, _ = await zt.expect()
    assert message == codec.DelWorkload("uid-b")
    await zt.ack()
    await agent.reconciler.wait_synced()
    assert [cluster.annotation(n) for n in ("a", "b")] == [None, None]
    assert cluster.dumps() == before
    await agent.stop()
    zt.close()


async def test_pending_without_ztunnel_then_snapshot(cluster: Cluster, options: AgentOptions,
                                                     nursery: trio.Nursery) -> None:
    """With no ztunnel, enrolled pods stay pending; the first ztunnel's snapshot acks them."""
    cluster.write_namespace("ambient")
    agent = await _start(nursery, options)
    assert agent.reconciler.statistics()["pending"] == 2
    assert [cluster.annotation(n) for n in ("a", "b")] == ["pending", "pending"]
    assert options.zds_socket is not None
    zt = await ScriptedZtunnel.connect(options.zds_socket)
    assert set(await zt.receive_snapshot()) == {"uid-a", "uid-b"}
    await agent.reconciler.wait_synced()
    assert [cluster.annotation(n) for n in ("a", "b")] == ["enabled", "enabled"]
    await agent.stop()
    zt.close()


async def test_unlabelled_while_agent_down(cluster: Cluster, options: AgentOptions,
                                           nursery: trio.Nursery) -> None:
    """A label removed while the agent was down: the restarted agent removes the rules."""
    before = cluster.dumps()
    cluster.write_namespace("ambient")
    agent = await _start(nursery, options)
    assert cluster.dumps() != before
    await agent.stop()
    cluster.write_namespace(None)
    agent = await _start(nursery, options)
    assert agent.reconciler.statistics()["known"] == 2
    assert cluster.dumps() == before
    assert [cluster.annotation(n) for n in ("a", "b")] == [None, None]
    await agent.stop()


def _plugin(command: str, options: AgentOptions, topo: Topology, name: str
            ) -> dict[str, Any] | None:
    conf = {"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "ambient-cni",
            "agentSocket": options.agent_socket,
            "logFile": os.path.join(os.path.dirname(options.agent_socket), "plugin.log"),
            "prevResult": {"cniVersion": "1.0.0", "ips": [{"address": "10.77.1.9/24"}]}}
    return exec_plugin(command, conf, container_id=f"ctr-{name}", netns=topo.pod_path,
                       cni_args=f"K8S_POD_NAMESPACE=shop;K8S_POD_NAME={name};"
                                f"K8S_POD_UID=uid-{name}")


async def test_cni_add_and_del_follow_labels(cluster: Cluster, options: AgentOptions,
                                             nursery: trio.Nursery) -> None:
    """CNI ADD enrolls per labels (opt-out honoured) and answers after ztunnel's ack; CNI DEL
    removes the rules and the pod is not rediscovered from its netns afterwards."""
    before = cluster.dumps()
    for name in cluster.pods:  # not discoverable: only a CNI ADD can announce them
        remove_pod_status(cluster.root, "shop", name)
    cluster.write_namespace("ambient")
    cluster.write_pods(opt_out=frozenset({"a"}))
    agent = await _start(nursery, options)
    assert agent.reconciler.statistics()["unserved"] == 1  # b: wanted, netns unknown
    assert options.zds_socket is not None
    zt = await ScriptedZtunnel.connect(options.zds_socket)
    assert await zt.receive_snapshot() == {}

    result: list[Any] = []
    added = trio.Event()

    async def add_b() -> None:
        result.append(await trio.to_thread.run_sync(_plugin, "ADD", options,
                                                    cluster.pods["b"], "b"))
        added.set()

    nursery.start_soon(add_b)
    message, inode = await zt.expect()
    assert isinstance(message, codec.AddWorkload) and message.uid == "uid-b"
    assert inode == cluster.inode("b")
    assert result == []  # the plugin waits for ztunnel's ack
    await zt.ack()
    with trio.fail_after(10):
        await added.wait()
    await agent.reconciler.wait_synced()
    assert result and result[0]["ips"][0]["address"] == "10.77.1.9/24"
    assert cluster.annotation("b") == "enabled"
    assert R.NAT_TABLE in observe_nft(cluster.pods["b"].pod)

    # Opted-out pod: ADD succeeds without touching the netns or ztunnel.
    await trio.to_thread.run_sync(_plugin, "ADD", options, cluster.pods["a"], "a")
    assert cluster.dumps()["a"] == before["a"]
    assert cluster.annotation("a") is None

    # The sandbox names b's netns, then the runtime deletes the sandbox (CNI DEL).
    write_pod_status(cluster.root, "shop", "b",
                     annotations={NETNS_ANNOTATION: cluster.pods["b"].pod_path})
    await agent.reconciler.wait_synced()

    deleted = trio.Event()

    async def del_b() -> None:
        await trio.to_thread.run_sync(_plugin, "DEL", options, cluster.pods["b"], "b")
        deleted.set()

    nursery.start_soon(del_b)
    assert (await zt.expect())[0] == codec.DelWorkload("uid-b")
    await zt.ack()
    with trio.fail_after(10):
        await deleted.wait()
    await agent.reconciler.wait_synced()
    assert cluster.annotation("b") is None
    assert cluster.dumps() == before
    assert "b" not in {key[1] for key in agent.reconciler.records()}
    await agent.stop()
    zt.close()


async def test_cni_add_before_the_pod_is_listed(cluster: Cluster, options: AgentOptions,
                                                nursery: trio.Nursery) -> None:
    """An ADD for a pod the folder does not list yet succeeds unenrolled; the pod is enrolled
    as soon as its manifest appears."""
    for name in cluster.pods:
        remove_pod_status(cluster.root, "shop", name)
    cluster.write_namespace("ambient")
    cluster.write_pods(only=("a",))
    options = dataclasses.replace(options, add_model_wait=0.2)
    agent = await _start(nursery, options)
    assert options.zds_socket is not None
    zt = await ScriptedZtunnel.connect(options.zds_socket)
    assert await zt.receive_snapshot() == {}
    before_b = cluster.dumps()["b"]
    await trio.to_thread.run_sync(_plugin, "ADD", options, cluster.pods["b"], "b")
    assert cluster.dumps()["b"] == before_b  # not listed: nothing installed yet
    cluster.write_pods()
    message, inode = await zt.expect()
    assert message == codec.AddWorkload("uid-b", "b", "shop", "b")
    assert inode == cluster.inode("b")
    await zt.ack()
    await agent.reconciler.wait_synced()
    assert cluster.annotation("b") == "enabled"
    assert R.NAT_TABLE in observe_nft(cluster.pods["b"].pod)
    await agent.stop()
    zt.close()


async def test_nack_keeps_pending_then_retries(cluster: Cluster, options: AgentOptions,
                                               nursery: trio.Nursery) -> None:
    """A NACKed pod stays pending and its AddWorkload is retried until ztunnel acks it."""
    options = dataclasses.replace(options, retry_interval=0.1)
    agent = await _start(nursery, options)
    assert options.zds_socket is not None
    zt = await ScriptedZtunnel.connect(options.zds_socket)
    assert await zt.receive_snapshot() == {}
    cluster.write_namespace("ambient")
    answers = {"a": ["failure to start proxy", ""], "b": [""]}
    while any(answers.values()):
        message, _ = await zt.expect()
        assert isinstance(message, codec.AddWorkload)
        assert cluster.annotation(message.name) == "pending"  # also on the retry after a NACK
        await zt.ack(answers[message.name].pop(0))
    await agent.reconciler.wait_synced()
    assert [cluster.annotation(n) for n in ("a", "b")] == ["enabled", "enabled"]
    await agent.stop()
    zt.close()


async def test_kubelet_probe_snat_follows_enrollment(cluster: Cluster, options: AgentOptions,
                                                     nursery: trio.Nursery) -> None:
    """The node's probe set holds exactly the enrolled (ztunnel-acked) pods' IPs: added on
    enrollment, removed on opt-out and unlabel."""
    node = cluster.pods["a"]
    options = dataclasses.replace(options, host_probe_netns=node.node_path, kubelet_uid=0)
    assert options.zds_socket is not None

    def probe_set() -> str:
        listing = observe_nft(node.node)
        start = listing.find(PROBE_SET_V4)
        return listing[start:listing.find("}", start)] if start >= 0 else ""

    agent = await _start(nursery, options)
    zt = await ScriptedZtunnel.connect(options.zds_socket)
    assert await zt.receive_snapshot() == {}
    assert "elements" not in probe_set()  # table in place, nobody enrolled yet
    cluster.write_namespace("ambient")
    for _ in range(2):
        await zt.expect()
        await zt.ack()
    await agent.reconciler.wait_synced()
    assert "10.77.1.2" in probe_set() and "10.77.1.3" in probe_set()
    cluster.write_pods(opt_out=frozenset({"a"}))
    await zt.expect()
    await zt.ack()
    await agent.reconciler.wait_synced()
    assert "10.77.1.2" not in probe_set() and "10.77.1.3" in probe_set()
    cluster.write_namespace(None)
    await zt.expect()
    await zt.ack()
    await agent.reconciler.wait_synced()
    assert "elements" not in probe_set()
    await agent.stop()
    zt.close()


async def test_served_pod_whose_netns_is_lost_is_kept_then_re_added(
        cluster: Cluster, options: AgentOptions, nursery: trio.Nursery) -> None:
    """After a restart, a pod ztunnel served (annotation enabled) whose netns the agent cannot
    find is named with KeepWorkload, so ztunnel keeps it; once found it is re-added; deleted
    while kept, ztunnel is told to drop it."""
    assert options.zds_socket is not None
    cluster.write_namespace("ambient")
    agent = await _start(nursery, options)
    zt = await ScriptedZtunnel.connect(options.zds_socket)
    assert set(await zt.receive_snapshot()) == {"uid-a", "uid-b"}
    await agent.reconciler.wait_synced()
    await agent.stop()
    assert await zt.wait_closed()
    zt.close()

    lost = str(cluster.root / "no-such-netns")
    write_pod_status(cluster.root, "shop", "a", annotations={NETNS_ANNOTATION: lost})
    agent = await _start(nursery, options)
    zt = await ScriptedZtunnel.connect(options.zds_socket)
    assert await zt.receive_snapshot() == {"uid-b": cluster.inode("b")}
    assert zt.kept == ["uid-a"]
    assert cluster.annotation("a") == "enabled"  # still served, nothing rewritten

    write_pod_status(cluster.root, "shop", "a",
                     annotations={NETNS_ANNOTATION: cluster.pods["a"].pod_path})
    message, inode = await zt.expect()
    assert isinstance(message, codec.AddWorkload) and message.uid == "uid-a"
    assert inode == cluster.inode("a")
    await zt.ack()
    await agent.reconciler.wait_synced()
    await agent.stop()
    assert await zt.wait_closed()
    zt.close()

    write_pod_status(cluster.root, "shop", "a", annotations={NETNS_ANNOTATION: lost})
    agent = await _start(nursery, options)
    zt = await ScriptedZtunnel.connect(options.zds_socket)
    await zt.receive_snapshot()
    assert zt.kept == ["uid-a"]
    cluster.write_pods(only=("b",))  # pod a deleted while kept
    message, _ = await zt.expect()
    assert message == codec.DelWorkload("uid-a")
    await zt.ack()
    await agent.reconciler.wait_synced()
    await agent.stop()
    zt.close()

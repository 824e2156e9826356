"""The node agent's Kubernetes side against kmock: namespace + node-pod watch → ClusterModel
snapshots for the reconciler, the `pods/status` annotation patch, and the agent's health port.

kmock is an asyncio server; it runs on the agent's own asyncio bridge thread
(`meshcore.grpc_bridge`), and the test changes the emulated cluster only through API requests
made on that thread.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kopf
import pytest
import trio
from kmock import KubernetesEmulator
from kmock._internal import apps

from cni_plugin.agent.app import AgentOptions, run_agent
from cni_plugin.agent.kube_source import KubeStatusWriter, watch_kubernetes
from meshcore.grpc_bridge import AsyncioBridge, open_asyncio_bridge
from meshcore.kube import KubeClient
from meshcore.model import REDIRECTION_ANNOTATION, ClusterModel, Pod
from tests.support.kmock_fixes import fix_namespaces_path

pytestmark = pytest.mark.trio
DEADLINE = 10.0
NODE = "worker-1"


def namespace(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": labels or {}}}


def pod(ns: str, name: str, node: str = NODE) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"namespace": ns, "name": name, "uid": f"uid-{name}"},
            "spec": {"nodeName": node, "serviceAccountName": "default",
                     "containers": [{"name": "app", "image": "app"}]},
            "status": {"phase": "Running", "podIP": "10.1.0.5", "podIPs": [{"ip": "10.1.0.5"}]}}


@dataclass
class Cluster:
    bridge: AsyncioBridge
    emulator: Any
    client: KubeClient

    async def create(self, obj: dict[str, Any]) -> None:
        await self.bridge.call(self.client.create, obj)

    async def delete(self, kind: str, ns: str, name: str) -> None:
        await self.bridge.call(self.client.delete, self.client.path(kind, ns, name))

    async def stored(self, ns: str, name: str) -> dict[str, Any]:
        async def read() -> dict[str, Any]:
            return dict(self.emulator.objects["v1/pods", ns, name])
        return await self.bridge.call(read)


@pytest.fixture()
async def cluster(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Cluster]:
    fix_namespaces_path(monkeypatch)
    async with open_asyncio_bridge() as bridge:
        started: list[Any] = []
        up = trio.Event()

        async def serve() -> None:  # on the asyncio thread, until the bridge closes
            import asyncio

            async with KubernetesEmulator() as emulator, apps.Server(emulator):
                verbs = {"list", "watch", "get", "patch", "create", "delete"}
                emulator.resources["v1/pods"] = emulator.ResourceInfo(
                    kind="Pod", namespaced=True, verbs=verbs, subresources={"status"})
                emulator.resources["v1/namespaces"] = emulator.ResourceInfo(
                    kind="Namespace", namespaced=False, verbs=verbs)
                started.append(emulator)
                bridge.to_trio(up.set)
                await asyncio.Event().wait()

        bridge.start_soon(serve)
        with trio.fail_after(DEADLINE):
            await up.wait()
        emulator = started[0]
        url = str(emulator.url)
        client = KubeClient(lambda: kopf.ConnectionInfo(server=url))
        try:
            yield Cluster(bridge, emulator, client)
        finally:
            with trio.CancelScope(shield=True):
                await bridge.call(client.close)


def write_kubeconfig(tmp_path: Path, cluster: Cluster) -> Path:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "kmock",
        "clusters": [{"name": "kmock", "cluster": {"server": str(cluster.emulator.url)}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "u"}}]}))
    return kubeconfig


@dataclass
class Recorder:
    """A `ModelSink` that keeps every model it is handed."""

    models: list[ClusterModel] = field(default_factory=list)
    seq: int = 0
    changed: trio.Event = field(default_factory=trio.Event)

    def scan_starting(self) -> int:
        self.seq += 1
        return self.seq

    def model_scanned(self, model: ClusterModel, seq: int) -> None:
        if not self.models or model is not self.models[-1]:
            self.models.append(model)
            self.changed.set()
            self.changed = trio.Event()

    async def wait_for(self, predicate: Callable[[ClusterModel], bool]) -> ClusterModel:
        with trio.fail_after(DEADLINE):
            while not (self.models and predicate(self.models[-1])):
                await self.changed.wait()
        return self.models[-1]


def pod_names(model: ClusterModel) -> set[str]:
    return {p.name for p in model.pods_on_node(NODE)}


async def test_watch_hands_over_models_of_this_nodes_pods(cluster):
    """Listed namespaces and this node's pods form the first model; later changes follow."""
    await cluster.create(namespace("shop", {"istio.io/dataplane-mode": "ambient"}))
    await cluster.create(pod("shop", "web"))
    await cluster.create(pod("shop", "elsewhere", node="worker-2"))
    sink = Recorder()
    async with trio.open_nursery() as nursery:
        first = await nursery.start(lambda task_status: watch_kubernetes(
            cluster.bridge, cluster.client, sink, node=NODE, task_status=task_status))
        assert first.namespace_labels("shop") == {"istio.io/dataplane-mode": "ambient"}
        assert {p.name for p in first.of_kind("Pod").values()} == {"web"}
        assert isinstance(first.get("Pod", "shop", "web"), Pod)

        await cluster.create(pod("shop", "api"))
        await sink.wait_for(lambda m: pod_names(m) == {"web", "api"})
        await cluster.delete("Pod", "shop", "web")
        await sink.wait_for(lambda m: pod_names(m) == {"api"})
        await cluster.create(namespace("bank"))
        model = await sink.wait_for(lambda m: m.namespace_labels("bank") is not None
                                    and m.get("Namespace", "", "bank") is not None)
        assert pod_names(model) == {"api"}
        nursery.cancel_scope.cancel()
    request = next(r for r in cluster.emulator["get"] if r.params.get("fieldSelector"))
    assert request.params["fieldSelector"] == f"spec.nodeName={NODE}"


async def test_status_writer_merge_patches_the_annotation_on_pods_status(cluster):
    """set_redirection patches pods/status; None removes the key; a gone pod is no error."""
    await cluster.create(pod("shop", "web"))
    writer = KubeStatusWriter(cluster.bridge, cluster.client)
    await trio.to_thread.run_sync(writer.set_redirection, "shop", "web", "enabled")
    stored = await cluster.stored("shop", "web")
    assert stored["metadata"]["annotations"] == {REDIRECTION_ANNOTATION: "enabled"}
    await trio.to_thread.run_sync(writer.set_redirection, "shop", "web", None)
    stored = await cluster.stored("shop", "web")
    assert REDIRECTION_ANNOTATION not in (stored["metadata"].get("annotations") or {})
    await trio.to_thread.run_sync(writer.set_redirection, "shop", "gone", "enabled")
    patches = list(cluster.emulator["patch"])
    assert [r.subresource for r in patches] == ["status", "status", "status"]
    assert patches[0].headers["Content-Type"] == "application/merge-patch+json"
    assert json.loads(patches[1].body) == {"metadata": {"annotations": {
        REDIRECTION_ANNOTATION: None}}}


async def test_agent_on_kubernetes_is_ready_after_its_first_pass(cluster, tmp_path: Path,
                                                                 monkeypatch):
    """`run_agent(kubernetes=True)` logs in from KUBECONFIG, lists, reconciles; /readyz is 200."""
    kubeconfig = write_kubeconfig(tmp_path, cluster)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    await cluster.create(namespace("shop", {"istio.io/dataplane-mode": "ambient"}))
    await cluster.create(pod("shop", "web"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    options = AgentOptions(node=NODE, kubernetes=True, health_port=port, zds_socket=None,
                           agent_socket=str(tmp_path / "agent.sock"),
                           proc_root=str(tmp_path / "no-proc"))
    async with trio.open_nursery() as nursery:
        reconciler = await nursery.start(run_agent, options)
        assert pod_names(reconciler.model) == {"web"}
        assert reconciler.statistics()["unserved"] == 1  # no netns found for it: not running
        for path in ("/healthz", "/readyz"):
            status = await trio.to_thread.run_sync(http_status, f"http://127.0.0.1:{port}{path}")
            assert status == 200, path
        nursery.cancel_scope.cancel()


def http_status(url: str) -> int:
    with urllib.request.urlopen(url, timeout=DEADLINE) as rsp:
        return int(rsp.status)


async def test_readyz_is_503_until_the_first_pass():
    """/readyz answers 503 before the first reconcile pass and 200 after; /healthz always 200."""
    from cni_plugin.agent.app import _health_routes
    from meshcore.admin.http import AdminRequest

    ready = [False]
    routes = _health_routes(ready)
    request = AdminRequest("GET", "/readyz", {}, b"")
    assert routes["/readyz"](request).status == 503
    assert routes["/healthz"](request).status == 200
    ready[0] = True
    assert routes["/readyz"](request).status == 200


async def test_agent_exits_with_the_rbac_hint_when_forbidden(cluster, tmp_path: Path):
    """A 403 on the pod list ends `ambient-cni agent` with exit 1 and a one-line RBAC hint."""
    kubeconfig = write_kubeconfig(tmp_path, cluster)

    async def forbid() -> None:
        cluster.emulator["list"] << 403 << {"kind": "Status", "reason": "Forbidden",
                                            "message": "pods is forbidden"}
    await cluster.bridge.call(forbid)
    with trio.fail_after(30):
        done = await trio.run_process(
            [sys.executable, "-m", "cni_plugin", "agent", "--node", NODE, "--no-zds",
             "--agent-socket", str(tmp_path / "agent.sock")],
            env={**os.environ, "KUBECONFIG": str(kubeconfig)}, capture_stderr=True,
            check=False)
    stderr = done.stderr.decode()
    assert done.returncode == 1, stderr
    assert "HTTP 403 Forbidden" in stderr and "docs/cni.md" in stderr
    assert "Traceback" not in stderr

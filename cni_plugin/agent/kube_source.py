"""The node agent's Kubernetes side (trio): pod/namespace watch → models, and the annotation.

`watch_kubernetes(bridge, client, sink, node=...)` runs two `meshcore.kube.Informer`s on the
asyncio bridge thread (`meshcore.grpc_bridge`): all Namespaces, and the Pods with
`spec.nodeName=<node>`. After each change it builds a `ClusterModel` (immutable, built on the
asyncio thread) and hands it to the trio side, which calls `sink.scan_starting()` /
`sink.model_scanned(model, seq)` exactly as the manifest-folder watcher does (`watch.py`); the
current model is re-handed every `interval` seconds too (the same object: no re-plan), so
`Reconciler.wait_synced` keeps its meaning ("acted on everything known now").
`task_status.started(model)` fires once both collections are listed.

`KubeStatusWriter` is the Kubernetes `status.StatusWriter`: a JSON merge patch of
`metadata.annotations["ambient.istio.io/redirection"]` on the `pods/status` subresource (as
Istio's agent does; null removes it); 404 (pod gone) is success. Called from the reconciler's
worker threads; it reaches the asyncio loop through `trio.from_thread.run(bridge.call, ...)`.
API failures surface as `OSError` (what the reconciler expects of a status writer: logged,
retried on the next pass).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import trio

from cni_plugin.agent.watch import ModelSink
from meshcore.grpc_bridge import AsyncioBridge
from meshcore.kube import KubeApiError, KubeClient
from meshcore.kube.informer import Informer
from meshcore.model import (
    REDIRECTION_ANNOTATION,
    ClusterModel,
    ModelObject,
    Pod,
    parse_object,
)

log = logging.getLogger(__name__)
FORBIDDEN_HINT = ("does the ambient-cni ClusterRole allow get/list/watch on pods and "
                  "namespaces and patch on pods/status? see docs/cni.md")


def agent_client() -> KubeClient:
    """The agent's API client (in-cluster service account, or KUBECONFIG)."""
    return KubeClient(user_agent="ambient-cni-agent", forbidden_hint=FORBIDDEN_HINT)


def _parser(kind: str) -> Any:
    def parse(manifest: Mapping[str, Any]) -> ModelObject:
        return parse_object({**manifest, "apiVersion": "v1", "kind": kind})
    return parse


def build_model(namespaces: Mapping[Any, ModelObject], pods: Mapping[Any, ModelObject],
                node: str, system_namespace: str) -> ClusterModel:
    """The model of all namespaces and the pods on `node` (the API's field selector already
    says so; checked again here so a server that ignores it cannot widen the agent's view)."""
    mine = [p for p in pods.values() if isinstance(p, Pod) and p.node_name == node]
    return ClusterModel.from_objects([*namespaces.values(), *mine],
                                     system_namespace=system_namespace)


async def watch_kubernetes(bridge: AsyncioBridge, client: KubeClient, sink: ModelSink, *,
                           node: str, system_namespace: str = "istio-system",
                           interval: float = 1.0,
                           task_status: trio.TaskStatus[ClusterModel] = trio.TASK_STATUS_IGNORED,
                           ) -> None:
    """Feed `sink` models of this node's pods and all namespaces until cancelled."""
    latest: list[ClusterModel] = []
    changed = trio.Event()

    def deliver(model: ClusterModel) -> None:  # trio thread
        nonlocal changed
        latest[:] = [model]
        changed.set()
        changed = trio.Event()

    ns_informer: Informer[ModelObject] = Informer(
        client, client.path("Namespace"), _parser("Namespace"))
    pod_informer: Informer[ModelObject] = Informer(
        client, client.path("Pod"), _parser("Pod"), field_selector=f"spec.nodeName={node}")

    def on_change() -> None:  # asyncio thread
        if ns_informer.synced and pod_informer.synced:
            bridge.to_trio(deliver, build_model(ns_informer.objects, pod_informer.objects,
                                                node, system_namespace))

    ns_informer.on_change = pod_informer.on_change = on_change

    async with trio.open_nursery() as nursery:  # a non-retryable API error ends the agent
        nursery.start_soon(bridge.call, ns_informer.run)
        nursery.start_soon(bridge.call, pod_informer.run)
        while not latest:
            await changed.wait()
        first = latest[0]
        sink.model_scanned(first, sink.scan_starting())
        log.info("Kubernetes: %d namespace(s), %d pod(s) on node %s", len(ns_informer.objects),
                 len(pod_informer.objects), node)
        task_status.started(first)
        while True:
            seq = sink.scan_starting()
            sink.model_scanned(latest[0], seq)
            with trio.move_on_after(interval):
                await changed.wait()


class KubeStatusWriter:
    """Merge-patches the redirection annotation on `pods/status` (see module docstring)."""

    def __init__(self, bridge: AsyncioBridge, client: KubeClient) -> None:
        self.bridge = bridge
        self.client = client

    async def patch(self, namespace: str, name: str, value: str | None) -> None:
        """The async form (trio side): one merge patch; 404 is fine."""
        path = self.client.path("Pod", namespace, name, "status")
        body = {"metadata": {"annotations": {REDIRECTION_ANNOTATION: value}}}
        try:
            await self.bridge.call(self.client.merge_patch, path, body)
        except KubeApiError as exc:
            if exc.status == 404:
                return
            raise OSError(f"pod {namespace}/{name}: {exc}") from exc

    def set_redirection(self, namespace: str, name: str, value: str | None) -> None:
        """From a trio worker thread (the `StatusWriter` protocol)."""
        trio.from_thread.run(self.patch, namespace, name, value)

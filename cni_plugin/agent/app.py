"""The node agent process, assembled (trio): config watch, reconciler, ZDS server, plugin socket.

`run_agent(options)` starts, in one nursery and in this order:
0. with `health_port`: `/healthz` (200 while the process serves) and `/readyz` (200 once the
   first reconcile pass is done) on that port (`meshcore.admin.http`);
1. the config source up to its first complete model: the manifest-folder watch
   (`watch.watch_folder`), or with `kubernetes` the API watch of namespaces and this node's pods
   (`kube_source.watch_kubernetes`, over the asyncio bridge; pods' netns found by a /proc scan,
   `pod_netns.ProcFinder`; the annotation written by `kube_source.KubeStatusWriter`);
2. the first reconcile pass over every pod on the node (rules installed where missing, pods
   registered for the ZDS snapshot, annotations written); logs what it found;
3. the ZDS server (`zds_server.serve_zds`) — only now, so ztunnel's first snapshot after an
   agent restart names every enrolled pod and ztunnel drops none of them;
4. the plugin socket (`server.serve_agent`, CNI events handed to the reconciler);
5. the reconcile loop (`Reconciler.run`).
`task_status.started(reconciler)` once all are up. Cancelling the nursery stops everything; the
rules stay in the pods (a restarted agent finds them and changes nothing).

Who calls it: `cni_plugin.agent.__main__` (`ambient-cni agent`), the sandbox, tests.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import trio

from cni_plugin.agent.enrollment import AgentSettings, Enroll, Unenroll
from cni_plugin.agent.host_probe import HostProbe, find_kubelet_uid
from cni_plugin.agent.pod_netns import AnnotationFinder, NetnsFinder, ProcFinder
from cni_plugin.agent.reconciler import Reconciler
from cni_plugin.agent.server import Agent, serve_agent
from cni_plugin.agent.status import FolderStatusWriter, StatusWriter
from cni_plugin.agent.watch import POLL_INTERVAL, watch_folder
from cni_plugin.agent.zds_server import DEFAULT_ZDS_SOCKET, ZdsServer, serve_zds
from cni_plugin.agent_protocol import DEFAULT_AGENT_SOCKET
from meshcore.admin.http import AdminRequest, AdminResponse, serve_admin
from meshcore.zds import codec as zds_codec

log = logging.getLogger("cni_plugin.agent")


@dataclass(frozen=True)
class AgentOptions:
    node: str
    manifests: str = ""  # the folder source; unused with `kubernetes`
    kubernetes: bool = False  # the API (in-cluster or KUBECONFIG) instead of a folder
    health_port: int | None = None  # /healthz, /readyz on 0.0.0.0:<port>
    proc_root: str = "/proc"  # Kubernetes: where running pods' netns are looked up
    agent_socket: str = DEFAULT_AGENT_SOCKET
    zds_socket: str | None = DEFAULT_ZDS_SOCKET  # None: no ztunnel (rules only, stay pending)
    system_namespace: str = "istio-system"
    exclude_namespaces: frozenset[str] = frozenset()
    dns_capture: bool = False
    poll_interval: float = POLL_INTERVAL
    retry_interval: float = 5.0
    add_model_wait: float = 3.0  # how long a CNI ADD waits for the config source to list the pod
    # The node netns whose kubelet probes to enrolled pods are SNATed to 169.254.7.127 (the
    # agent's own with host networking); None: no probe exemption (tests in a shared netns).
    host_probe_netns: str | None = None
    kubelet_uid: int | None = None  # None: found in `proc_root`, else root (0)


@contextlib.asynccontextmanager
async def _kubernetes(options: AgentOptions) -> AsyncIterator[tuple[Any, Any]]:
    """The asyncio bridge and the agent's API client (imported only with --kubernetes)."""
    from cni_plugin.agent.kube_source import agent_client
    from meshcore.grpc_bridge import open_asyncio_bridge

    async with open_asyncio_bridge() as bridge:
        client = agent_client()
        try:
            yield bridge, client
        finally:
            with trio.CancelScope(shield=True):
                await bridge.call(client.close)


async def run_agent(options: AgentOptions, *,
                    task_status: trio.TaskStatus[Reconciler] = trio.TASK_STATUS_IGNORED) -> None:
    """Run the node agent until cancelled."""
    async with contextlib.AsyncExitStack() as stack:
        kube = await stack.enter_async_context(_kubernetes(options)) \
            if options.kubernetes else None
        await _run(options, kube, task_status)


async def _run(options: AgentOptions, kube: tuple[Any, Any] | None,
               task_status: trio.TaskStatus[Reconciler]) -> None:
    settings = AgentSettings(options.node, options.system_namespace, options.exclude_namespaces,
                             options.dns_capture)
    holder: list[Reconciler] = []
    ready = [False]

    def on_snapshot(acks: Mapping[str, zds_codec.Ack]) -> None:
        holder[0].snapshot_acked(acks)

    status: StatusWriter
    finder: NetnsFinder
    if kube is not None:
        from cni_plugin.agent.kube_source import KubeStatusWriter

        status, finder = KubeStatusWriter(*kube), ProcFinder(options.proc_root)
    else:
        status, finder = FolderStatusWriter(options.manifests), AnnotationFinder()
    zds = ZdsServer(on_snapshot=on_snapshot) if options.zds_socket else None
    reconciler = Reconciler(settings, status=status, finder=finder, zds=zds,
                            host_probe=_host_probe(options),
                            retry_interval=options.retry_interval,
                            add_model_wait=options.add_model_wait)
    holder.append(reconciler)
    async with trio.open_nursery() as nursery:
        if options.health_port is not None:
            port = await nursery.start(serve_admin, _health_routes(ready), "0.0.0.0",
                                       options.health_port)
            log.info("health endpoints (/healthz, /readyz) on port %d", port)
        if kube is not None:
            from cni_plugin.agent.kube_source import watch_kubernetes

            bridge, client = kube
            await nursery.start(lambda task_status: watch_kubernetes(
                bridge, client, reconciler, node=options.node,
                system_namespace=options.system_namespace, task_status=task_status))
        else:
            await nursery.start(lambda task_status: watch_folder(
                options.manifests, reconciler, interval=options.poll_interval,
                system_namespace=options.system_namespace, task_status=task_status))
        plan = await reconciler.reconcile()
        stats = reconciler.statistics()
        log.info("node %s: %d pod(s) on this node in %s, %d with a known netns; %d enrolled, "
                 "%d pending, %d should be enrolled but their netns is unknown; %d enrolled and "
                 "%d unenrolled by this pass", options.node,
                 len(reconciler.model.pods_on_node(options.node)),
                 "the Kubernetes API" if kube is not None else options.manifests,
                 stats["known"], stats["enrolled"], stats["pending"], stats["unserved"],
                 sum(isinstance(a, Enroll) for a in plan.changes()),
                 sum(isinstance(a, Unenroll) for a in plan.changes()))
        if zds is not None and options.zds_socket:
            await nursery.start(serve_zds, options.zds_socket, zds)
            log.info("ZDS socket for ztunnel: %s", options.zds_socket)
        await nursery.start(serve_agent, options.agent_socket, Agent(pods=reconciler))
        log.info("plugin socket: %s", options.agent_socket)
        await nursery.start(reconciler.run)
        ready[0] = True
        task_status.started(reconciler)


def _host_probe(options: AgentOptions) -> HostProbe | None:
    if options.host_probe_netns is None:
        log.info("kubelet probe exemption off: probes to enrolled pods go through ztunnel")
        return None
    uid = options.kubelet_uid
    if uid is None:
        uid = find_kubelet_uid(options.proc_root)
        if uid is None:
            log.warning("no kubelet process visible in %s; kubelet probes are assumed to run as "
                        "root (uid 0): set --kubelet-uid if the kubelet runs as another user",
                        options.proc_root)
            uid = 0
    log.info("kubelet probes (uid %d) to enrolled pods are SNATed to 169.254.7.127 in %s", uid,
             options.host_probe_netns)
    return HostProbe(options.host_probe_netns, uid)


def _health_routes(ready: list[bool]) -> dict[str, Any]:
    def healthz(_: AdminRequest) -> AdminResponse:
        return AdminResponse.text("ok\n")

    def readyz(_: AdminRequest) -> AdminResponse:
        if ready[0]:
            return AdminResponse.text("ready\n")
        return AdminResponse.text("not ready: first reconcile pass not done\n", 503)

    return {"/healthz": healthz, "/readyz": readyz}

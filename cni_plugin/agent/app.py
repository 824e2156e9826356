"""The node agent process, assembled (trio): config watch, reconciler, ZDS server, plugin socket.

`run_agent(options)` starts, in one nursery and in this order:
1. the manifest-folder watch (`watch.watch_folder`), up to its first scan;
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

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import trio

from cni_plugin.agent.enrollment import AgentSettings, Enroll, Unenroll
from cni_plugin.agent.pod_netns import AnnotationFinder
from cni_plugin.agent.reconciler import Reconciler
from cni_plugin.agent.server import Agent, serve_agent
from cni_plugin.agent.status import FolderStatusWriter
from cni_plugin.agent.watch import POLL_INTERVAL, watch_folder
from cni_plugin.agent.zds_server import DEFAULT_ZDS_SOCKET, ZdsServer, serve_zds
from cni_plugin.agent_protocol import DEFAULT_AGENT_SOCKET
from meshcore.zds import codec as zds_codec

log = logging.getLogger("cni_plugin.agent")


@dataclass(frozen=True)
class AgentOptions:
    node: str
    manifests: str
    agent_socket: str = DEFAULT_AGENT_SOCKET
    zds_socket: str | None = DEFAULT_ZDS_SOCKET  # None: no ztunnel (rules only, stay pending)
    system_namespace: str = "istio-system"
    exclude_namespaces: frozenset[str] = frozenset()
    dns_capture: bool = False
    poll_interval: float = POLL_INTERVAL
    retry_interval: float = 5.0
    add_model_wait: float = 3.0  # how long a CNI ADD waits for the config source to list the pod


async def run_agent(options: AgentOptions, *,
                    task_status: trio.TaskStatus[Reconciler] = trio.TASK_STATUS_IGNORED) -> None:
    """Run the node agent until cancelled."""
    settings = AgentSettings(options.node, options.system_namespace, options.exclude_namespaces,
                             options.dns_capture)
    holder: list[Reconciler] = []

    def on_snapshot(acks: Mapping[str, zds_codec.Ack]) -> None:
        holder[0].snapshot_acked(acks)

    zds = ZdsServer(on_snapshot=on_snapshot) if options.zds_socket else None
    reconciler = Reconciler(settings, status=FolderStatusWriter(options.manifests),
                            finder=AnnotationFinder(), zds=zds,
                            retry_interval=options.retry_interval,
                            add_model_wait=options.add_model_wait)
    holder.append(reconciler)
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: watch_folder(
            options.manifests, reconciler, interval=options.poll_interval,
            system_namespace=options.system_namespace, task_status=task_status))
        plan = await reconciler.reconcile()
        stats = reconciler.statistics()
        log.info("node %s: %d pod(s) on this node in %s, %d with a known netns; %d enrolled, "
                 "%d pending, %d should be enrolled but their netns is unknown; %d enrolled and "
                 "%d unenrolled by this pass", options.node,
                 len(reconciler.model.pods_on_node(options.node)), options.manifests,
                 stats["known"], stats["enrolled"], stats["pending"], stats["unserved"],
                 sum(isinstance(a, Enroll) for a in plan.changes()),
                 sum(isinstance(a, Unenroll) for a in plan.changes()))
        if zds is not None and options.zds_socket:
            await nursery.start(serve_zds, options.zds_socket, zds)
            log.info("ZDS socket for ztunnel: %s", options.zds_socket)
        await nursery.start(serve_agent, options.agent_socket, Agent(pods=reconciler))
        log.info("plugin socket: %s", options.agent_socket)
        await nursery.start(reconciler.run)
        task_status.started(reconciler)

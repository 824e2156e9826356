"""Pods of the sandbox: what each runs, and the "primary CNI" wiring the sandbox does itself.

Who calls it: `ambientctl.sandbox.core`. `wire_pod` creates the pod's netns and its veth to the
node (node side `vp<k>` carries the node's pod gateway `10.10.<i>.1/32` and a /32 route to the
pod; pod side `eth0` carries the pod IP /32, an on-link route to the gateway and the default
route), i.e. what a primary plugin such as Calico does. The chained `ambient-cni` plugin is then
called by `core` through `cni.invoke`. `app_spec` decides which sample app a Pod runs.

Invariants: the node side owns the gateway address, so a pod's ARP for its gateway is answered
by its own veth; pods on the same node reach each other through the node (never on-link).
"""

from __future__ import annotations

import dataclasses
import sys

from ambientctl.sandbox import kernel
from ambientctl.sandbox.apps import APP_ANNOTATION, APPS
from ambientctl.sandbox.errors import SandboxConfigError
from ambientctl.sandbox.topology import NodePlan, PodPlan
from meshcore.model.core import Pod


@dataclasses.dataclass(frozen=True)
class AppSpec:
    app: str  # http-echo | tcp-echo | client
    ports: tuple[int, ...]

    def argv(self, pod_key: str) -> list[str]:
        base = [sys.executable, "-m", "ambientctl.sandbox.apps"]
        if self.app == "client":
            return [*base, "sleep"]
        return [*base, self.app, *(f"--port={p}" for p in self.ports), f"--pod={pod_key}"]


def app_spec(pod: Pod) -> AppSpec:
    """The app a Pod runs: its `sandbox.ambient-py.io/app` annotation, else by its ports."""
    ports = tuple(sorted({p.container_port for c in pod.containers for p in c.ports
                          if p.protocol == "TCP"}))
    key = f"{pod.meta.namespace}/{pod.meta.name}"
    app = pod.meta.annotations.get(APP_ANNOTATION, "") or ("http-echo" if ports else "client")
    if app not in APPS:
        raise SandboxConfigError(f"Pod {key}: annotation {APP_ANNOTATION}={app!r} is not one "
                                 f"of {', '.join(APPS)}")
    if app != "client" and not ports:
        raise SandboxConfigError(f"Pod {key}: app {app} needs at least one TCP containerPort "
                                 "(spec.containers[].ports[].containerPort)")
    return AppSpec(app, ports if app != "client" else ())


def wire_pod(node: NodePlan, pod: PodPlan) -> None:
    """Create the pod netns and connect it to its node (the primary CNI's job)."""
    kernel.create_netns(pod.netns)
    kernel.add_veth(node.netns, pod.host_veth, pod.netns, pod.ifname)
    kernel.configure_link(node.netns, pod.host_veth, [(node.gateway, 32)])
    kernel.add_route(node.netns, f"{pod.ip}/32", ifname=pod.host_veth)
    kernel.configure_link(pod.netns, pod.ifname, [(pod.ip, 32)])
    kernel.add_route(pod.netns, f"{node.gateway}/32", ifname=pod.ifname)
    kernel.add_route(pod.netns, "default", gateway=node.gateway, ifname=pod.ifname)


def wire_node(underlay_netns: str, node: NodePlan, all_nodes: tuple[NodePlan, ...],
              bridge: str, underlay_prefix: int) -> None:
    """Create the node netns, attach it to the underlay bridge, route other nodes' pod CIDRs."""
    kernel.create_netns(node.netns)
    kernel.add_veth(node.netns, node.uplink, underlay_netns, node.underlay_port)
    kernel.enslave(underlay_netns, node.underlay_port, bridge)
    kernel.configure_link(node.netns, node.uplink, [(node.ip, underlay_prefix)])
    kernel.write_sysctl(node.netns, "net.ipv4.ip_forward", "1")
    for other in all_nodes:
        if other.index != node.index:
            kernel.add_route(node.netns, other.pod_cidr, gateway=other.ip)
    # the underlay (where istiod-lite runs) reaches this node's pods through the node
    kernel.add_route(underlay_netns, node.pod_cidr, gateway=node.ip)

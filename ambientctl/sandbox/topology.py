"""The sandbox's address and name plan (pure: no I/O, no kernel).

Who calls it: `ambientctl.sandbox.core.Sandbox` (to build the namespaces) and tests. It hands
out frozen `Topology` / `NodePlan` / `PodPlan` values; nothing here touches the kernel.

Layout (sandbox name `sb`, N nodes):

    underlay netns  amb-sb-underlay   bridge br0 172.30.0.1/24 (istiod-lite listens here)
    node i netns    amb-sb-node<i>    eth0 172.30.0.<10+i>/24 on br0; pod CIDR 10.10.<i>.0/24,
                                      gateway 10.10.<i>.1 on every pod-facing veth
    pod netns       amb-sb-pod-<ns>-<name>  eth0 10.10.<i>.<k>/32, default via 10.10.<i>.1

Invariants: interface names fit IFNAMSIZ (15 bytes); node names are `node1`..`nodeN`; a pod's
IP lies in its node's CIDR and is unique; `plan()` is deterministic for the same inputs (pods in
(namespace, name) order, so re-planning after `apply` keeps existing pods' addresses as long as
the assignment is passed back in `fixed`).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Iterable, Mapping

from ambientctl.sandbox.errors import SandboxConfigError

NETNS_PREFIX = "amb-"
UNDERLAY_CIDR = ipaddress.ip_network("172.30.0.0/24")
ISTIOD_IP = "172.30.0.1"
ISTIOD_PORT = 15012
POD_CIDR_BASE = "10.10"
MAX_NODES = 200
MAX_PODS_PER_NODE = 250
BRIDGE = "br0"
_NAME_RE = re.compile(r"^[a-z0-9]{1,12}$")


def netns_prefix(sandbox: str) -> str:
    return f"{NETNS_PREFIX}{sandbox}-"


def check_sandbox_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise SandboxConfigError(
            f"sandbox name {name!r} is not valid: use 1-12 lowercase letters or digits "
            "(no '-': one sandbox's namespace prefix must never match another's)")
    return name


@dataclasses.dataclass(frozen=True)
class NodePlan:
    index: int  # 1-based
    name: str  # node1
    netns: str  # amb-sb-node1
    ip: str  # 172.30.0.11
    pod_cidr: str  # 10.10.1.0/24
    gateway: str  # 10.10.1.1
    underlay_port: str  # the bridge port in the underlay netns: n1

    @property
    def uplink(self) -> str:
        return "eth0"


@dataclasses.dataclass(frozen=True)
class PodPlan:
    namespace: str
    name: str
    node: str
    netns: str
    ip: str
    host_veth: str  # in the node netns: vp<k>
    ifname: str = "eth0"

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclasses.dataclass(frozen=True)
class Topology:
    sandbox: str
    underlay_netns: str
    nodes: tuple[NodePlan, ...]
    pods: tuple[PodPlan, ...]

    def node(self, name: str) -> NodePlan:
        for n in self.nodes:
            if n.name == name:
                return n
        raise SandboxConfigError(f"no node {name!r} in sandbox {self.sandbox!r} "
                                 f"(nodes: {', '.join(n.name for n in self.nodes)})")

    def pod(self, ref: str) -> PodPlan:
        """A pod by `ns/name`, or by `name` alone when that is unambiguous."""
        if "/" in ref:
            hits = [p for p in self.pods if p.key == ref]
        else:
            hits = [p for p in self.pods if p.name == ref]
        if len(hits) == 1:
            return hits[0]
        if not hits:
            raise SandboxConfigError(f"no pod {ref!r} in sandbox {self.sandbox!r}; "
                                     "`ambientctl sandbox status` lists the pods")
        raise SandboxConfigError(f"pod name {ref!r} is ambiguous "
                                 f"({', '.join(p.key for p in hits)}); use NAMESPACE/NAME")


def node_plan(sandbox: str, index: int) -> NodePlan:
    if not 1 <= index <= MAX_NODES:
        raise SandboxConfigError(f"node index {index} out of range 1..{MAX_NODES}")
    name = f"node{index}"
    hosts = list(UNDERLAY_CIDR.hosts())
    return NodePlan(
        index=index, name=name, netns=f"{netns_prefix(sandbox)}{name}",
        ip=str(hosts[9 + index]), pod_cidr=f"{POD_CIDR_BASE}.{index}.0/24",
        gateway=f"{POD_CIDR_BASE}.{index}.1", underlay_port=f"n{index}")


def plan(
    sandbox: str,
    nodes: int,
    pods: Iterable[tuple[str, str, str]],
    fixed: Mapping[str, PodPlan] | None = None,
) -> Topology:
    """Plan `nodes` nodes and the given pods `(namespace, name, node_name or "")`.

    A pod without a node is placed round-robin (in (namespace, name) order) on the node with
    the fewest pods. `fixed` (key `ns/name`) keeps already-running pods where they are.
    """
    check_sandbox_name(sandbox)
    if not 1 <= nodes <= MAX_NODES:
        raise SandboxConfigError(f"--nodes must be between 1 and {MAX_NODES}, got {nodes}")
    node_plans = tuple(node_plan(sandbox, i) for i in range(1, nodes + 1))
    by_name = {n.name: n for n in node_plans}
    fixed = dict(fixed or {})
    used_ips = {p.ip for p in fixed.values()}
    count = {n.name: 0 for n in node_plans}
    for p in fixed.values():
        count[p.node] = count.get(p.node, 0) + 1
    next_veth = max((int(p.host_veth[2:]) for p in fixed.values()), default=0) + 1
    out: list[PodPlan] = []
    for ns, name, node in sorted(set(pods)):
        key = f"{ns}/{name}"
        if key in fixed:
            out.append(fixed[key])
            continue
        if node and node not in by_name:
            raise SandboxConfigError(
                f"Pod {key}: spec.nodeName {node!r} is not a sandbox node; nodes are "
                f"{', '.join(by_name)} (start with more --nodes, or remove nodeName)")
        chosen = by_name[node] if node else min(node_plans, key=lambda n: (count[n.name],
                                                                          n.index))
        ip = _free_ip(chosen, used_ips)
        if ip is None:
            raise SandboxConfigError(f"node {chosen.name} has no free pod address left "
                                     f"in {chosen.pod_cidr}")
        used_ips.add(ip)
        count[chosen.name] += 1
        out.append(PodPlan(namespace=ns, name=name, node=chosen.name,
                           netns=f"{netns_prefix(sandbox)}pod-{ns}-{name}", ip=ip,
                           host_veth=f"vp{next_veth}"))
        next_veth += 1
    for p in fixed.values():
        if p not in out:
            out.append(p)
    seen: dict[str, str] = {}
    for p in out:  # netns and component names join namespace and name with "-"
        if (other := seen.setdefault(p.netns, p.key)) != p.key:
            raise SandboxConfigError(f"pods {other} and {p.key} would share the names "
                                     f"{p.netns} / app-{p.namespace}-{p.name}; rename one")
    return Topology(sandbox=sandbox, underlay_netns=f"{netns_prefix(sandbox)}underlay",
                    nodes=node_plans, pods=tuple(sorted(out, key=lambda p: (p.namespace,
                                                                            p.name))))


def _free_ip(node: NodePlan, used: set[str]) -> str | None:
    net = ipaddress.ip_network(node.pod_cidr)
    for host in list(net.hosts())[1:MAX_PODS_PER_NODE + 1]:  # .1 is the gateway
        if str(host) not in used:
            return str(host)
    return None

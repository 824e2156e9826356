"""Names on `why`'s command line → mesh objects: the source `Party`, the dialed IP of a pod,
service, hostname or IP, and the deterministic endpoint `Chooser`.

Called by why.py (pure, over a `MeshState`). Folder states look pods up in the model (and say
which pods exist); live states (`state.model` None) look them up by name in what ztunnel holds.
Raises `NotFoundError` naming what exists when a name does not resolve.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Sequence

from ambientctl.debug.errors import NotFoundError
from ambientctl.debug.state import MeshState, is_pod, live_workload, pod_of, service_named
from istiod_lite.translate.mesh import pod_uid
from meshcore.wds import IPAddress, TunnelProtocol, Workload
from meshcore.wds.lookup import Endpoint


@dataclasses.dataclass(frozen=True, slots=True)
class Party:
    """The source as the mesh sees it."""

    label: str  # "shop/client" or the IP
    ip: IPAddress
    workload: Workload | None

    @property
    def captured(self) -> bool:
        return self.workload is not None and self.workload.tunnel_protocol is TunnelProtocol.HBONE


class Chooser:
    """Deterministic endpoint choice (first by namespace/name), or the `--endpoint` pod."""

    def __init__(self, prefer: str | None) -> None:
        self.prefer = prefer
        self.calls: list[tuple[Endpoint, list[Endpoint]]] = []

    def __call__(self, candidates: Sequence[Endpoint], weights: Sequence[int]) -> Endpoint:
        ordered = sorted(candidates,
                         key=lambda e: (e.workload.namespace, e.workload.name, str(e.ip)))
        pick = ordered[0]
        if self.prefer:
            wanted = [e for e in ordered if self.prefer in (
                e.workload.name, f"{e.workload.namespace}/{e.workload.name}")]
            pick = wanted[0] if wanted else pick
        self.calls.append((pick, ordered))
        return pick

    def describe(self, pick: Endpoint) -> str:
        for chosen, ordered in self.calls:
            if chosen == pick and len(ordered) > 1:
                how = "as --endpoint asked" if self.prefer in (
                    pick.workload.name, f"{pick.workload.namespace}/{pick.workload.name}") \
                    else "first by name; the data path picks at random, --endpoint picks another"
                names = ", ".join(f"{e.workload.namespace}/{e.workload.name}" for e in ordered)
                return f" ({how}; candidates: {names})"
        return ""


def parse_ip(text: str) -> IPAddress | None:
    try:
        ip = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None
    return ip.ipv4_mapped or ip if isinstance(ip, ipaddress.IPv6Address) else ip


def split_target(text: str) -> tuple[str, int]:
    """`DST:PORT` (`[v6]:PORT` for IPv6) → (DST, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) <= 65535 or not host:
        raise NotFoundError(f"destination {text!r}: expected DST:PORT, e.g. shop/web:8080, "
                            "10.96.0.10:80 or [fd00::1]:80")
    return host.strip("[]") if host.startswith("[") else host, int(port)


def first_ip(workload: Workload, family: int | None = None) -> IPAddress:
    for ip in workload.addresses:
        if family is None or ip.version == family:
            return ip
    return workload.addresses[0]


def resolve_source(state: MeshState, text: str) -> Party:
    ip = parse_ip(text)
    snap, net = state.snapshot, state.mesh.network
    if ip is not None:
        if (net, ip) in snap.services_by_vip:
            raise NotFoundError(f"source {text} is a service VIP; name a pod or a client IP")
        return Party(text, ip, snap.workloads_by_address.get((net, ip)))
    workload = pod_workload(state, text, "source")
    return Party(f"{workload.namespace}/{workload.name}", first_ip(workload), workload)


def pod_workload(state: MeshState, text: str, role: str) -> Workload:
    ns, _, name = text.removeprefix("pod/").partition("/")
    if not ns or not name:
        raise NotFoundError(f"{role} {text!r}: expected NAMESPACE/POD or an IP")
    if state.model is None:
        return live_workload(state, ns, name, role)
    pod = pod_of(state.model, ns, name)
    if pod is None:
        known = ", ".join(p.name for p in state.model.pods if p.namespace == ns) or "none"
        raise NotFoundError(f"{role}: no pod {ns}/{name} in the configuration "
                            f"(pods in {ns}: {known})")
    workload = state.snapshot.workloads.get(pod_uid(state.mesh, ns, name))
    if workload is None or not workload.addresses:
        raise NotFoundError(f"{role}: pod {ns}/{name} is not in ztunnel's state: it has no IP "
                            "yet (status.podIP) or has finished; is it running?")
    return workload


def resolve_destination(state: MeshState, text: str) -> tuple[IPAddress, str]:
    """(the IP a client would dial, what it names) for an IP, pod, service or hostname."""
    ip = parse_ip(text)
    snap = state.snapshot
    if ip is not None:
        vip = snap.services_by_vip.get((state.mesh.network, ip))
        pod = snap.workloads_by_address.get((state.mesh.network, ip))
        what = (f"VIP of service {vip[0].key}" if vip else
                f"IP of pod {pod.namespace}/{pod.name}" if pod else "not a mesh address")
        return ip, what
    service = None
    if text.startswith("svc/") or (text.count("/") == 1 and not text.startswith("pod/")
                                   and not is_pod(state, *text.split("/", 1))):
        ns, _, name = text.removeprefix("svc/").partition("/")
        service = service_named(state, ns, name)
        if service is None:
            raise NotFoundError(f"destination: no pod or service {ns}/{name} in the "
                                "configuration (use pod/NS/NAME or svc/NS/NAME to be explicit)")
    elif "/" not in text:
        service = next((s for s in snap.services.values() if s.hostname == text), None)
        if service is None:
            raise NotFoundError(f"destination: no service with hostname {text!r}")
    if service is not None:
        if not service.addresses:
            raise NotFoundError(f"destination: service {service.key} is headless (no VIP); "
                                "name one of its pods instead")
        return service.addresses[0].address, f"VIP of service {service.key}"
    workload = pod_workload(state, text, "destination")
    return first_ip(workload), f"IP of pod {workload.namespace}/{workload.name}"

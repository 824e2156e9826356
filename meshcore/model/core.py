"""Typed, immutable Kubernetes core objects: metadata, Namespace, Node, Pod, Service,
ServiceAccount; each with its parser (`parse_<kind>(doc, reader)`).

Called only through `meshcore.model.parse.parse_object`, the single gate from plain dicts
(manifest YAML or the Kubernetes API) to model objects. Consumers: istiod_lite (translation to
the workload API) and the CNI node agent (enrollment decisions). For these built-in kinds we
read only the fields the mesh needs and ignore the rest of the (very large) schema; every field
we do read is type-checked and reported with its path when wrong.
Invariants: objects are frozen; maps are read-only; absent lists are empty tuples.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any, ClassVar

from meshcore.model._fields import Reader, empty_map

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@dataclasses.dataclass(frozen=True, slots=True)
class OwnerReference:
    api_version: str
    kind: str
    name: str
    uid: str = ""
    controller: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class ObjectMeta:
    """The parts of `metadata` the mesh uses. `namespace` is "" for cluster-scoped kinds."""

    name: str
    namespace: str = ""
    uid: str = ""
    labels: Mapping[str, str] = empty_map()
    annotations: Mapping[str, str] = empty_map()
    generate_name: str = ""
    owner_references: tuple[OwnerReference, ...] = ()
    creation_timestamp: str = ""  # RFC 3339 text; compares correctly as a string
    deletion_timestamp: str = ""
    generation: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class ModelObject:
    """Base of every model object: a kind name and metadata."""

    kind: ClassVar[str] = ""
    api_version: ClassVar[str] = ""
    namespaced: ClassVar[bool] = True

    meta: ObjectMeta

    @property
    def name(self) -> str:
        return self.meta.name

    @property
    def namespace(self) -> str:
        return self.meta.namespace

    @property
    def key(self) -> tuple[str, str]:
        """(namespace, name); namespace is "" for cluster-scoped kinds."""
        return (self.meta.namespace, self.meta.name)

    @property
    def labels(self) -> Mapping[str, str]:
        return self.meta.labels

    @property
    def annotations(self) -> Mapping[str, str]:
        return self.meta.annotations


def parse_meta(doc: Mapping[str, Any], r: Reader, *, namespaced: bool) -> ObjectMeta:
    """Parse `metadata`; `r.namespace` already holds the (defaulted) namespace."""
    m = r.obj(doc, "metadata", "metadata")
    name = r.str_(m, "name", "metadata.name", required=True)
    r.str_(m, "namespace", "metadata.namespace")  # type check; the value is r.namespace
    if len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        raise r.fail("metadata.name", f"invalid name {name!r} (lowercase DNS subdomain expected)")
    if namespaced and not _DNS_LABEL.match(r.namespace):
        raise r.fail("metadata.namespace", f"invalid namespace {r.namespace!r}")
    owners = []
    for p, o in r.objs(m, "ownerReferences", "metadata.ownerReferences"):
        owners.append(OwnerReference(
            api_version=r.str_(o, "apiVersion", f"{p}.apiVersion"),
            kind=r.str_(o, "kind", f"{p}.kind", required=True),
            name=r.str_(o, "name", f"{p}.name", required=True),
            uid=r.str_(o, "uid", f"{p}.uid"),
            controller=r.bool_(o, "controller", f"{p}.controller"),
        ))
    return ObjectMeta(
        name=name,
        namespace=r.namespace if namespaced else "",
        uid=r.str_(m, "uid", "metadata.uid"),
        labels=r.labels(m, "labels", "metadata.labels"),
        annotations=r.labels(m, "annotations", "metadata.annotations"),
        generate_name=r.str_(m, "generateName", "metadata.generateName"),
        owner_references=tuple(owners),
        creation_timestamp=_timestamp(m, "creationTimestamp", r),
        deletion_timestamp=_timestamp(m, "deletionTimestamp", r),
        generation=r.int_(m, "generation", "metadata.generation", default=0) or 0,
    )


def _timestamp(m: Mapping[str, Any], key: str, r: Reader) -> str:
    v = m.get(key)
    if v is None:
        return ""
    if hasattr(v, "isoformat"):  # YAML parses unquoted timestamps into datetime
        text = str(v.isoformat())
        return text.replace("+00:00", "Z")
    if not isinstance(v, str):
        raise r.fail(f"metadata.{key}", "expected an RFC 3339 timestamp")
    return v


# -- Namespace, Node, ServiceAccount ----------------------------------------------------------

@dataclasses.dataclass(frozen=True, slots=True)
class Namespace(ModelObject):
    kind: ClassVar[str] = "Namespace"
    api_version: ClassVar[str] = "v1"
    namespaced: ClassVar[bool] = False


@dataclasses.dataclass(frozen=True, slots=True)
class Node(ModelObject):
    kind: ClassVar[str] = "Node"
    api_version: ClassVar[str] = "v1"
    namespaced: ClassVar[bool] = False

    addresses: tuple[tuple[str, str], ...] = ()  # (type, address), e.g. ("InternalIP", "10.0.0.1")


@dataclasses.dataclass(frozen=True, slots=True)
class ServiceAccount(ModelObject):
    kind: ClassVar[str] = "ServiceAccount"
    api_version: ClassVar[str] = "v1"


def parse_namespace(doc: Mapping[str, Any], r: Reader) -> Namespace:
    return Namespace(meta=parse_meta(doc, r, namespaced=False))


def parse_node(doc: Mapping[str, Any], r: Reader) -> Node:
    status = r.obj(doc, "status", "status")
    addrs = []
    for p, a in r.objs(status, "addresses", "status.addresses"):
        addrs.append((r.str_(a, "type", f"{p}.type"), r.str_(a, "address", f"{p}.address")))
    return Node(meta=parse_meta(doc, r, namespaced=False), addresses=tuple(addrs))


def parse_service_account(doc: Mapping[str, Any], r: Reader) -> ServiceAccount:
    return ServiceAccount(meta=parse_meta(doc, r, namespaced=True))


# -- Pod --------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, slots=True)
class ContainerPort:
    container_port: int
    name: str = ""
    protocol: str = "TCP"


@dataclasses.dataclass(frozen=True, slots=True)
class Container:
    name: str
    ports: tuple[ContainerPort, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class Pod(ModelObject):
    """A pod. `pod_ips` is empty until the pod has an address (pending pods are valid)."""

    kind: ClassVar[str] = "Pod"
    api_version: ClassVar[str] = "v1"

    node_name: str = ""
    service_account: str = "default"
    host_network: bool = False
    containers: tuple[Container, ...] = ()
    pod_ips: tuple[str, ...] = ()
    phase: str = ""
    ready: bool = False

    def find_port(self, name: str) -> int | None:
        """The containerPort named `name` (for named Service targetPorts), else None."""
        for c in self.containers:
            for p in c.ports:
                if p.name == name:
                    return p.container_port
        return None

    @property
    def terminal(self) -> bool:
        return self.phase in ("Succeeded", "Failed")


def parse_pod(doc: Mapping[str, Any], r: Reader) -> Pod:
    meta = parse_meta(doc, r, namespaced=True)
    spec = r.obj(doc, "spec", "spec")
    status = r.obj(doc, "status", "status")
    containers = []
    for p, c in r.objs(spec, "containers", "spec.containers"):
        ports = []
        for pp, port in r.objs(c, "ports", f"{p}.ports"):
            cp = r.int_(port, "containerPort", f"{pp}.containerPort", lo=1, hi=65535)
            if cp is None:
                raise r.fail(f"{pp}.containerPort", "required field is missing")
            ports.append(ContainerPort(
                container_port=cp,
                name=r.str_(port, "name", f"{pp}.name"),
                protocol=r.enum(port, "protocol", f"{pp}.protocol", ("TCP", "UDP", "SCTP"), "TCP"),
            ))
        containers.append(Container(name=r.str_(c, "name", f"{p}.name"), ports=tuple(ports)))
    ips: list[str] = []
    for p, entry in r.objs(status, "podIPs", "status.podIPs"):
        ips.append(r.ip(entry.get("ip"), f"{p}.ip"))
    primary = r.str_(status, "podIP", "status.podIP")
    if primary:
        primary = r.ip(primary, "status.podIP")
        if primary not in ips:
            ips.insert(0, primary)
    ready = False
    for p, cond in r.objs(status, "conditions", "status.conditions"):
        if r.str_(cond, "type", f"{p}.type") == "Ready":
            ready = r.str_(cond, "status", f"{p}.status") == "True"
    sa = r.str_(spec, "serviceAccountName", "spec.serviceAccountName") or r.str_(
        spec, "serviceAccount", "spec.serviceAccount") or "default"
    return Pod(
        meta=meta,
        node_name=r.str_(spec, "nodeName", "spec.nodeName"),
        service_account=sa,
        host_network=r.bool_(spec, "hostNetwork", "spec.hostNetwork"),
        containers=tuple(containers),
        pod_ips=tuple(ips),
        phase=r.str_(status, "phase", "status.phase"),
        ready=ready,
    )


# -- Service ----------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, slots=True)
class ServicePort:
    port: int
    target_port: int | str  # a number, or the name of a container port
    name: str = ""
    protocol: str = "TCP"
    app_protocol: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Service(ModelObject):
    """A Service. `selector is None` means selector-less (endpoints come from EndpointSlices)."""

    kind: ClassVar[str] = "Service"
    api_version: ClassVar[str] = "v1"

    type: str = "ClusterIP"
    selector: Mapping[str, str] | None = None
    cluster_ips: tuple[str, ...] = ()
    headless: bool = False
    ports: tuple[ServicePort, ...] = ()
    ip_families: tuple[str, ...] = ()
    external_name: str = ""
    internal_traffic_policy: str = ""
    traffic_distribution: str = ""
    publish_not_ready_addresses: bool = False


_SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")


def parse_service(doc: Mapping[str, Any], r: Reader) -> Service:
    meta = parse_meta(doc, r, namespaced=True)
    spec = r.obj(doc, "spec", "spec")
    ports: list[ServicePort] = []
    seen: dict[tuple[int, str], str] = {}
    names: dict[str, str] = {}
    for p, sp in r.objs(spec, "ports", "spec.ports"):
        port = r.int_(sp, "port", f"{p}.port", lo=1, hi=65535)
        if port is None:
            raise r.fail(f"{p}.port", "required field is missing")
        proto = r.enum(sp, "protocol", f"{p}.protocol", ("TCP", "UDP", "SCTP"), "TCP")
        if (port, proto) in seen:
            first = seen[port, proto]
            raise r.fail(f"{p}.port", f"duplicate port {port}/{proto} (also at {first})")
        seen[port, proto] = p
        name = r.str_(sp, "name", f"{p}.name")
        if name and name in names:
            raise r.fail(f"{p}.name", f'duplicate port name "{name}" (also at {names[name]})')
        names.setdefault(name, p)
        tp_raw = sp.get("targetPort", port)
        target: int | str
        if isinstance(tp_raw, str) and not tp_raw.isdigit():
            if not tp_raw:
                raise r.fail(f"{p}.targetPort", "must not be empty")
            target = tp_raw
        else:
            target = r.port(tp_raw, f"{p}.targetPort")
        app = sp.get("appProtocol")
        if app is not None and not isinstance(app, str):
            raise r.fail(f"{p}.appProtocol", "expected a string")
        ports.append(ServicePort(port=port, target_port=target, name=name, protocol=proto,
                                 app_protocol=app))
    if len(ports) > 1 and "" in names:
        raise r.fail(f"{names['']}.name", "required when a Service has more than one port")
    selector = r.labels(spec, "selector", "spec.selector") if spec.get("selector") is not None \
        else None
    cips = list(r.strs(spec, "clusterIPs", "spec.clusterIPs"))
    cip = r.str_(spec, "clusterIP", "spec.clusterIP")
    if cip and not cips:
        cips = [cip]
    headless = "None" in cips
    vips = []
    for i, ip in enumerate(cips):
        if ip not in ("", "None"):
            vips.append(r.ip(ip, f"spec.clusterIPs[{i}]" if spec.get("clusterIPs") else
                             "spec.clusterIP"))
    families = r.strs(spec, "ipFamilies", "spec.ipFamilies")
    for i, f in enumerate(families):
        if f not in ("IPv4", "IPv6"):
            raise r.fail(f"spec.ipFamilies[{i}]", f'unknown value "{f}" (expected IPv4, IPv6)')
    return Service(
        meta=meta,
        type=r.enum(spec, "type", "spec.type", _SERVICE_TYPES, "ClusterIP"),
        selector=selector,
        cluster_ips=tuple(vips),
        headless=headless,
        ports=tuple(ports),
        ip_families=families,
        external_name=r.str_(spec, "externalName", "spec.externalName"),
        internal_traffic_policy=r.str_(spec, "internalTrafficPolicy", "spec.internalTrafficPolicy"),
        traffic_distribution=r.str_(spec, "trafficDistribution", "spec.trafficDistribution"),
        publish_not_ready_addresses=r.bool_(spec, "publishNotReadyAddresses",
                                            "spec.publishNotReadyAddresses"),
    )

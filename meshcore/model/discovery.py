"""Typed EndpointSlice (discovery.k8s.io/v1) and its parser.

Called through `meshcore.model.parse.parse_object`. istiod_lite uses slices for Services without
a selector: endpoints pointing at pods add the Service to those pods' workloads; other
endpoints become opaque workloads. Addresses are validated (except for FQDN slices).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

from meshcore.model._fields import Reader
from meshcore.model.core import ModelObject, parse_meta

SERVICE_NAME_LABEL = "kubernetes.io/service-name"


@dataclasses.dataclass(frozen=True, slots=True)
class ObjectRef:
    kind: str
    name: str
    namespace: str = ""
    uid: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Endpoint:
    addresses: tuple[str, ...]
    ready: bool | None = None  # None = unknown, treated as ready
    target_ref: ObjectRef | None = None
    node_name: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class EndpointPort:
    port: int | None
    name: str = ""
    protocol: str = "TCP"
    app_protocol: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class EndpointSlice(ModelObject):
    kind: ClassVar[str] = "EndpointSlice"
    api_version: ClassVar[str] = "discovery.k8s.io/v1"

    address_type: str = "IPv4"
    endpoints: tuple[Endpoint, ...] = ()
    ports: tuple[EndpointPort, ...] = ()

    @property
    def service_name(self) -> str:
        return self.meta.labels.get(SERVICE_NAME_LABEL, "")


def parse_endpoint_slice(doc: Mapping[str, Any], r: Reader) -> EndpointSlice:
    meta = parse_meta(doc, r, namespaced=True)
    atype = r.enum(doc, "addressType", "addressType", ("IPv4", "IPv6", "FQDN"), "IPv4")
    eps = []
    for p, ep in r.objs(doc, "endpoints", "endpoints"):
        addrs = r.strs(ep, "addresses", f"{p}.addresses")
        if atype != "FQDN":
            addrs = tuple(r.ip(a, f"{p}.addresses[{i}]") for i, a in enumerate(addrs))
        cond = r.obj(ep, "conditions", f"{p}.conditions")
        ready = cond.get("ready")
        if ready is not None and not isinstance(ready, bool):
            raise r.fail(f"{p}.conditions.ready", "expected true or false")
        tr = ep.get("targetRef")
        ref = None
        if tr is not None:
            t = r.obj(ep, "targetRef", f"{p}.targetRef")
            ref = ObjectRef(kind=r.str_(t, "kind", f"{p}.targetRef.kind"),
                            name=r.str_(t, "name", f"{p}.targetRef.name"),
                            namespace=r.str_(t, "namespace", f"{p}.targetRef.namespace",
                                             default=meta.namespace),
                            uid=r.str_(t, "uid", f"{p}.targetRef.uid"))
        eps.append(Endpoint(addresses=addrs, ready=ready, target_ref=ref,
                            node_name=r.str_(ep, "nodeName", f"{p}.nodeName")))
    ports = []
    for p, port in r.objs(doc, "ports", "ports"):
        ports.append(EndpointPort(
            port=r.int_(port, "port", f"{p}.port", lo=1, hi=65535),
            name=r.str_(port, "name", f"{p}.name"),
            protocol=r.enum(port, "protocol", f"{p}.protocol", ("TCP", "UDP", "SCTP"), "TCP"),
            app_protocol=port.get("appProtocol") if isinstance(port.get("appProtocol"), str)
            else None,
        ))
    return EndpointSlice(meta=meta, address_type=atype, endpoints=tuple(eps), ports=tuple(ports))

"""Factories for workload-API protos used by the wds, xds client and xds server tests."""

from __future__ import annotations

import ipaddress

from meshcore.protos.istio import security as sec
from meshcore.protos.istio import workload as wl


def ip(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


def pod_uid(namespace: str, name: str) -> str:
    return f"Kubernetes//Pod/{namespace}/{name}"


def workload(
    name: str,
    namespace: str = "shop",
    *,
    address: str = "10.0.0.1",
    services: dict[str, list[tuple[int, int]]] | None = None,
    policies: tuple[str, ...] = (),
    **fields: object,
) -> wl.Workload:
    """A pod workload; `services` maps "ns/hostname" to (service_port, target_port) pairs."""
    return wl.Workload(
        uid=pod_uid(namespace, name),
        name=name,
        namespace=namespace,
        addresses=[ip(address)] if address else [],
        tunnel_protocol=wl.TunnelProtocol.HBONE,
        service_account=name,
        node="node-a",
        services={
            key: wl.PortList(ports=[wl.Port(service_port=s, target_port=t) for s, t in ports])
            for key, ports in (services or {}).items()
        },
        authorization_policies=list(policies),
        **fields,  # type: ignore[arg-type]
    )


def service(
    name: str,
    namespace: str = "shop",
    *,
    vip: str | None = "10.96.0.10",
    ports: list[tuple[int, int]] = [(80, 8080)],  # noqa: B006 - never mutated
    **fields: object,
) -> wl.Service:
    return wl.Service(
        name=name,
        namespace=namespace,
        hostname=f"{name}.{namespace}.svc.cluster.local",
        addresses=[wl.NetworkAddress(address=ip(vip))] if vip else [],
        ports=[wl.Port(service_port=s, target_port=t) for s, t in ports],
        **fields,  # type: ignore[arg-type]
    )


def service_key(name: str, namespace: str = "shop") -> str:
    return f"{namespace}/{name}.{namespace}.svc.cluster.local"


def address_of(item: wl.Workload | wl.Service) -> tuple[str, wl.Address]:
    """(resource name, Address) as the server publishes it."""
    if isinstance(item, wl.Workload):
        return item.uid, wl.Address(workload=item)
    return f"{item.namespace}/{item.hostname}", wl.Address(service=item)


def addresses(*items: wl.Workload | wl.Service) -> dict[str, wl.Address]:
    return dict(address_of(i) for i in items)


def policy(
    name: str,
    namespace: str = "shop",
    *,
    scope: sec.Scope = sec.Scope.NAMESPACE,
    action: sec.Action = sec.Action.DENY,
    principals: tuple[str, ...] = ("cluster.local/ns/shop/sa/bad",),
) -> sec.Authorization:
    match = sec.Match(principals=[sec.StringMatch(exact=p) for p in principals])
    return sec.Authorization(
        name=name,
        namespace=namespace,
        scope=scope,
        action=action,
        groups=[sec.Group(rules=[sec.Rules(matches=[match])])],
    )

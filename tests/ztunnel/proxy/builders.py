"""Snapshots built by hand for the data-path tests, through the real store (protos → frozen types).

Reuses the workload-API proto factories of `tests/meshcore/wds/factories.py`; adds waypoints and a
`snapshot(...)` that applies Address and Authorization resources with `meshcore.wds.Store`, and a
`ConfigFeed` that plays the config client's role (current snapshot + wait_for) for trio tests.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from meshcore.protos.istio import security as sec
from meshcore.protos.istio import workload as wl
from meshcore.wds import Snapshot, Store
from meshcore.wds.store import to_update
from meshcore.xds.types import TYPE_ADDRESS, TYPE_AUTHORIZATION
from tests.meshcore.wds import factories
from tests.meshcore.wds.factories import address_of, ip, policy, service, service_key

__all__ = ["ConfigFeed", "address_of", "ip", "policy", "service", "service_key", "snapshot",
           "waypoint_by_host", "waypoint_by_ip", "workload"]


def workload(name: str, namespace: str = "shop", *, address: str = "10.0.0.1",
             services: dict[str, list[tuple[int, int]]] | None = None,
             policies: tuple[str, ...] = (), **fields: object) -> wl.Workload:
    """`factories.workload` (HBONE, service account = name), then `fields` override anything."""
    w = factories.workload(name, namespace, address=address, services=services,
                           policies=policies)
    for key, value in fields.items():
        setattr(w, key, value)
    return w


def waypoint_by_host(name: str, namespace: str = "shop") -> wl.GatewayAddress:
    return wl.GatewayAddress(
        hostname=wl.NamespacedHostname(namespace, f"{name}.{namespace}.svc.cluster.local"),
        hbone_mtls_port=15008,
    )


def waypoint_by_ip(address: str, network: str = "") -> wl.GatewayAddress:
    return wl.GatewayAddress(address=wl.NetworkAddress(network, ip(address)),
                             hbone_mtls_port=15008)


def snapshot(*items: wl.Workload | wl.Service,
             policies: tuple[sec.Authorization, ...] = ()) -> Snapshot:
    """A snapshot holding `items` and `policies`, as the xDS client would build it."""
    store = Store()
    store.apply(TYPE_ADDRESS, [to_update(*address_of(i)) for i in items])
    store.apply(TYPE_AUTHORIZATION,
                [to_update(f"{p.namespace}/{p.name}", p) for p in policies])
    return store.snapshot


class ConfigFeed:
    """The config client's trio-facing shape over snapshots the test sets (`publish`)."""

    def __init__(self, snap: Snapshot) -> None:
        self._current = snap
        self._changed = trio.Event()

    def current(self) -> Snapshot:
        return self._current

    def publish(self, snap: Snapshot) -> None:
        self._current = snap
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, predicate: Callable[[Snapshot], bool]) -> Snapshot:
        while not predicate(self._current):
            await self._changed.wait()
        return self._current

"""The waypoint's config state: workload API + routes + L7 policies, one writer, snapshots.

Who calls it: `waypoint.config_client` applies every Delta xDS response with
`WaypointStore.apply(type_url, upserts, removed)` on the asyncio bridge thread; tests build
states directly (`WaypointStore` or `WaypointState(...)`). What it hands to: immutable
`WaypointState`s read by the proxy per tunnel and per request.

Types: Address and Authorization go to `meshcore.wds.Store` (its gate raises
`ConversionError`); RouteConfiguration through `RouteTable.from_proto` and L7Authorization
through `L7Policy.from_proto` (raising `RouteConfigError` / `PolicyConfigError`). All are
`ResourceRejected`: the xDS client NACKs and the previous state stays current.
Invariants: an apply is all-or-nothing per response; a state never changes once published.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, TypeVar

from meshcore.protos.ambient.waypoint import v1 as pb
from meshcore.wds import ResourceUpdate, Snapshot, Store
from meshcore.xds.types import TYPE_ADDRESS, TYPE_AUTHORIZATION
from waypoint.errors import WaypointError
from waypoint.policy import L7Policy, PolicyConfigError
from waypoint.routing import RouteConfigError, RouteTable

TYPE_ROUTE_CONFIGURATION = "type.googleapis.com/ambient.waypoint.v1.RouteConfiguration"
TYPE_L7_AUTHORIZATION = "type.googleapis.com/ambient.waypoint.v1.L7Authorization"
WAYPOINT_TYPES = (TYPE_ADDRESS, TYPE_AUTHORIZATION, TYPE_ROUTE_CONFIGURATION,
                  TYPE_L7_AUTHORIZATION)
M = TypeVar("M", pb.RouteConfiguration, pb.L7Authorization)
V = TypeVar("V")
_EMPTY: Mapping[str, Any] = MappingProxyType({})


class UnknownTypeError(RouteConfigError, WaypointError):
    """A response of a type the waypoint did not subscribe to (the server's fault)."""

    def __init__(self, type_url: str) -> None:
        super().__init__(type_url, "type_url", f"the waypoint does not handle {type_url!r}")


@dataclasses.dataclass(frozen=True, slots=True)
class WaypointState:
    """One consistent view: `wds` (services, workloads, L4 policies), `routes` by the
    Service's `ns/hostname`, `policies` by `ns/name`."""

    wds: Snapshot = dataclasses.field(default_factory=Snapshot)
    routes: Mapping[str, RouteTable] = dataclasses.field(default_factory=lambda: _EMPTY)
    policies: Mapping[str, L7Policy] = dataclasses.field(default_factory=lambda: _EMPTY)
    synced_types: frozenset[str] = frozenset()
    generation: int = 0


class WaypointStore:
    """The single updater of a waypoint's config state."""

    def __init__(self, state: WaypointState | None = None) -> None:
        self._wds = Store()
        self._state = state or WaypointState()

    @property
    def state(self) -> WaypointState:
        return self._state

    def apply(self, type_url: str, upserts: Iterable[ResourceUpdate],
              removed: Iterable[str] = ()) -> WaypointState:
        """Apply one response atomically; raise a `ResourceRejected` and change nothing."""
        upserts, removed = tuple(upserts), tuple(removed)
        s = self._state
        if type_url in (TYPE_ADDRESS, TYPE_AUTHORIZATION):
            nxt = dataclasses.replace(s, wds=self._wds.apply(type_url, upserts, removed))
        elif type_url == TYPE_ROUTE_CONFIGURATION:
            tables = {u.name: RouteTable.from_proto(_parse(pb.RouteConfiguration, u))
                      for u in upserts}
            nxt = dataclasses.replace(s, routes=_merged(s.routes, tables, removed))
        elif type_url == TYPE_L7_AUTHORIZATION:
            pols = {u.name: L7Policy.from_proto(_parse(pb.L7Authorization, u)) for u in upserts}
            nxt = dataclasses.replace(s, policies=_merged(s.policies, pols, removed))
        else:
            raise UnknownTypeError(type_url)
        self._state = dataclasses.replace(nxt, synced_types=s.synced_types | {type_url},
                                          generation=s.generation + 1)
        return self._state


def _parse(cls: type[M], u: ResourceUpdate) -> M:
    try:
        return cls().parse(u.value)
    except Exception as exc:  # betterproto raises various errors on garbage
        if cls is pb.RouteConfiguration:
            raise RouteConfigError(u.name, "", f"cannot decode: {exc}") from exc
        raise PolicyConfigError(u.name, "", f"cannot decode: {exc}") from exc


def _merged(old: Mapping[str, V], new: Mapping[str, V],
               removed: Iterable[str]) -> Mapping[str, V]:
    out = dict(old)
    for name in removed:
        out.pop(name, None)
    out.update(new)
    return MappingProxyType(out)

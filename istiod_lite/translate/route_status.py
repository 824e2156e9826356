"""Gateway API status of every HTTPRoute, per parentRef, as Istio writes it (pure).

`route_statuses(model, mesh)` gives, for each HTTPRoute, the parentRefs that are ours (a Service,
or a Gateway of class `istio-waypoint`) with the conditions Istio sets on ambient routes:
`Accepted` (parent found and supported), `ResolvedRefs` (every backendRef and mirror resolves,
judged by the same rule conversion the data plane uses, `routes.convert_rule`) and
`ResolvedWaypoints` (True; its message says when no `istio.io/use-waypoint` binds the parent).
Parents that are not ours (another class, a missing Gateway) get no entry, as in Istio.

Who calls it: istiod-lite's app (handed to the Kubernetes source, which writes `status.parents`
through `istiod_lite.config.kube.route_status`), tests. AMBIENT-INTERNALS §6.4 and
docs/kubernetes-source.md ("HTTPRoute status") give the reasons and their sources.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from istiod_lite.translate.mesh import MeshConfig, StatusMessage
from istiod_lite.translate.routes import GATEWAY_GROUP, Notes, convert_rule
from istiod_lite.translate.waypoints import USE_WAYPOINT_LABEL, Waypoint, find_waypoints
from meshcore.model import ClusterModel, HTTPRoute, Service

ROUTE_VALID = "Route was valid"
REFS_RESOLVED = "All references resolved"
WAYPOINTS_RESOLVED = "All waypoints resolved"
MISSING_WAYPOINT_LABEL = ("istio.io/use-waypoint label missing from parent and parent namespace; "
                          "in ambient mode, route will not be respected")
_REF_REASONS = ("BackendNotFound", "InvalidKind", "RefNotPermitted")


@dataclasses.dataclass(frozen=True, slots=True)
class RouteCondition:
    type: str  # Accepted | ResolvedRefs | ResolvedWaypoints
    status: bool
    reason: str
    message: str


@dataclasses.dataclass(frozen=True, slots=True)
class RouteParentStatus:
    parent_ref: Mapping[str, Any]  # the spec's parentRef, as written
    conditions: tuple[RouteCondition, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class RouteStatus:
    namespace: str
    name: str
    generation: int
    parents: tuple[RouteParentStatus, ...]  # ours only, in spec order


def _waypoint_labelled(labels: Mapping[str, str]) -> bool:
    value = labels.get(USE_WAYPOINT_LABEL, "")
    return bool(value) and value.lower() != "none"


def _parent_verdict(route: HTTPRoute, index: int, model: ClusterModel,
                    waypoints: Mapping[tuple[str, str], Waypoint],
                    ) -> tuple[RouteCondition, RouteCondition] | None:
    """(Accepted, ResolvedWaypoints) for one parentRef; None when the parent is not ours (a
    Gateway of another class, one that does not exist, another kind)."""
    ref = route.parent_refs[index]
    ns = ref.namespace or route.namespace
    waypoint_ok = RouteCondition("ResolvedWaypoints", True, "ResolvedWaypoints",
                                 WAYPOINTS_RESOLVED)
    if ref.kind == "Gateway" and ref.group == GATEWAY_GROUP:
        if (ns, ref.name) not in waypoints:
            return None
        return RouteCondition("Accepted", True, "Accepted", ROUTE_VALID), waypoint_ok
    if ref.kind != "Service" or ref.group not in ("", "core"):
        return None
    svc = model.get("Service", ns, ref.name)
    if not isinstance(svc, Service):
        # Istio keeps ResolvedWaypoints True and only changes its message.
        return (RouteCondition("Accepted", False, "NoMatchingParent",
                               f'parent service: "{ref.name}" not found'),
                dataclasses.replace(waypoint_ok, message="parent not found"))
    if not (_waypoint_labelled(svc.meta.labels) or
            _waypoint_labelled(model.namespace_labels(ns))):
        waypoint_ok = dataclasses.replace(waypoint_ok, message=MISSING_WAYPOINT_LABEL)
    if ns != route.namespace:
        return (RouteCondition("Accepted", False, "UnsupportedValue",
                               f"consumer route for Service {ns}/{ref.name} (another namespace) "
                               "is not supported by ambient-py"), waypoint_ok)
    return RouteCondition("Accepted", True, "Accepted", ROUTE_VALID), waypoint_ok


def _refs_condition(route: HTTPRoute, model: ClusterModel, mesh: MeshConfig) -> RouteCondition:
    """ResolvedRefs from the backend problems the rules' conversion notes (mirrors included)."""
    notes: list[StatusMessage] = []
    note = Notes(route, notes)
    for i, rule in enumerate(route.rules):
        convert_rule(rule, i, route, model, mesh, note, None)
    problems = [n for n in notes if n.reason in _REF_REASONS]
    if not problems:
        return RouteCondition("ResolvedRefs", True, "ResolvedRefs", REFS_RESOLVED)
    messages = dict.fromkeys(f"{n.field}: {n.message}" for n in problems)
    return RouteCondition("ResolvedRefs", False, problems[0].reason, "; ".join(messages))


def route_statuses(model: ClusterModel, mesh: MeshConfig | None = None,
                   ) -> dict[tuple[str, str], RouteStatus]:
    """The status of every HTTPRoute, keyed by (namespace, name); `parents` lists the parentRefs
    that are ours, each with Accepted, ResolvedRefs and ResolvedWaypoints (Istio's set)."""
    mesh = mesh or MeshConfig()
    waypoints = find_waypoints(model, mesh)
    out: dict[tuple[str, str], RouteStatus] = {}
    for route in model.sorted("HTTPRoute"):
        assert isinstance(route, HTTPRoute)
        raw_refs = route.raw_spec.get("parentRefs") or ()
        parents = []
        refs: RouteCondition | None = None
        for i in range(len(route.parent_refs)):
            verdict = _parent_verdict(route, i, model, waypoints)
            if verdict is None:
                continue
            refs = refs or _refs_condition(route, model, mesh)
            parents.append(RouteParentStatus(raw_refs[i], (verdict[0], refs, verdict[1])))
        out[(route.namespace, route.name)] = RouteStatus(
            route.namespace, route.name, route.meta.generation, tuple(parents))
    return out

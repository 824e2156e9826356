"""HTTPRoute `status.parents` as istiod-lite writes it (pure), and the feed that carries route
statuses from the translation to the source that writes them.

Called by istiod_lite.config.route_writer (`status_patch`, on the kopf thread, for every
HTTPRoute event and every hand-over of new statuses; it sends the patch through the shared
KubeClient as a merge patch of the `status` subresource) and by istiod_lite.app
(`RouteStatusFeed`, after each snapshot, with `istiod_lite.translate.routes.route_statuses` as
`compute`, handing to `KubernetesSource.report_route_statuses`).

Rules (Gateway API route status as Istio's gateway controller writes it; see
docs/kubernetes-source.md):
* one `status.parents` entry per parentRef that is ours, with `controllerName`
  `CONTROLLER_NAME`, `parentRef` as written in the spec and the conditions `Accepted`,
  `ResolvedRefs`, `ResolvedWaypoints` (each with `observedGeneration` when the object has a
  generation); `lastTransitionTime` changes only when a condition's status flips;
* entries of other controllers stay untouched and in place; our entries whose parentRef left
  the spec (or stopped being ours) are dropped; new ones are appended in spec order;
  condition types we do not write are kept in our entries;
* a merge patch replaces the whole `parents` list, so the patch carries the object's
  `metadata.resourceVersion`: the API server refuses it (409) when someone wrote in between,
  and the MODIFIED event of that write makes the source recompute from the fresh object.
Invariant: `status_patch` returns None when the object already says what we would write, so
the MODIFIED event of our own patch, or a repeated reconcile, writes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from istiod_lite.config.source import RouteStatusSink

if TYPE_CHECKING:  # the types only: the translation is handed in (`compute`), not imported
    from istiod_lite.translate.mesh import MeshConfig
    from istiod_lite.translate.route_status import RouteCondition, RouteStatus
    from meshcore.model import ClusterModel

log = logging.getLogger("istiod_lite.config")
CONTROLLER_NAME = "istio.io/gateway-controller"
GATEWAY_GROUP = "gateway.networking.k8s.io"
_MAX_MESSAGE = 32768  # metav1.Condition.message maxLength
RouteKey = tuple[str, str]  # (namespace, name)
ParentKey = tuple[str, str, str, str, str, int]  # group, kind, namespace, name, section, port


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def plain(value: Any) -> Any:
    """`value` as plain JSON data (dicts and lists), e.g. a frozen spec fragment."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def parent_key(ref: Mapping[str, Any], route_namespace: str) -> ParentKey:
    """A parentRef with the API defaults filled in (group, kind, namespace), for matching a
    status entry to a spec entry."""
    port = ref.get("port")
    return (str(ref.get("group", GATEWAY_GROUP) or ""), str(ref.get("kind") or "Gateway"),
            str(ref.get("namespace") or route_namespace), str(ref.get("name") or ""),
            str(ref.get("sectionName") or ""), port if isinstance(port, int) else 0)


def _condition(desired: RouteCondition, current: Mapping[str, Any] | None, generation: int,
               now: str) -> dict[str, Any]:
    status = "True" if desired.status else "False"
    out: dict[str, Any] = {"type": desired.type, "status": status, "reason": desired.reason,
                           "message": desired.message[:_MAX_MESSAGE]}
    if generation > 0:
        out["observedGeneration"] = generation
    kept = current is not None and current.get("status") == status
    out["lastTransitionTime"] = (current or {}).get("lastTransitionTime") if kept else None
    out["lastTransitionTime"] = out["lastTransitionTime"] or now
    return out


def _conditions(desired: tuple[RouteCondition, ...], current: Any, generation: int,
                now: str) -> list[dict[str, Any]]:
    """Our conditions merged into the entry's current list (order kept; new types appended)."""
    existing = [dict(plain(c)) for c in current if isinstance(c, Mapping)] \
        if isinstance(current, list) else []
    by_type = {c.type: c for c in desired}
    out = []
    for cond in existing:
        want = by_type.pop(cond.get("type", ""), None)
        out.append(cond if want is None else _condition(want, cond, generation, now))
    out.extend(_condition(c, None, generation, now) for c in by_type.values())
    return out


def desired_parents(body: Mapping[str, Any], desired: RouteStatus, *, now: str
                    ) -> list[dict[str, Any]]:
    """The whole `status.parents` list we want on the object `body`."""
    ns = desired.namespace
    raw = _mapping(body.get("status")).get("parents")
    live = [plain(p) for p in raw if isinstance(p, Mapping)] if isinstance(raw, list) else []
    ours_live: dict[ParentKey, dict[str, Any]] = {}
    for p in live:
        if p.get("controllerName") == CONTROLLER_NAME:
            ours_live.setdefault(parent_key(_mapping(p.get("parentRef")), ns), p)
    ours: dict[ParentKey, dict[str, Any]] = {}
    for parent in desired.parents:
        key = parent_key(parent.parent_ref, ns)
        if key in ours:
            continue  # the same parentRef twice in the spec: one entry
        current = ours_live.get(key, {})
        ours[key] = {"parentRef": plain(parent.parent_ref), "controllerName": CONTROLLER_NAME,
                     "conditions": _conditions(parent.conditions, current.get("conditions"),
                                               desired.generation, now)}
    out: list[dict[str, Any]] = []
    placed: set[ParentKey] = set()
    for p in live:
        if p.get("controllerName") != CONTROLLER_NAME:
            out.append(p)
            continue
        key = parent_key(_mapping(p.get("parentRef")), ns)
        if key in ours and key not in placed:
            out.append(ours[key])
            placed.add(key)
    out.extend(entry for key, entry in ours.items() if key not in placed)
    return out


def status_patch(body: Mapping[str, Any], desired: RouteStatus, *, now: str
                 ) -> dict[str, Any] | None:
    """The merge patch for the route's `status` subresource, or None if nothing changes.

    `body` is the route as last seen from the API; `now` an RFC 3339 timestamp.
    """
    parents = desired_parents(body, desired, now=now)
    raw = _mapping(body.get("status")).get("parents")
    live = plain(raw) if isinstance(raw, list) else []
    if parents == live:
        return None
    patch: dict[str, Any] = {"status": {"parents": parents}}
    version = _mapping(body.get("metadata")).get("resourceVersion")
    if isinstance(version, str) and version:
        patch["metadata"] = {"resourceVersion": version}
    return patch


class RouteStatusFeed:
    """Hands `compute(model, mesh)` to `sink` after a snapshot, recomputing only when an input
    of route status changed (HTTPRoutes, Services, Gateways, Namespaces, the mesh config).

    Called by istiod_lite.app in its snapshot loop; never raises (a failure is logged and the
    data plane keeps being served).
    """

    INPUT_KINDS = ("HTTPRoute", "Service", "Gateway", "Namespace")

    def __init__(self, sink: RouteStatusSink,
                 compute: Callable[[ClusterModel, MeshConfig], Mapping[RouteKey, RouteStatus]],
                 ) -> None:
        self.sink = sink
        self.compute = compute
        self._inputs: tuple[Any, ...] | None = None
        self.handed_over = 0

    def __call__(self, model: ClusterModel, mesh: MeshConfig) -> None:
        inputs = (mesh, *(model.of_kind(k) for k in self.INPUT_KINDS))
        if self._inputs is not None and self._inputs == inputs:
            return
        try:
            statuses = self.compute(model, mesh)
        except Exception:  # a bug of ours: keep serving, say so loudly
            log.exception("could not compute HTTPRoute statuses; route status not updated")
            return
        self._inputs = inputs
        self.sink.report_route_statuses(statuses)
        self.handed_over += 1

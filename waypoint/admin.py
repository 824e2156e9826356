"""The waypoint's admin (15000), readiness (15021) and metrics (15020) routes.

Called by `waypoint.app` with callables returning current immutable state. `/config_dump`
has `waypoint` (ns/name, identity), `services`, `workloads`, `routes` (RouteTable names and
their routes), `l7_policies`, `certificate`, `xds` and `upstreams` (in-flight counts, ejected
hosts, HBONE pool, HTTP connection pool `http_pool`); `/healthz/ready` is 200 once xDS
synced and the certificate is there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from meshcore.admin import AdminResponse, Route
from meshcore.admin.http import AdminRequest
from meshcore.admin.jsonable import to_jsonable
from waypoint.state import WaypointState


@dataclasses.dataclass(frozen=True)
class AdminView:
    waypoint: str
    identity: str
    state: Callable[[], WaypointState]
    certificate: Callable[[], dict[str, Any]]
    xds: Callable[[], dict[str, Any]]
    upstreams: Callable[[], dict[str, Any]]
    ready: Callable[[], tuple[bool, str]]
    metrics_text: Callable[[], str]


def config_dump(view: AdminView) -> dict[str, Any]:
    s = view.state()
    return {
        "waypoint": view.waypoint,
        "identity": view.identity,
        "generation": s.generation,
        "services": [to_jsonable(v) for _, v in sorted(s.wds.services.items())],
        "workloads": [to_jsonable(v) for _, v in sorted(s.wds.workloads.items())],
        "routes": {name: {"waypoint": t.waypoint, "hostname": t.hostname,
                          "routes": [r.key for r in t.routes]}
                   for name, t in sorted(s.routes.items())},
        "l7_policies": [{"name": p.key, "action": p.action.name, "rules": len(p.rules),
                         "dry_run": p.dry_run} for _, p in sorted(s.policies.items())],
        "certificate": view.certificate(),
        "xds": view.xds(),
        "upstreams": view.upstreams(),
    }


def readiness_routes(view: AdminView) -> Mapping[str, Route]:
    def ready(_req: AdminRequest) -> AdminResponse:
        ok, why = view.ready()
        return AdminResponse.text("ready\n") if ok else AdminResponse.text(
            f"not ready: {why}\n", 503)

    return {"/healthz/ready": ready}


def metrics_routes(view: AdminView) -> Mapping[str, Route]:
    def metrics(_req: AdminRequest) -> AdminResponse:
        return AdminResponse(200, view.metrics_text().encode(), "text/plain; version=0.0.4")

    return {"/metrics": metrics, "/stats/prometheus": metrics}


def admin_routes(view: AdminView) -> Mapping[str, Route]:
    def dump(_req: AdminRequest) -> AdminResponse:
        return AdminResponse.json(config_dump(view))

    return {"/config_dump": dump, **readiness_routes(view), **metrics_routes(view)}

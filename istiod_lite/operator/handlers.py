"""kopf handlers of the operator, on an explicit `kopf.OperatorRegistry` (never the global one).

Called by kopf (`__main__.py` runs `kopf.operator(registry=build_registry(...))`; tests run the
same against kmock). Decorators only (CONVENTIONS #11): each handler calls one method of
`controller.Operator`, which observes through `api`, decides with the pure modules and applies.

Handlers:
* Mesh create/update/resume → `reconcile_mesh`; a Mesh timer (deadlines) and events of ztunnel
  pods and of our Deployments/DaemonSets → `rollout_step` for every Mesh (kopf index).
* Gateway (class istio-waypoint) create/update/resume → `reconcile_gateway`; events of a
  waypoint's Deployment → `refresh_gateway` (status: Programmed, addresses).
* events of a Secret named `istio-ca-secret` → `ca_secret_changed` (republish the root
  certificate ConfigMaps, `rootcert.py`).
kopf adds the finalizer `ambient-py.io/operator` to Meshes (it needs one for the timer).
"""

from __future__ import annotations

from typing import Any

import kopf

from istiod_lite.operator import api as k8s
from istiod_lite.operator import components as c
from istiod_lite.operator import waypoints
from istiod_lite.operator.controller import Operator

MESH = (c.GROUP, c.VERSION, c.MESH_PLURAL)
GATEWAY = ("gateway.networking.k8s.io", "v1", "gateways")


def default_settings(*, post_events: bool = True) -> kopf.OperatorSettings:
    """One operator replica (no peering); kopf's Events optional (tests turn them off)."""
    settings = kopf.OperatorSettings()
    settings.peering.standalone = True
    settings.posting.enabled = post_events
    settings.persistence.finalizer = f"{c.GROUP}/operator"
    return settings


def build_registry(operator: Operator, *, rollout_interval: float = 10.0) -> kopf.OperatorRegistry:
    """A registry with every handler of the operator, bound to `operator`."""
    registry = kopf.OperatorRegistry()
    managed = {c.MANAGED_BY_LABEL: c.MANAGED_BY}

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return operator.api.credentials()

    @kopf.index(*MESH, id="mesh_index", registry=registry)
    def mesh_index(name: str, body: kopf.Body, **_: Any) -> dict[str, Any]:
        return {name: dict(body)}

    @kopf.on.resume(*MESH, registry=registry)
    @kopf.on.create(*MESH, registry=registry)
    @kopf.on.update(*MESH, registry=registry)
    async def mesh_changed(body: kopf.Body, **_: Any) -> None:
        await operator.reconcile_mesh(body)

    @kopf.timer(*MESH, interval=rollout_interval, registry=registry)
    async def mesh_tick(body: kopf.Body, **_: Any) -> None:
        await operator.rollout_step(body)

    async def step_all(mesh_index: kopf.Index[str, dict[str, Any]]) -> None:
        for bodies in mesh_index.values():
            for body in bodies:
                await operator.rollout_step(body)

    @kopf.on.event("v1", "pods", labels={"app": c.ZTUNNEL_NAME}, registry=registry)
    async def ztunnel_pod_event(**kwargs: Any) -> None:
        await step_all(kwargs["mesh_index"])

    @kopf.on.event("apps", "v1", "daemonsets", labels=managed, registry=registry)
    @kopf.on.event("apps", "v1", "deployments", labels=managed, registry=registry)
    async def workload_event(body: kopf.Body, **kwargs: Any) -> None:
        labels = body.get("metadata", {}).get("labels") or {}
        if waypoints.GATEWAY_NAME_LABEL in labels:
            gw = await operator.api.get(k8s.path("Gateway", body["metadata"]["namespace"],
                                                 labels[waypoints.GATEWAY_NAME_LABEL]))
            if gw is not None and waypoints.is_waypoint(gw):
                await operator.refresh_gateway(gw)
            return
        await step_all(kwargs["mesh_index"])

    def is_waypoint(body: kopf.Body, **_: Any) -> bool:
        return waypoints.is_waypoint(body)

    @kopf.on.resume(*GATEWAY, when=is_waypoint, registry=registry)
    @kopf.on.create(*GATEWAY, when=is_waypoint, registry=registry)
    @kopf.on.update(*GATEWAY, when=is_waypoint, registry=registry)
    async def gateway_changed(body: kopf.Body, **kwargs: Any) -> None:
        index: kopf.Index[str, dict[str, Any]] = kwargs["mesh_index"]
        meshes = [b for bodies in index.values() for b in bodies]
        await operator.reconcile_gateway(body, meshes)

    def is_ca_secret(name: str, **_: Any) -> bool:
        return name == c.CA_SECRET_NAME

    @kopf.on.event("v1", "secrets", when=is_ca_secret, registry=registry)
    async def ca_secret_event(body: kopf.Body, type: str | None, **kwargs: Any) -> None:
        if type == "DELETED":
            return
        index: kopf.Index[str, dict[str, Any]] = kwargs["mesh_index"]
        await operator.ca_secret_changed(body, [b for bs in index.values() for b in bs])

    return registry

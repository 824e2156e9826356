"""The operator's glue: observe through `api`, decide with the pure modules, apply the result.

Called only by the kopf handlers in `handlers.py` (one method per handler). For a Mesh:
validate (`spec.parse_mesh_spec`; invalid → `Accepted=False` naming the field, nothing created,
`kopf.PermanentError`), create the namespace and CA Secret if missing, apply
`reconcile.reconcile_mesh`, then one rollout step (`rollout.observe_cluster` +
`rollout.decide_rollout`: delete the next pods) and the status (`status.mesh_conditions`).
For a waypoint Gateway: apply `waypoints.reconcile_waypoint` and write its status.
Root certificate (`rootcert.py`): after the Mesh objects, on each waypoint Gateway (its
namespace) and on events of the CA Secret, ensure `istio-ca-root-cert` in waypoint namespaces.
API errors become kopf's retry semantics (`kopf.TemporaryError` when retrying can help,
else `kopf.PermanentError`); a failed apply is also reported as `Ready=False ReconcileFailed`.
Invariant: steps for one Mesh are serialised by a lock (all handlers run on kopf's loop).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import kopf

from istiod_lite.ca.authority import ROOT_LIFETIME
from istiod_lite.operator import api as k8s
from istiod_lite.operator import components as c
from istiod_lite.operator import reconcile, rollout, rootcert, status, waypoints
from istiod_lite.operator.spec import MeshSpec, MeshSpecError, parse_mesh_spec
from meshcore import pki
from meshcore.kube import KubeClient

log = logging.getLogger("istiod_lite.operator")
RETRY_DELAY = 10


class Operator:
    """The state the handlers share: the API client, the clock, one lock per Mesh."""

    def __init__(self, api: KubeClient, *, clock: Callable[[], float] = time.time) -> None:
        self.api = api
        self.clock = clock
        self._locks: dict[str, asyncio.Lock] = {}

    def lock(self, mesh: str) -> asyncio.Lock:
        return self._locks.setdefault(mesh, asyncio.Lock())

    # -- Mesh ----------------------------------------------------------------------------------
    async def reconcile_mesh(self, body: Mapping[str, Any]) -> None:
        try:
            mesh = parse_mesh_spec(body.get("spec"))
        except MeshSpecError as exc:
            await self._write_mesh_status(body, status.invalid_spec_conditions(str(exc)), {})
            raise kopf.PermanentError(f"invalid Mesh spec: {exc}") from exc
        owner = reconcile.Owner(body["metadata"]["name"], body["metadata"].get("uid", ""))
        async with self.lock(owner.name):
            try:
                await self._apply_mesh(mesh, owner)
            except k8s.ApiError as exc:
                await self._report_failure(body, exc)
                raise _kopf_error(exc) from exc
            await _retrying(self._step(body, mesh))

    async def _report_failure(self, body: Mapping[str, Any], exc: k8s.ApiError) -> None:
        """Best effort: say in the status why the objects could not be applied."""
        retry = f"retrying in {RETRY_DELAY}s" if exc.retryable else "not retrying"
        conds = [rollout.Condition("Accepted", "True", "Valid", "the spec is valid"),
                 rollout.Condition("Ready", "False", "ReconcileFailed", f"{exc} ({retry})")]
        try:
            await self._write_mesh_status(body, conds, {})
        except k8s.ApiError as again:
            log.warning("could not report %s in the Mesh status: %s", exc, again)

    async def _apply_mesh(self, mesh: MeshSpec, owner: reconcile.Owner) -> None:
        await self.api.create_if_missing(reconcile.namespace(mesh))
        secret_path = k8s.path("Secret", mesh.namespace, c.CA_SECRET_NAME)
        if await self.api.get(secret_path) is None:
            now = dt.datetime.fromtimestamp(self.clock(), dt.UTC)
            root = pki.new_root(mesh.trust_domain, lifetime=ROOT_LIFETIME, now=now)
            await self.api.create_if_missing(reconcile.ca_secret(
                mesh, owner, pki.cert_pem(root.certificate), pki.private_key_pem(root.key)))
        for manifest in reconcile.reconcile_mesh(mesh, owner):
            await self.api.apply(manifest)
        await self.publish_root_cert(mesh, owner)

    async def rollout_step(self, body: Mapping[str, Any]) -> None:
        try:
            mesh = parse_mesh_spec(body.get("spec"))
        except MeshSpecError:
            return  # reported by reconcile_mesh; nothing to roll
        async with self.lock(body["metadata"]["name"]):
            await _retrying(self._step(body, mesh))

    async def _step(self, body: Mapping[str, Any], mesh: MeshSpec) -> None:
        ns = mesh.namespace
        nodes = await self.api.list(k8s.path("Node"))
        pods = [p for p in await self.api.list(k8s.path("Pod", ns), label_selector="app=ztunnel")
                if (p["metadata"].get("labels") or {}).get("app") == c.ZTUNNEL_NAME]
        observed = rollout.observe_cluster(nodes, pods)
        ztunnel_ds = await self.api.get(k8s.path("DaemonSet", ns, c.ZTUNNEL_NAME))
        decision = None
        if ztunnel_ds is not None and observed:
            decision = rollout.decide_rollout(
                observed, desired=mesh.ztunnel.version,
                max_unavailable=mesh.rollout.budget(len(observed)),
                deadline_seconds=mesh.rollout.progress_deadline_seconds, now=self.clock())
            for node in decision.replace:
                log.info("rollout to %s: replacing ztunnel pod %s on node %s",
                         mesh.ztunnel.version, node.pod, node.node)
                await self.api.delete(k8s.path("Pod", ns, node.pod))
        seen = status.Observed(
            istiod=await self.api.get(k8s.path("Deployment", ns, c.ISTIOD_NAME)),
            ztunnel=ztunnel_ds,
            cni=await self.api.get(k8s.path("DaemonSet", ns, c.CNI_NAME)))
        extra: dict[str, Any] = {"namespace": ns, "trustDomain": mesh.trust_domain}
        if decision is not None:
            extra["ztunnel"] = {"version": mesh.ztunnel.version, "updatedNodes": decision.updated,
                                "totalNodes": decision.total}
        await self._write_mesh_status(body, status.mesh_conditions(seen, decision), extra)

    async def _write_mesh_status(self, body: Mapping[str, Any], conds: list[rollout.Condition],
                                 extra: Mapping[str, Any]) -> None:
        live = await self.api.get(k8s.path_of({**body, "kind": c.MESH_KIND})) or body
        previous = (live.get("status") or {}).get("conditions") or []
        generation = live["metadata"].get("generation")
        now = dt.datetime.fromtimestamp(self.clock(), dt.UTC)
        new = {"conditions": status.render_conditions(conds, previous, generation=generation,
                                                      now=now), **extra}
        if generation is not None:
            new["observedGeneration"] = generation
        if not k8s.contains(live.get("status") or {}, new):
            await self.api.patch_status({**body, "kind": c.MESH_KIND}, new)

    # -- root certificate in waypoint namespaces -------------------------------------------------
    async def publish_root_cert(self, mesh: MeshSpec, owner: reconcile.Owner,
                                namespaces: list[str] | None = None) -> None:
        """Ensure `istio-ca-root-cert` in `namespaces` (default: every waypoint namespace).

        Callers hold the Mesh's lock. Without the CA Secret nothing happens (the Mesh
        reconcile creates it, then calls this for every waypoint namespace).
        """
        secret = await self.api.get(k8s.path("Secret", mesh.namespace, c.CA_SECRET_NAME))
        if secret is None:
            return
        try:
            root = rootcert.root_cert_of(secret)
        except rootcert.RootCertError as exc:
            log.error("cannot publish the root certificate: %s (waypoints will not start)", exc)
            return
        if namespaces is None:
            try:
                gateways = await self.api.list(k8s.path("Gateway"))
            except k8s.ApiError as exc:
                if exc.status != 404:
                    raise
                gateways = []  # the Gateway API CRDs are not installed: no waypoints
            namespaces = rootcert.waypoint_namespaces(gateways)
        existing = {ns: await self.api.get(k8s.path("ConfigMap", ns, c.ROOT_CERT_CONFIGMAP))
                    for ns in namespaces}
        plan = rootcert.reconcile_root_certs(root, namespaces, existing, owner)
        for ns in plan.foreign:
            log.warning("ConfigMap %s/%s exists and is not managed by %s: left as it is (its "
                        "%s must be this mesh's root for the waypoints there)",
                        ns, c.ROOT_CERT_CONFIGMAP, c.MANAGED_BY, c.ROOT_CERT_KEY)
        for manifest in plan.objects:
            await self.api.apply(manifest)

    async def ca_secret_changed(self, secret: Mapping[str, Any], meshes: list[Any]) -> None:
        """The CA Secret changed (e.g. a new root): republish for the Meshes that use it."""
        for body in meshes:
            try:
                mesh = parse_mesh_spec(body.get("spec"))
            except MeshSpecError:
                continue
            if mesh.namespace != secret["metadata"].get("namespace"):
                continue
            owner = reconcile.Owner(body["metadata"]["name"], body["metadata"].get("uid", ""))
            async with self.lock(owner.name):
                await _retrying(self.publish_root_cert(mesh, owner))

    # -- waypoints --------------------------------------------------------------------------------
    async def reconcile_gateway(self, body: Mapping[str, Any], meshes: list[Any]) -> None:
        found = _first_valid(meshes)
        if found is None:
            await self._write_gateway_status(body, [
                rollout.Condition("Accepted", "False", "Pending",
                                  "no valid Mesh resource exists; create one (docs/operator.md)"),
                rollout.Condition("Programmed", "False", "Pending", "no Mesh")], [])
            raise kopf.TemporaryError("no valid Mesh to take the waypoint image from",
                                      delay=RETRY_DELAY)
        mesh, owner = found
        plan = waypoints.reconcile_waypoint(body, mesh)
        if plan.objects:  # the root certificate first: the waypoint pod mounts it
            async with self.lock(owner.name):
                await _retrying(self.publish_root_cert(mesh, owner,
                                                       [body["metadata"]["namespace"]]))
        for manifest in plan.objects:
            await _retrying(self.api.apply(manifest))
        await _retrying(self.refresh_gateway(body, plan))

    async def refresh_gateway(self, body: Mapping[str, Any],
                              plan: waypoints.WaypointPlan | None = None) -> None:
        meta = body["metadata"]
        if plan is None:
            plan = waypoints.WaypointPlan((), rollout.Condition(
                "Accepted", "True", "Accepted", "waypoint resources created"))
        dep = await self.api.get(k8s.path("Deployment", meta["namespace"], meta["name"]))
        svc = await self.api.get(k8s.path("Service", meta["namespace"], meta["name"]))
        conds, addresses = waypoints.waypoint_status(body, plan, dep, svc)
        await self._write_gateway_status(body, conds, addresses)

    async def _write_gateway_status(self, body: Mapping[str, Any],
                                    conds: list[rollout.Condition],
                                    addresses: list[dict[str, Any]]) -> None:
        gw = {**body, "kind": "Gateway"}
        live = await self.api.get(k8s.path_of(gw)) or body
        previous = (live.get("status") or {}).get("conditions") or []
        now = dt.datetime.fromtimestamp(self.clock(), dt.UTC)
        new = {"conditions": status.render_conditions(
            conds, previous, generation=live["metadata"].get("generation"), now=now),
            "addresses": addresses}
        if not k8s.contains(live.get("status") or {}, new):
            await self.api.patch_status(gw, new)


def _kopf_error(exc: k8s.ApiError) -> Exception:
    """kopf's retry semantics for an API error: temporary (retry later) or permanent."""
    if exc.retryable:
        return kopf.TemporaryError(str(exc), delay=RETRY_DELAY)
    return kopf.PermanentError(str(exc))


async def _retrying(coro: Any) -> Any:
    """Await an API-calling coroutine; map its ApiError to kopf's retry semantics."""
    try:
        return await coro
    except k8s.ApiError as exc:
        raise _kopf_error(exc) from exc


def _first_valid(meshes: list[Any]) -> tuple[MeshSpec, reconcile.Owner] | None:
    for body in sorted(meshes, key=lambda b: b["metadata"]["name"]):
        try:
            spec = parse_mesh_spec(body.get("spec"))
        except MeshSpecError:
            continue
        return spec, reconcile.Owner(body["metadata"]["name"], body["metadata"].get("uid", ""))
    return None

"""`ambientctl analyze`: common ambient misconfigurations, each with how to fix it.

Pure analyzers over a `ClusterModel` (meshcore.model) and the `MeshConfig`; each returns a list of
`Finding` (severity, code, object, message, fix). Called by the `analyze` command (commands.py)
and by tests. Where istiod-lite's translation already decides something (which policy rules
ztunnel drops, which waypoint an object binds to, which pods are STRICT), the analyzer calls that
same code, so `analyze` and the data path cannot disagree.

Severity: `error` = the mesh will not do what the manifest says (traffic refused or a route or
policy silently ignored); `warning` = probably unintended, or it depends on traffic we cannot
see. The command exits 1 when there is an error.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from ambientctl.debug.state import effective_peer_authentication
from istiod_lite.translate import MeshConfig
from istiod_lite.translate.authorization import convert_authorization_policy
from istiod_lite.translate.peer_authentication import STATIC_STRICT_NAME, workload_policy_names
from istiod_lite.translate.waypoints import (
    GATEWAY_NAME_LABEL,
    USE_WAYPOINT_LABEL,
    USE_WAYPOINT_NAMESPACE_LABEL,
    bind,
    find_waypoints,
    is_waypoint_instance,
)
from meshcore.model import (
    AuthorizationPolicy,
    ClusterModel,
    Gateway,
    HTTPRoute,
    ModelObject,
    PeerAuthentication,
    Pod,
    Service,
    redirection_enabled,
    selects,
)
from meshcore.model.diagnostics import Diagnostic

SEVERITIES = ("error", "warning")
_MAX_LISTED = 5


@dataclasses.dataclass(frozen=True, slots=True)
class Finding:
    severity: str  # "error" | "warning"
    code: str
    object: str  # "Kind ns/name"
    message: str
    fix: str

    def render(self) -> str:
        return (f"{self.severity.upper():<8}{self.object}  [{self.code}]\n"
                f"        {self.message}\n        fix: {self.fix}")


def _ref(obj: ModelObject) -> str:
    return f"{obj.kind} {obj.namespace}/{obj.name}" if obj.namespace else f"{obj.kind} {obj.name}"


def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    return shown + (f" and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else "")


def in_mesh(model: ClusterModel, pod: Pod) -> bool:
    """Captured now (agent annotation) or to be captured (enrollment labels)."""
    return redirection_enabled(pod) or model.is_enrolled(pod)


def policy_selects_nothing(model: ClusterModel, mesh: MeshConfig) -> list[Finding]:
    """AuthorizationPolicy / PeerAuthentication whose selector matches no pod."""
    out = []
    for kind in ("AuthorizationPolicy", "PeerAuthentication"):
        for pol in model.sorted(kind):
            assert isinstance(pol, AuthorizationPolicy | PeerAuthentication)
            if pol.selector is None:
                continue
            if kind == "PeerAuthentication" and pol.namespace == mesh.root_namespace:
                continue  # root-namespace selector PAs are ignored by istiod; not our case here
            mesh_wide = kind == "AuthorizationPolicy" and pol.namespace == mesh.root_namespace
            pods = [p for p in model.pods if (mesh_wide or p.namespace == pol.namespace)]
            if any(selects(pol.selector, p.labels) for p in pods):
                continue
            sel = ", ".join(f"{k}={v}" for k, v in sorted(pol.selector.items())) or "{}"
            where = "any namespace" if mesh_wide else f"namespace {pol.namespace}"
            labels = sorted({f"app={p.labels['app']}" for p in pods if "app" in p.labels})
            out.append(Finding(
                "warning", "policy-selects-nothing", _ref(pol),
                f"spec.selector.matchLabels ({sel}) matches no pod in {where}, so it has no "
                "effect",
                "make spec.selector.matchLabels match the pods' labels"
                + (f" (pods there carry {_listed(labels)})" if labels else "")
                + "; remove the selector to apply it to the whole namespace"))
    return out


def l7_attributes_at_ztunnel(model: ClusterModel, mesh: MeshConfig) -> list[Finding]:
    """An AuthorizationPolicy without targetRefs (enforced by ztunnel) using HTTP attributes."""
    out = []
    for pol in model.sorted("AuthorizationPolicy"):
        assert isinstance(pol, AuthorizationPolicy)
        converted, status = convert_authorization_policy(pol, mesh)
        if converted is None or status is None or status.field != "spec.rules":
            continue
        allow = pol.action == "ALLOW"
        effect = ("ztunnel drops each rule that uses them, so those rules allow nothing "
                  "(fail closed: callers they meant to allow are refused)" if allow else
                  "ztunnel drops those attributes, so each rule denies on its L4 parts alone "
                  "(broader than written), or denies nothing if no L4 part is left")
        out.append(Finding(
            "error" if allow else "warning", "l7-attributes-at-ztunnel", _ref(pol),
            f"{status.message} Effect: {effect}.",
            "enforce it at a waypoint: deploy one (a Gateway with gatewayClassName "
            "istio-waypoint), label the Service or namespace istio.io/use-waypoint=<waypoint>, "
            'and replace spec.selector with spec.targetRefs: [{kind: Service, group: "", '
            "name: <service>}] (or the waypoint Gateway); or remove the HTTP attributes"))
    return out


def missing_waypoint(model: ClusterModel, mesh: MeshConfig) -> list[Finding]:
    """`istio.io/use-waypoint` naming a waypoint that is missing or does not take that traffic."""
    waypoints = find_waypoints(model, mesh)
    out = []
    for kind in ("Namespace", "Service", "Pod"):
        for obj in model.sorted(kind):
            name = obj.labels.get(USE_WAYPOINT_LABEL, "")
            if name in ("", "none") or is_waypoint_instance(obj.meta):
                continue
            ns = obj.labels.get(USE_WAYPOINT_NAMESPACE_LABEL) or obj.namespace or obj.name
            wp = waypoints.get((ns, name))
            label = f"label {USE_WAYPOINT_LABEL}={name}"
            if wp is None:
                other = model.get("Gateway", ns, name)
                why = (f"Gateway {ns}/{name} exists but its gatewayClassName is "
                       f"{other.gateway_class_name!r}, not istio-waypoint"
                       if isinstance(other, Gateway) else
                       f"there is no waypoint Gateway {ns}/{name}")
                out.append(Finding(
                    "error", "missing-waypoint", _ref(obj),
                    f"{label} names waypoint {ns}/{name}, but {why}; traffic goes straight to "
                    "the pods, without the waypoint's L7 policies and routes",
                    f"create the waypoint in {ns} (a Gateway {name} with gatewayClassName "
                    "istio-waypoint and a listener mesh, port 15008, protocol HBONE), or fix "
                    "the label"))
                continue
            want = {"Service": "service", "Pod": "workload"}.get(kind)
            if want is not None and not wp.accepts(want):
                out.append(Finding(
                    "error", "waypoint-for-mismatch", _ref(obj),
                    f"{label}: waypoint {ns}/{name} takes {wp.traffic_type} traffic "
                    f"(istio.io/waypoint-for), not {want} traffic, so it is not used",
                    f"label the Gateway istio.io/waypoint-for=all (or {want}), or bind the "
                    f"{'pod' if want == 'workload' else 'service'} to another waypoint"))
            elif kind == "Namespace" and wp.traffic_type == "none":
                out.append(Finding(
                    "warning", "waypoint-for-mismatch", _ref(obj),
                    f"{label}: waypoint {ns}/{name} has istio.io/waypoint-for=none, so nothing "
                    f"in namespace {obj.name} uses it",
                    "label the Gateway istio.io/waypoint-for=service (or workload, all)"))
    return out


def _plaintext_callers(model: ClusterModel, mesh: MeshConfig) -> list[Pod]:
    return [p for p in model.pods
            if not p.terminal and p.namespace != mesh.root_namespace
            and not in_mesh(model, p) and GATEWAY_NAME_LABEL not in p.labels
            and not is_waypoint_instance(p.meta)]


def strict_with_plaintext_callers(model: ClusterModel, mesh: MeshConfig) -> list[Finding]:
    """STRICT mTLS on mesh pods while pods outside the mesh exist (they can only send plaintext),
    and STRICT policies that cover no mesh pod (no ztunnel enforces them)."""
    pas = [p for p in model.sorted("PeerAuthentication") if isinstance(p, PeerAuthentication)]
    if not pas:
        return []
    strict_key = f"{mesh.root_namespace}/{STATIC_STRICT_NAME}"
    covered: dict[tuple[str, str], list[str]] = {}  # deciding PA → strict mesh pods
    for pod in model.pods:
        if in_mesh(model, pod) and strict_key in workload_policy_names(pod, pas, mesh):
            pa = effective_peer_authentication(model, mesh, pod.namespace, pod.name)
            if pa is not None:
                covered.setdefault(pa.key, []).append(f"{pod.namespace}/{pod.name}")
    callers = [f"{p.namespace}/{p.name}" for p in _plaintext_callers(model, mesh)]
    out = []
    for pa in pas:
        if pa.mode != "STRICT":
            continue
        pods = covered.get(pa.key, [])
        if not pods:
            out.append(Finding(
                "warning", "strict-without-mesh-pods", _ref(pa),
                "STRICT mTLS here covers no pod in the ambient mesh; ztunnel enforces mTLS only "
                "for pods it captures, so this policy has no effect",
                "enroll the pods (label the namespace istio.io/dataplane-mode=ambient), or "
                "remove the policy"))
        elif callers:
            out.append(Finding(
                "warning", "strict-with-plaintext-callers", _ref(pa),
                f"STRICT mTLS applies to {len(pods)} mesh pod(s) ({_listed(pods)}), and "
                f"{len(callers)} pod(s) outside the mesh can only send plaintext "
                f"({_listed(callers)}): ztunnel refuses their connections to those pods",
                "enroll the callers (label their namespace istio.io/dataplane-mode=ambient), "
                "or use PERMISSIVE (for some ports: portLevelMtls on a workload policy); "
                "`ambientctl why CALLER POD:PORT` shows one pair"))
    return out


def route_without_waypoint(model: ClusterModel, mesh: MeshConfig) -> list[Finding]:
    """An HTTPRoute whose parent Service has no waypoint (ztunnel never applies routes)."""
    waypoints = find_waypoints(model, mesh)
    out = []
    for route in model.sorted("HTTPRoute"):
        assert isinstance(route, HTTPRoute)
        for i, ref in enumerate(route.parent_refs):
            ns = ref.namespace or route.namespace
            where = f"spec.parentRefs[{i}]"
            if ref.kind == "Service" and ref.group in ("", "core"):
                svc = model.get("Service", ns, ref.name)
                if not isinstance(svc, Service):
                    out.append(Finding("error", "route-parent-missing", _ref(route),
                                       f"{where} names Service {ns}/{ref.name}, which does "
                                       "not exist", "fix the parentRef or create the Service"))
                    continue
                wp, _ = bind("Service", svc.meta, "service", model, waypoints)
                if wp is None:
                    names = sorted(n for (wns, n), w in waypoints.items()
                                   if wns == ns and w.accepts("service"))
                    out.append(Finding(
                        "error", "route-without-waypoint", _ref(route),
                        f"{where} attaches to Service {ns}/{ref.name}, which has no waypoint; "
                        "ztunnel does not apply HTTPRoutes, so this route has no effect",
                        f"label Service {ns}/{ref.name} (or namespace {ns}) "
                        f"istio.io/use-waypoint={names[0] if names else '<waypoint>'}"
                        + ("" if names else " after creating a waypoint Gateway "
                           "(gatewayClassName istio-waypoint) in " + ns)))
            elif ref.kind == "Gateway" and model.get("Gateway", ns, ref.name) is None:
                out.append(Finding("error", "route-parent-missing", _ref(route),
                                   f"{where} names Gateway {ns}/{ref.name}, which does not "
                                   "exist", "fix the parentRef or create the Gateway"))
    return out


def unresolved_target_port(model: ClusterModel, mesh: MeshConfig) -> list[Finding]:
    """A Service port whose named targetPort no selected pod defines."""
    out = []
    for svc in model.services:
        pods = model.pods_matching(svc.namespace, svc.selector)
        for p in svc.ports:
            if not isinstance(p.target_port, str) or not pods:
                continue
            lacking = [f"{pod.namespace}/{pod.name}" for pod in pods
                       if pod.find_port(p.target_port) is None]
            if not lacking:
                continue
            none = len(lacking) == len(pods)
            out.append(Finding(
                "error" if none else "warning", "unresolved-target-port", _ref(svc),
                f"port {p.port} has targetPort {p.target_port!r}, but "
                + ("no selected pod defines a container port with that name: ztunnel has no "
                   "endpoint for it (connections fail: no healthy upstream)" if none else
                   f"{_listed(lacking)} define no container port with that name and are left "
                   "out of that port's endpoints"),
                f"name the container port {p.target_port!r} in the pods "
                "(spec.containers[].ports[].name), or use a number as targetPort"))
    return out


def folder_diagnostics(diagnostics: tuple[Diagnostic, ...]) -> list[Finding]:
    """Problems reading the manifests themselves (rejected objects, YAML errors)."""
    out = []
    for d in diagnostics:
        obj = (f"{d.kind} {d.namespace}/{d.name}" if d.namespace else f"{d.kind} {d.name}"
               ) if d.kind else (d.file or "manifests")
        where = f"{d.file}:{d.line}" if d.file and d.line else d.file
        out.append(Finding("error" if d.severity == "error" else "warning", "invalid-manifest",
                           obj, str(d), f"fix {where or 'the manifest'}"
                           + (f" ({d.field})" if d.field else "")))
    return out


Analyzer = Callable[[ClusterModel, MeshConfig], list[Finding]]
ANALYZERS: tuple[Analyzer, ...] = (
    policy_selects_nothing, l7_attributes_at_ztunnel, missing_waypoint,
    strict_with_plaintext_callers, route_without_waypoint, unresolved_target_port,
)


def analyze(model: ClusterModel, mesh: MeshConfig,
            diagnostics: tuple[Diagnostic, ...] = ()) -> list[Finding]:
    """Every finding, errors first, then by object."""
    found = folder_diagnostics(diagnostics)
    for analyzer in ANALYZERS:
        found.extend(analyzer(model, mesh))
    return sorted(found, key=lambda f: (SEVERITIES.index(f.severity), f.object, f.code))

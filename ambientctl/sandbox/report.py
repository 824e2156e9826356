"""`status`: what a sandbox runs and whether it is healthy, as a dict and as text.

Who calls it: `Sandbox.status()` and the CLI. Health comes from the same checks `up` waits on
(istiod port, CNI STATUS through the real plugin, ztunnel `/healthz/ready`, app ports);
enrollment from the manifest folder as the node agent recorded it
(`ambient.istio.io/redirection` on the pod) next to what the labels say it should be.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ambientctl.sandbox import procs, waypoints
from ambientctl.sandbox.pods import app_spec
from ambientctl.sandbox.readiness import agent_ready, app_ready, istiod_ready, ztunnel_ready
from meshcore.model.core import Pod
from meshcore.model.folder import scan_folder

if TYPE_CHECKING:
    from ambientctl.sandbox.core import Sandbox


def collect_status(sb: Sandbox) -> dict[str, Any]:
    from ambientctl.sandbox.core import REDIRECTION_ANNOTATION

    topo = sb.topology
    comps = []
    for comp in sb.components():
        pid = procs.alive(sb.state, comp)
        ready, detail = False, "not running"
        if pid is not None:
            ready, detail = _ready(sb, comp)
        comps.append({"name": comp, "pid": pid, "running": pid is not None, "ready": ready,
                      "detail": detail, "log": str(sb.state.log_file(comp))})
    model = scan_folder(sb.manifests).model
    pods = []
    for p in topo.pods:
        mp = _pod(model.get("Pod", p.namespace, p.name))
        comp = f"app-{p.namespace}-{p.name}"
        spec = app_spec(mp) if mp is not None else None
        pods.append({
            "pod": p.key, "node": p.node, "ip": p.ip, "netns": p.netns,
            "app": spec.app if spec else "?", "ports": list(spec.ports) if spec else [],
            "running": procs.alive(sb.state, comp) is not None,
            "should_enroll": bool(mp is not None and model.is_enrolled(mp)),
            "redirection": (mp.meta.annotations.get(REDIRECTION_ANNOTATION, "")
                            if mp is not None else "") or "-",
            "in_manifests": mp is not None,
        })
    nodes = [{"name": n.name, "netns": n.netns, "ip": n.ip, "pod_cidr": n.pod_cidr,
              "pods": sum(p.node == n.name for p in topo.pods)} for n in topo.nodes]
    return {"name": sb.name, "state_dir": str(sb.state.path), "manifests": str(sb.manifests),
            "underlay": topo.underlay_netns, "nodes": nodes, "pods": pods, "components": comps,
            "healthy": all(c["ready"] for c in comps)}


def _ready(sb: Sandbox, comp: str) -> tuple[bool, str]:
    topo = sb.topology
    if comp == "istiod":
        ok, why = istiod_ready(sb)
    elif comp.startswith("cni-agent-"):
        ok, why = agent_ready(sb, topo.node(comp.removeprefix("cni-agent-")))
    elif comp.startswith("ztunnel-"):
        ok, why = ztunnel_ready(sb, topo.node(comp.removeprefix("ztunnel-")))
    elif comp.startswith("waypoint-"):
        pod = next(p for p in topo.pods if waypoints.component(p.namespace, p.name) == comp)
        ok, why = waypoints.waypoint_ready(pod)
    else:
        pod = next(p for p in topo.pods if f"app-{p.namespace}-{p.name}" == comp)
        model = _pod(scan_folder(sb.manifests).model.get("Pod", pod.namespace, pod.name))
        if model is None:
            return False, "pod no longer in the manifests"
        ok, why = app_ready(pod, app_spec(model))
    return ok, "ready" if ok else why


def _pod(obj: object) -> Pod | None:
    return obj if isinstance(obj, Pod) else None


def format_status(st: dict[str, Any]) -> str:
    lines = [f"sandbox {st['name']}  (manifests {st['manifests']}, state {st['state_dir']})",
             "", "NODE    NETNS                 IP            POD CIDR       PODS"]
    for n in st["nodes"]:
        lines.append(f"{n['name']:<7} {n['netns']:<21} {n['ip']:<13} {n['pod_cidr']:<14} "
                     f"{n['pods']}")
    lines += ["", "POD                          NODE    IP           APP        RUNNING "
              "SHOULD-ENROLL REDIRECTION"]
    for p in st["pods"]:
        lines.append(f"{p['pod']:<28} {p['node']:<7} {p['ip']:<12} {p['app']:<10} "
                     f"{'yes' if p['running'] else 'NO':<7} "
                     f"{'yes' if p['should_enroll'] else 'no':<13} {p['redirection']}")
    lines += ["", "COMPONENT                PID     READY  DETAIL"]
    for c in st["components"]:
        lines.append(f"{c['name']:<24} {c['pid'] or '-'!s:<7} "
                     f"{'yes' if c['ready'] else 'NO':<6} {c['detail'][:70]}")
    lines += ["", "healthy" if st["healthy"] else
              "NOT healthy: see `ambientctl sandbox logs <component>`"]
    return "\n".join(lines)

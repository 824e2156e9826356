"""The mesh on a real kind cluster: enrollment, cross-node mTLS, L4 deny, waypoint route,
ztunnel version rollout under traffic. Needs Docker and kind (docs/kind-e2e.md)."""

from __future__ import annotations

import json
import subprocess

import pytest

from . import cluster as k

pytestmark = [
    pytest.mark.skipif(k.missing_tools() is not None,
                       reason=f"kind e2e needs Docker and kind: {k.missing_tools()}"),
    pytest.mark.slow,
]
SERVER_URL = "http://server.shop.svc.cluster.local:8080/"


def client_get(url: str = SERVER_URL, *, check: bool = True) -> str:
    return k.exec_in("shop", "deploy/client", "python", "-c", k.http_get(url), check=check)


def pod(app: str) -> dict:
    return k.get_json("pods", "-n", "shop", "-l", f"app={app}")["items"][0]


def ztunnel_on(node: str) -> str:
    pods = k.get_json("pods", "-n", "istio-system", "-l", "app=ztunnel",
                      "--field-selector", f"spec.nodeName={node}")["items"]
    return pods[0]["metadata"]["name"]


def test_namespace_label_enrolls_running_pods(mesh_cluster):
    """Pods in the ambient-labelled namespace get the redirection annotation from the agent."""
    for app in ("server", "client"):
        k.wait_for(f"{app} enrolled", lambda app=app: pod(app)["metadata"].get(
            "annotations", {}).get("ambient.istio.io/redirection") == "enabled")


def test_cross_node_traffic_is_mutual_tls(mesh_cluster):
    """client → server across nodes succeeds and the server's ztunnel counts it as mTLS."""
    assert pod("client")["spec"]["nodeName"] != pod("server")["spec"]["nodeName"]
    assert client_get().splitlines()[0] == "200"
    zt = ztunnel_on(pod("server")["spec"]["nodeName"])
    metrics = k.exec_in("istio-system", zt, "python", "-c",
                        "import urllib.request as u; print(u.urlopen("
                        "'http://127.0.0.1:15020/metrics').read().decode())")
    opened = [line for line in metrics.splitlines()
              if line.startswith("istio_tcp_connections_opened_total")
              and 'destination_workload="server"' in line]
    assert any('connection_security_policy="mutual_tls"' in line for line in opened), opened


def test_l4_deny_policy_blocks_the_client(mesh_cluster):
    """A DENY AuthorizationPolicy on the client's principal makes its requests fail."""
    k.kubectl("apply", "-f", str(k.HERE / "manifests" / "deny-client.yaml"))
    try:
        k.wait_for("deny in force", lambda: client_get(check=False) == "", timeout=60)
    finally:
        k.kubectl("delete", "-f", str(k.HERE / "manifests" / "deny-client.yaml"))
    k.wait_for("allowed again", lambda: client_get(check=False).startswith("200"), timeout=60)


def test_waypoint_route_applies(mesh_cluster):
    """With the service bound to a waypoint, the HTTPRoute's response header appears."""
    k.kubectl("apply", "-f", str(k.HERE / "manifests" / "waypoint.yaml"))
    k.wait_for("Gateway Programmed", lambda: any(
        c["type"] == "Programmed" and c["status"] == "True"
        for c in k.get_json("gateway", "-n", "shop", "waypoint")["status"]["conditions"]))
    k.kubectl("label", "service", "-n", "shop", "server", "istio.io/use-waypoint=waypoint",
              "--overwrite")
    out = k.wait_for("route header", lambda: "via-waypoint" in client_get(check=False)
                     and client_get(check=False))
    assert out.splitlines()[0] == "200"


def test_kubelet_probes_keep_pods_ready_under_strict(mesh_cluster):
    """Under STRICT mTLS a restarted server pod still becomes Ready (its readiness probe is
    plaintext from the kubelet): the node agent SNATs kubelet probes to 169.254.7.127, which
    the in-pod rules let through; mesh traffic still flows over mTLS."""
    strict = str(k.HERE / "manifests" / "strict.yaml")
    k.kubectl("apply", "-f", strict)
    try:
        k.kubectl("rollout", "restart", "deployment/server", "-n", "shop")
        k.kubectl("rollout", "status", "deployment/server", "-n", "shop", "--timeout=180s",
                  timeout=200)
        live = [p for p in k.get_json("pods", "-n", "shop", "-l", "app=server")["items"]
                if not p["metadata"].get("deletionTimestamp")]
        assert live and all(p["metadata"].get("annotations", {}).get(
            "ambient.istio.io/redirection") == "enabled" for p in live)
        assert client_get().splitlines()[0] == "200"
    finally:
        k.kubectl("delete", "-f", strict)


def test_httproute_status_names_a_missing_backend(mesh_cluster):
    """istiod-lite writes the route's status.parents: Accepted, and ResolvedRefs=False with
    BackendNotFound naming the Service that does not exist."""
    manifest = str(k.HERE / "manifests" / "route-missing-backend.yaml")
    k.kubectl("apply", "-f", manifest)

    def conditions() -> dict[str, dict] | None:
        route = k.get_json("httproute", "-n", "shop", "missing-backend")
        for parent in route.get("status", {}).get("parents", []):
            if parent.get("controllerName") == "istio.io/gateway-controller":
                return {c["type"]: c for c in parent.get("conditions", [])}
        return None

    try:
        conds = k.wait_for("HTTPRoute status", conditions, timeout=60)
        assert conds["Accepted"]["status"] == "True"
        refs = conds["ResolvedRefs"]
        assert (refs["status"], refs["reason"]) == ("False", "BackendNotFound")
        assert "nowhere" in refs["message"]
    finally:
        k.kubectl("delete", "-f", manifest)


def test_ztunnel_version_rollout_keeps_traffic_flowing(mesh_cluster):
    """Changing spec.version rolls ztunnel node by node to e2e-2 while requests keep working."""
    loop = ("import time, urllib.request as u\n"
            "ok = bad = 0\n"
            "end = time.time() + 240\n"
            "while time.time() < end:\n"
            "    try:\n"
            f"        u.urlopen({SERVER_URL!r}, timeout=3); ok += 1\n"
            "    except Exception: bad += 1\n"
            "    time.sleep(0.2)\n"
            "print(ok, bad)\n")
    traffic = subprocess.Popen(
        ["kubectl", "--context", f"kind-{k.CLUSTER}", "exec", "-n", "shop", "deploy/client",
         "--", "python", "-c", loop], stdout=subprocess.PIPE, text=True)
    k.kubectl("patch", "mesh", "default", "--type=merge",
              "-p", json.dumps({"spec": {"version": "e2e-2"}}))
    k.wait_for("rollout complete", lambda: (k.mesh_condition("Progressing") or {}).get(
        "reason") == "RolloutComplete" and k.get_json("mesh", "default")["status"].get(
        "ztunnel", {}).get("version") == "e2e-2", timeout=240)
    versions = {p["metadata"]["labels"]["ambient-py.io/version"] for p in k.get_json(
        "pods", "-n", "istio-system", "-l", "app=ztunnel")["items"]}
    assert versions == {"e2e-2"}
    out, _ = traffic.communicate(timeout=300)
    ok, bad = map(int, out.split())
    assert ok > 0 and bad <= max(2, ok // 50), f"{bad} failed requests of {ok + bad}"

"""Node-by-node ztunnel rollout and the waypoint controller, against kmock (real kopf reactor).

kmock has no DaemonSet or Deployment controller and no garbage collector: the tests play the
kubelet/controllers (create the replacement pod, set readiness) and check what the operator
does in response.
"""

from __future__ import annotations

import pytest

from istiod_lite.operator import components as c
from tests.istiod_lite.operator import factories as f
from tests.istiod_lite.operator.conftest import (
    api_call,
    condition,
    has_condition,
    seed,
    stored,
    stored_objects,
    watch_until,
)

MESH_PATH = "/apis/ambient-py.io/v1alpha1/meshes"
PODS = f"/api/v1/namespaces/{f.NS}/pods"
MERGE = "application/merge-patch+json"


def progressing(reason: str, text: str = ""):
    def check(obj):
        cond = condition(obj, "Progressing")
        return cond is not None and cond["reason"] == reason and text in cond["message"]
    return check


def ztunnel_pods(cluster) -> set[str]:
    return {name for plural, ns, name in stored_objects(cluster)
            if plural == "pods" and name.startswith("ztunnel-")}


@pytest.mark.asyncio
async def test_version_change_rolls_ztunnel_node_by_node(cluster, operator):
    """v1→v2: n1 replaced; n2 only after n1's new pod is Ready and synced; then complete."""
    seed(cluster, *(f.node(n) for n in ("n1", "n2")),
         *(f.ztunnel_pod(n, "0.1.0") for n in ("n1", "n2")))
    await operator()
    await api_call(cluster, "POST", MESH_PATH, f.mesh({"version": "0.1.0"}))
    await watch_until(cluster, MESH_PATH, progressing("RolloutComplete"))

    await api_call(cluster, "PATCH", f"{MESH_PATH}/default",
                   {"spec": {"ztunnel": {"version": "0.2.0"}}}, MERGE)
    await watch_until(cluster, MESH_PATH, progressing("RollingOut", "in progress: n1"))
    assert ztunnel_pods(cluster) == {"ztunnel-n2-a"}  # n1's old pod deleted, n2 untouched

    # The DaemonSet controller would now start n1's new pod: not ready yet.
    await api_call(cluster, "POST", PODS, f.ztunnel_pod("n1", "0.2.0", ready=False,
                                                        synced=False, suffix="b",
                                                        created="2027-01-15T08:00:00Z"))
    await watch_until(cluster, MESH_PATH, progressing("RollingOut", "waiting for n1"))
    assert ztunnel_pods(cluster) == {"ztunnel-n1-b", "ztunnel-n2-a"}

    # Ready, but not yet re-received its pods from the CNI agent: still waiting.
    await api_call(cluster, "PATCH", f"{PODS}/ztunnel-n1-b", {"status": {"conditions": [
        {"type": "Ready", "status": "True"}]}}, MERGE)
    await watch_until(cluster, PODS, lambda p: p["metadata"]["name"] == "ztunnel-n1-b"
                      and p["status"]["conditions"][0]["status"] == "True")
    assert "ztunnel-n2-a" in ztunnel_pods(cluster)

    await api_call(cluster, "PATCH", f"{PODS}/ztunnel-n1-b", {"metadata": {"annotations": {
        c.ZDS_SYNCED_ANNOTATION: "4"}}}, MERGE)
    mesh = await watch_until(cluster, MESH_PATH, progressing("RollingOut", "in progress: n2"))
    assert ztunnel_pods(cluster) == {"ztunnel-n1-b"}
    assert mesh["status"]["ztunnel"] == {"version": "0.2.0", "updatedNodes": 1, "totalNodes": 2}

    await api_call(cluster, "POST", PODS, f.ztunnel_pod("n2", "0.2.0", suffix="b"))
    await watch_until(cluster, MESH_PATH, progressing("RolloutComplete"))


@pytest.mark.asyncio
async def test_crashing_new_ztunnel_pauses_the_rollout_naming_the_node(cluster, operator):
    """A crash-looping new pod on n1 pauses the rollout; n2 keeps its old ztunnel."""
    seed(cluster, f.node("n1"), f.node("n2"), f.ztunnel_pod("n1", "0.2.0", ready=False,
                                                            synced=False,
                                                            waiting="CrashLoopBackOff"),
         f.ztunnel_pod("n2", "0.1.0"))
    await operator()
    await api_call(cluster, "POST", MESH_PATH, f.mesh({"version": "0.2.0"}))
    mesh = await watch_until(cluster, MESH_PATH, progressing("RolloutPaused"))
    msg = condition(mesh, "Progressing")["message"]
    assert "node n1" in msg and "CrashLoopBackOff" in msg
    assert condition(mesh, "Ready")["reason"] == "RolloutPaused"
    assert ztunnel_pods(cluster) == {"ztunnel-n1-a", "ztunnel-n2-a"}


@pytest.mark.asyncio
async def test_waypoint_gateway_gets_objects_and_status(cluster, operator):
    """A waypoint Gateway gets SA/Deployment/Service named after it, owned by it; then
    Programmed and an address once its pod is ready."""
    seed(cluster, f.mesh({"version": "0.4.0"}))
    await operator()
    gw_path = "/apis/gateway.networking.k8s.io/v1/namespaces/shop/gateways"
    await api_call(cluster, "POST", gw_path, f.waypoint_gateway())
    gw = await watch_until(cluster, gw_path, has_condition("Programmed", "False", "Pending"))
    assert condition(gw, "Accepted")["status"] == "True"
    for kind in ("ServiceAccount", "Deployment", "Service"):
        obj = stored(cluster, kind, "shop", "waypoint")
        assert obj["metadata"]["ownerReferences"][0]["uid"] == "uid-gw-waypoint", kind
        assert obj["metadata"]["labels"]["gateway.networking.k8s.io/gateway-name"] == "waypoint"
    svc = stored(cluster, "Service", "shop", "waypoint")
    assert [(p["name"], p["port"], p["appProtocol"]) for p in svc["spec"]["ports"]] == \
        [("status-port", 15021, "tcp"), ("mesh", 15008, "hbone")]
    dep = stored(cluster, "Deployment", "shop", "waypoint")
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == \
        "ambient-py/ambient-py:0.4.0"

    # The API server assigns the cluster IP; the Deployment controller reports a ready pod.
    await api_call(cluster, "PATCH", "/api/v1/namespaces/shop/services/waypoint",
                   {"spec": {"clusterIP": "10.96.0.50"}}, MERGE)
    await api_call(cluster, "PATCH", "/apis/apps/v1/namespaces/shop/deployments/waypoint/status",
                   {"status": {"readyReplicas": 1}}, MERGE)
    gw = await watch_until(cluster, gw_path, has_condition("Programmed", "True"))
    assert gw["status"]["addresses"] == [
        {"type": "Hostname", "value": "waypoint.shop.svc.cluster.local"},
        {"type": "IPAddress", "value": "10.96.0.50"}]


@pytest.mark.asyncio
async def test_invalid_waypoint_is_refused_and_nothing_created(cluster, operator):
    """A waypoint Gateway without an HBONE 15008 listener is not Accepted; nothing is created."""
    seed(cluster, f.mesh())
    await operator()
    gw_path = "/apis/gateway.networking.k8s.io/v1/namespaces/shop/gateways"
    bad = f.waypoint_gateway(listeners=[{"name": "http", "port": 80, "protocol": "HTTP"}])
    await api_call(cluster, "POST", gw_path, bad)
    gw = await watch_until(cluster, gw_path,
                           has_condition("Accepted", "False", "ListenersNotValid"))
    assert "HBONE" in condition(gw, "Accepted")["message"]
    assert stored(cluster, "Deployment", "shop", "waypoint") is None
    assert stored(cluster, "ServiceAccount", "shop", "waypoint") is None


@pytest.mark.asyncio
async def test_waypoint_listener_change_updates_the_service(cluster, operator):
    """Adding a listener to the waypoint Gateway adds its port to the Service."""
    seed(cluster, f.mesh())
    await operator()
    gw_path = "/apis/gateway.networking.k8s.io/v1/namespaces/shop/gateways"
    await api_call(cluster, "POST", gw_path, f.waypoint_gateway())
    await watch_until(cluster, gw_path, has_condition("Accepted", "True"))
    listeners = [{"name": "mesh", "port": 15008, "protocol": "HBONE"},
                 {"name": "extra", "port": 15009, "protocol": "HBONE"}]
    await api_call(cluster, "PATCH", f"{gw_path}/waypoint", {"spec": {"listeners": listeners},
                                                             "metadata": {"generation": 2}},
                   MERGE)
    svc = await watch_until(cluster, "/api/v1/namespaces/shop/services",
                            lambda s: len(s["spec"]["ports"]) == 3)
    assert [p["port"] for p in svc["spec"]["ports"]] == [15021, 15008, 15009]

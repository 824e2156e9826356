"""The operator (real kopf reactor, our registry) against kmock's emulated Kubernetes API."""

from __future__ import annotations

import base64
import datetime as dt

import pytest
from kmock import resource

from istiod_lite.ca.roots import root_from_secret_data
from istiod_lite.operator import components as c
from meshcore import pki
from tests.istiod_lite.operator import factories as f
from tests.istiod_lite.operator.conftest import (
    NOW,
    api_call,
    condition,
    has_condition,
    seed,
    stored,
    stored_objects,
    watch_until,
)

MESH_PATH = "/apis/ambient-py.io/v1alpha1/meshes"
MERGE = "application/merge-patch+json"
# The status written after the objects exist (the Deployment exists but has no ready pod).
CREATED = has_condition("ControlPlaneReady", "False", "Unavailable")


@pytest.mark.asyncio
async def test_mesh_creates_control_plane_ztunnel_and_cni(cluster, operator):
    """A valid Mesh yields the CA Secret, istiod Deployment+Service+RBAC and both DaemonSets."""
    seed(cluster, f.node("n1"))
    await operator()
    await api_call(cluster, "POST", MESH_PATH, f.mesh({"version": "0.3.0",
                                                       "trustDomain": "example.org"}))
    mesh = await watch_until(cluster, MESH_PATH, CREATED)
    assert condition(mesh, "Accepted")["status"] == "True"
    assert condition(mesh, "Ready")["reason"] == "ComponentsNotReady"  # nothing runs in kmock

    secret = stored(cluster, "Secret", f.NS, c.CA_SECRET_NAME)
    root = root_from_secret_data(secret["data"], now=dt.datetime.fromtimestamp(NOW, dt.UTC))
    assert "example.org" in root.certificate.subject.rfc4514_string()
    dep = stored(cluster, "Deployment", f.NS, "istiod-lite")
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "ambient-py/ambient-py:0.3.0"
    assert container["command"][:2] == ["istiod-lite", "--kubernetes"]
    zt = stored(cluster, "DaemonSet", f.NS, "ztunnel")
    assert zt["spec"]["updateStrategy"] == {"type": "OnDelete"}
    zt_pod = zt["spec"]["template"]["spec"]
    assert zt_pod["hostNetwork"] is True
    assert {"name": "cni-ztunnel-sock-dir", "hostPath": {
        "path": "/var/run/ztunnel", "type": "DirectoryOrCreate"}} in zt_pod["volumes"]
    assert set(zt_pod["containers"][0]["securityContext"]["capabilities"]["add"]) == \
        {"NET_ADMIN", "SYS_ADMIN", "NET_RAW"}
    cni = stored(cluster, "DaemonSet", f.NS, "ambient-cni")
    assert cni["spec"]["template"]["spec"]["initContainers"][0]["command"][:2] == \
        ["ambient-cni", "install"]
    for kind, ns, name in [("Service", f.NS, "istiod-lite"),
                           ("ServiceAccount", f.NS, "ztunnel"),
                           ("ClusterRole", None, "istiod-lite-istio-system"),
                           ("ClusterRoleBinding", None, "ambient-cni-istio-system"),
                           ("Role", f.NS, "ztunnel"), ("Namespace", None, f.NS)]:
        obj = stored(cluster, kind, ns, name)
        assert obj is not None, (kind, name)
        if kind != "Namespace":
            assert obj["metadata"]["ownerReferences"][0]["uid"] == "uid-mesh-default"


@pytest.mark.asyncio
async def test_invalid_spec_names_the_field_and_creates_nothing(cluster, operator):
    """maxUnavailable 0 → Accepted=False naming the field; no object besides the Mesh exists."""
    seed(cluster, f.node("n1"))
    before = stored_objects(cluster)
    await operator()
    bad = f.mesh({"version": "0.1.0", "ztunnel": {"rollout": {"maxUnavailable": 0}}})
    await api_call(cluster, "POST", MESH_PATH, bad)
    mesh = await watch_until(cluster, MESH_PATH, has_condition("Accepted", "False", "InvalidSpec"))
    assert "spec.ztunnel.rollout.maxUnavailable" in condition(mesh, "Accepted")["message"]
    assert condition(mesh, "Ready")["reason"] == "InvalidSpec"
    assert stored_objects(cluster) - before == {("meshes", None, "default")}


@pytest.mark.asyncio
async def test_fixing_an_invalid_spec_creates_the_mesh(cluster, operator):
    """After an invalid spec is corrected, the next update reconciles everything."""
    await operator()
    await api_call(cluster, "POST", MESH_PATH, f.mesh({"version": "0.1.0", "logLevel": "loud"}))
    await watch_until(cluster, MESH_PATH, has_condition("Accepted", "False"))
    await api_call(cluster, "PATCH", f"{MESH_PATH}/default",
                   {"spec": {"logLevel": "debug"}, "metadata": {"generation": 2}}, MERGE)
    mesh = await watch_until(cluster, MESH_PATH, CREATED)
    assert condition(mesh, "Accepted")["observedGeneration"] == 2
    dep = stored(cluster, "Deployment", f.NS, "istiod-lite")
    assert dep["spec"]["template"]["spec"]["containers"][0]["command"][-2:] == \
        ["--log-level", "debug"]


@pytest.mark.asyncio
async def test_spec_update_patches_the_objects(cluster, operator):
    """Raising istiod replicas and the ztunnel version updates the Deployment and DaemonSet."""
    await operator()
    await api_call(cluster, "POST", MESH_PATH, f.mesh({"version": "0.1.0"}))
    await watch_until(cluster, MESH_PATH, CREATED)
    await api_call(cluster, "PATCH", f"{MESH_PATH}/default", {
        "spec": {"istiod": {"replicas": 2}, "ztunnel": {"version": "0.2.0"}},
        "metadata": {"generation": 2}}, MERGE)
    await watch_until(cluster, "/apis/apps/v1/namespaces/istio-system/deployments",
                      lambda d: d["spec"]["replicas"] == 2)
    zt = await watch_until(
        cluster, "/apis/apps/v1/namespaces/istio-system/daemonsets",
        lambda d: d["metadata"]["name"] == "ztunnel"
        and d["spec"]["template"]["metadata"]["labels"][c.VERSION_LABEL] == "0.2.0")
    assert zt["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":0.2.0")
    cni = stored(cluster, "DaemonSet", f.NS, "ambient-cni")
    assert cni["spec"]["template"]["metadata"]["labels"][c.VERSION_LABEL] == "0.1.0"


@pytest.mark.asyncio
async def test_existing_ca_secret_is_never_overwritten(cluster, operator):
    """A CA Secret that exists (a user's own root) is left exactly as it was."""
    root = pki.new_root("cluster.local", lifetime=dt.timedelta(days=30),
                        now=dt.datetime.now(dt.UTC))
    data = {"ca-cert.pem": base64.b64encode(pki.cert_pem(root.certificate)).decode(),
            "ca-key.pem": base64.b64encode(pki.private_key_pem(root.key)).decode()}
    seed(cluster, {"apiVersion": "v1", "kind": "Secret",
                   "metadata": {"name": c.CA_SECRET_NAME, "namespace": f.NS}, "data": data})
    await operator()
    await api_call(cluster, "POST", MESH_PATH, f.mesh())
    await watch_until(cluster, MESH_PATH, CREATED)
    assert stored(cluster, "Secret", f.NS, c.CA_SECRET_NAME)["data"] == data


@pytest.mark.asyncio
async def test_api_refusal_is_reported_with_the_reason(cluster, operator):
    """A 403 while creating a ClusterRole shows as Ready=False/ReconcileFailed with the hint."""
    cluster["post", resource("rbac.authorization.k8s.io", "v1", "clusterroles")] << 403
    await operator()
    await api_call(cluster, "POST", MESH_PATH, f.mesh())
    mesh = await watch_until(cluster, MESH_PATH, has_condition("Ready", "False", "ReconcileFailed"))
    msg = condition(mesh, "Ready")["message"]
    assert "HTTP 403" in msg and "/clusterroles" in msg and "not retrying" in msg
    assert "does the operator's ClusterRole allow this?" in msg

"""The root certificate ConfigMap `istio-ca-root-cert` in waypoint namespaces: the pure
reconciler (rootcert.py) and, against kmock with the real kopf reactor, the whole path from
Mesh + CA Secret + waypoint Gateway to the ConfigMap and the Deployment mounting it."""

from __future__ import annotations

import base64
import datetime as dt
import json

import pytest

from istiod_lite.operator import components as c
from istiod_lite.operator import reconcile, rootcert, waypoints
from istiod_lite.operator.spec import parse_mesh_spec
from meshcore import pki
from tests.istiod_lite.operator import factories as f
from tests.istiod_lite.operator.conftest import (
    api_call,
    has_condition,
    seed,
    stored,
    watch_until,
)

OWNER = reconcile.Owner("default", "uid-mesh-default")
MESH = parse_mesh_spec({"version": "0.1.0"})
GATEWAYS = "/apis/gateway.networking.k8s.io/v1/namespaces/shop/gateways"
CONFIGMAPS = "/api/v1/namespaces/shop/configmaps"
MERGE = "application/merge-patch+json"
MESHES = "/apis/ambient-py.io/v1alpha1/meshes"


def new_root() -> tuple[bytes, bytes]:
    """(cert PEM, key PEM) of a fresh mesh root."""
    root = pki.new_root("cluster.local", lifetime=dt.timedelta(days=1),
                        now=dt.datetime.now(dt.UTC))
    return pki.cert_pem(root.certificate), pki.private_key_pem(root.key)


ROOT_A, KEY_A = new_root()
ROOT_B, _ = new_root()


def ours(ns: str, pem: bytes) -> dict:
    return rootcert.root_cert_configmap(ns, pem.decode(), OWNER)


def foreign(ns: str) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": c.ROOT_CERT_CONFIGMAP, "namespace": ns,
                         "labels": {"app.kubernetes.io/managed-by": "istiod"}},
            "data": {c.ROOT_CERT_KEY: "someone else's root"}}


# -- pure ------------------------------------------------------------------------------------------
def test_waypoint_namespaces_are_those_with_a_waypoint_gateway():
    """Only Gateways of class istio-waypoint count; each namespace once, sorted."""
    other = f.waypoint_gateway("ingress", "web")
    other["spec"]["gatewayClassName"] = "istio"
    gws = [f.waypoint_gateway("a", "shop"), f.waypoint_gateway("b", "shop"),
           f.waypoint_gateway("w", "bank"), other]
    assert rootcert.waypoint_namespaces(gws) == ["bank", "shop"]


@pytest.mark.parametrize("existing, want_objects, want_foreign", [
    pytest.param({"shop": None}, ["shop"], [], id="missing-is-created"),
    pytest.param({"shop": ours("shop", ROOT_B)}, ["shop"], [], id="rotated-root-is-updated"),
    pytest.param({"shop": ours("shop", ROOT_A)}, ["shop"], [], id="current-is-kept-ours"),
    pytest.param({"shop": foreign("shop")}, [], ["shop"], id="foreign-left-alone"),
    pytest.param({"shop": foreign("shop"), "bank": None}, ["bank"], ["shop"],
                 id="foreign-does-not-block-others"),
])
def test_reconcile_root_certs(existing, want_objects, want_foreign):
    """Desired ConfigMaps carry the current root, our label and the Mesh owner; foreign stay."""
    plan = rootcert.reconcile_root_certs(ROOT_A.decode(), list(existing), existing, OWNER)
    assert [o["metadata"]["namespace"] for o in plan.objects] == sorted(want_objects)
    assert list(plan.foreign) == want_foreign
    for obj in plan.objects:
        assert obj["metadata"]["name"] == "istio-ca-root-cert"
        assert obj["data"] == {"root-cert.pem": ROOT_A.decode()}
        assert rootcert.is_ours(obj)
        assert obj["metadata"]["ownerReferences"] == [OWNER.reference()]


def test_root_rotation_changes_the_desired_data():
    """A new root in the Secret gives a ConfigMap the live (old) one does not contain."""
    live = ours("shop", ROOT_A)
    secret = reconcile.ca_secret(MESH, OWNER, ROOT_B, b"-----BEGIN PRIVATE KEY-----\n")
    plan = rootcert.reconcile_root_certs(rootcert.root_cert_of(secret), ["shop"],
                                         {"shop": live}, OWNER)
    assert plan.objects[0]["data"]["root-cert.pem"] == ROOT_B.decode() != \
        live["data"]["root-cert.pem"]


def test_root_cert_of_reads_only_the_certificate():
    """The PEM comes from ca-cert.pem; the key never appears in the result."""
    secret = reconcile.ca_secret(MESH, OWNER, ROOT_A, KEY_A)
    pem = rootcert.root_cert_of(secret)
    assert pem == ROOT_A.decode() and "PRIVATE KEY" not in pem


@pytest.mark.parametrize("data, match", [
    pytest.param({}, "has no ca-cert.pem", id="missing"),
    pytest.param({"ca-cert.pem": "%%%"}, "not base64", id="not-base64"),
    pytest.param({"ca-cert.pem": base64.b64encode(b"hello").decode()}, "not a PEM",
                 id="not-pem"),
])
def test_root_cert_of_refuses_a_broken_secret(data, match):
    """A CA Secret without a usable ca-cert.pem is an error naming the Secret."""
    secret = {"metadata": {"name": "istio-ca-secret", "namespace": "istio-system"},
              "data": data}
    with pytest.raises(rootcert.RootCertError, match=f"istio-system/istio-ca-secret.*{match}"):
        rootcert.root_cert_of(secret)


def test_waypoint_deployment_mounts_the_configmap_read_only():
    """The waypoint pod mounts root-cert.pem of istio-ca-root-cert where --root-cert points."""
    dep = next(o for o in waypoints.reconcile_waypoint(f.waypoint_gateway(), MESH).objects
               if o["kind"] == "Deployment")
    assert_mounts_root_cert(dep)


def assert_mounts_root_cert(dep: dict) -> None:
    pod = dep["spec"]["template"]["spec"]
    container = pod["containers"][0]
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == c.ROOT_CERT_DIR)
    assert mount["readOnly"] is True
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume == {"name": mount["name"], "configMap": {
        "name": "istio-ca-root-cert", "items": [{"key": "root-cert.pem",
                                                 "path": "root-cert.pem"}]}}
    flag = container["command"].index("--root-cert")
    assert container["command"][flag + 1] == f"{mount['mountPath']}/root-cert.pem"


# -- kmock end to end ------------------------------------------------------------------------------
def root_cert_is(pem: bytes):
    def check(obj: dict) -> bool:
        return obj["metadata"]["name"] == c.ROOT_CERT_CONFIGMAP and \
            (obj.get("data") or {}).get(c.ROOT_CERT_KEY) == pem.decode()
    return check


def handled(obj: dict) -> dict:
    """`obj` as kopf leaves it once handled (its last-handled annotation, the Mesh finalizer):
    started against it, kopf runs only the resume handler, once, and no create/update."""
    spec = json.dumps({"spec": obj["spec"]}, separators=(",", ":"))
    meta = obj["metadata"]
    meta["annotations"] = {"kopf.zalando.org/last-handled-configuration": spec + "\n"}
    if obj["kind"] == c.MESH_KIND:
        meta["finalizers"] = [f"{c.GROUP}/operator"]
    return obj


@pytest.mark.asyncio
async def test_waypoint_namespace_gets_the_root_and_follows_rotation(cluster, operator):
    """Mesh + CA Secret + waypoint in `shop` → istio-ca-root-cert there with the Secret's cert,
    the Deployment mounting it; a new root in the Secret updates it; the key never leaks."""
    seed(cluster, handled(f.mesh()), handled(f.waypoint_gateway()),
         reconcile.ca_secret(MESH, OWNER, ROOT_A, KEY_A))
    await operator()
    cm = await watch_until(cluster, CONFIGMAPS, root_cert_is(ROOT_A))
    assert cm["metadata"]["labels"][c.MANAGED_BY_LABEL] == c.MANAGED_BY
    assert cm["metadata"]["ownerReferences"][0]["uid"] == "uid-mesh-default"
    # Both resume handlers (each publishes) are over once they have written the statuses:
    # from here on only the CA Secret's events can bring the new root.
    await watch_until(cluster, GATEWAYS, has_condition("Accepted", "True"))
    await watch_until(cluster, MESHES, has_condition("Accepted", "True"))
    assert_mounts_root_cert(stored(cluster, "Deployment", "shop", "waypoint"))

    rotated = {"data": {c.CA_CERT_KEY: base64.b64encode(ROOT_B).decode()}}
    await api_call(cluster, "PATCH", f"/api/v1/namespaces/{f.NS}/secrets/{c.CA_SECRET_NAME}",
                   rotated, MERGE)
    cm = await watch_until(cluster, CONFIGMAPS, root_cert_is(ROOT_B))
    assert set(cm["data"]) == {"root-cert.pem"}
    assert "PRIVATE KEY" not in str(cm)


@pytest.mark.asyncio
async def test_waypoint_created_in_a_running_mesh_gets_the_root(cluster, operator):
    """A waypoint Gateway posted to a running mesh: its namespace gets the Secret's root."""
    seed(cluster, f.mesh(), reconcile.ca_secret(MESH, OWNER, ROOT_A, KEY_A))
    await operator()
    await api_call(cluster, "POST", GATEWAYS, f.waypoint_gateway())
    await watch_until(cluster, CONFIGMAPS, root_cert_is(ROOT_A))
    await watch_until(cluster, GATEWAYS, has_condition("Accepted", "True"))
    assert_mounts_root_cert(stored(cluster, "Deployment", "shop", "waypoint"))


@pytest.mark.asyncio
async def test_mesh_created_after_the_waypoint_publishes_its_new_root(cluster, operator):
    """A waypoint that exists before the Mesh gets the root the operator generates."""
    seed(cluster, f.waypoint_gateway())
    await operator()
    await api_call(cluster, "POST", MESHES, f.mesh())
    cm = await watch_until(cluster, CONFIGMAPS,
                           lambda o: o["metadata"]["name"] == c.ROOT_CERT_CONFIGMAP)
    secret = stored(cluster, "Secret", f.NS, c.CA_SECRET_NAME)
    assert cm["data"] == {"root-cert.pem": rootcert.root_cert_of(secret)}


@pytest.mark.asyncio
async def test_foreign_configmap_is_left_untouched(cluster, operator):
    """An istio-ca-root-cert in `shop` that is not ours keeps its content and labels."""
    theirs = foreign("shop")
    seed(cluster, f.mesh(), reconcile.ca_secret(MESH, OWNER, ROOT_A, KEY_A), theirs)
    await operator()
    await api_call(cluster, "POST", GATEWAYS, f.waypoint_gateway())
    # The Deployment is applied after the root certificate step of the same reconcile.
    await watch_until(cluster, "/apis/apps/v1/namespaces/shop/deployments",
                      lambda o: o["metadata"]["name"] == "waypoint")
    await watch_until(cluster, GATEWAYS, has_condition("Accepted", "True"))
    await watch_until(cluster, MESHES, has_condition("Accepted", "True"))  # its publish too
    live = stored(cluster, "ConfigMap", "shop", c.ROOT_CERT_CONFIGMAP)
    assert live["data"] == theirs["data"]
    assert live["metadata"]["labels"] == theirs["metadata"]["labels"]
    assert "ownerReferences" not in live["metadata"]

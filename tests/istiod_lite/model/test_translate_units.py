"""Focused tests for translation helpers: workload naming, protocols, PeerAuthentication."""

from __future__ import annotations

import pytest

from istiod_lite.translate import (
    ADDRESS_TYPE_URL,
    AUTHORIZATION_TYPE_URL,
    MeshConfig,
    translate,
)
from istiod_lite.translate.peer_authentication import (
    STATIC_STRICT_NAME,
    convert_port_level,
    workload_policy_names,
)
from istiod_lite.translate.services import app_protocol
from istiod_lite.translate.workloads import canonical_name_revision, workload_name
from meshcore.model import ClusterModel, PeerAuthentication, Pod, ServicePort, parse_object
from meshcore.protos.istio.workload import AppProtocol

MESH = MeshConfig()


def make_pod(name: str = "p-abc", *, generate_name: str = "", labels: dict | None = None,
             owner: tuple[str, str] | None = None, ns: str = "shop") -> Pod:
    meta: dict = {"name": name, "namespace": ns, "labels": labels or {}}
    if generate_name:
        meta["generateName"] = generate_name
    if owner:
        meta["ownerReferences"] = [{"apiVersion": "v1", "kind": owner[0], "name": owner[1],
                                    "controller": True}]
    pod = parse_object({"apiVersion": "v1", "kind": "Pod", "metadata": meta})
    assert isinstance(pod, Pod)
    return pod


WORKLOAD_NAMES = [
    pytest.param(make_pod("solo"), "solo", id="bare-pod"),
    pytest.param(make_pod("web-5d-x", generate_name="web-5d-", labels={"pod-template-hash": "5d"},
                          owner=("ReplicaSet", "web-5d")), "web", id="deployment"),
    pytest.param(make_pod("rs-x", generate_name="rs-", owner=("ReplicaSet", "rs")), "rs",
                 id="bare-replicaset"),
    pytest.param(make_pod("ro-7f-x", generate_name="ro-7f-",
                          labels={"rollouts-pod-template-hash": "7f"},
                          owner=("ReplicaSet", "ro-7f")), "ro", id="argo-rollout"),
    pytest.param(make_pod("job-x", generate_name="job-", owner=("Job", "job")), "job",
                 id="job"),
    pytest.param(make_pod("cj-x", generate_name="cj-12345678-",
                          owner=("Job", "cj-12345678")), "cj", id="cronjob"),
    pytest.param(make_pod("dc-1-x", generate_name="dc-1-", labels={"deploymentconfig": "dc"},
                          owner=("ReplicationController", "dc-1")), "dc",
                 id="openshift-deploymentconfig"),
    pytest.param(make_pod("named", owner=("ReplicaSet", "rs")), "named",
                 id="no-generate-name-ignores-owner"),
    pytest.param(make_pod("o", generate_name="o-", owner=("ReplicaSet", "rs"),
                          labels={"service.istio.io/workload-name": "override"}), "override",
                 id="label-override"),
]


@pytest.mark.parametrize(("pod", "expected"), WORKLOAD_NAMES)
def test_workload_name_heuristics(pod: Pod, expected: str) -> None:
    """Workload names follow istiod's owner-reference heuristics and label override."""
    assert workload_name(pod) == expected


def test_canonical_label_precedence() -> None:
    """canonical-name > app.kubernetes.io/name > app > workload name; revision likewise."""
    assert canonical_name_revision({}, "wl") == ("wl", "latest")
    assert canonical_name_revision({"app": "a", "version": "v2"}, "wl") == ("a", "v2")
    assert canonical_name_revision(
        {"app": "a", "app.kubernetes.io/name": "b", "app.kubernetes.io/version": "3",
         "version": "v2"}, "wl") == ("b", "3")
    assert canonical_name_revision(
        {"app.kubernetes.io/name": "b", "service.istio.io/canonical-name": "c",
         "service.istio.io/canonical-revision": "r"}, "wl") == ("c", "r")


PROTOCOLS = [
    pytest.param(ServicePort(80, 80, name="http"), AppProtocol.HTTP11, id="http"),
    pytest.param(ServicePort(80, 80, name="http-web"), AppProtocol.HTTP11, id="http-prefix"),
    pytest.param(ServicePort(80, 80, name="http2"), AppProtocol.HTTP2, id="http2"),
    pytest.param(ServicePort(80, 80, name="grpc-api"), AppProtocol.GRPC, id="grpc"),
    pytest.param(ServicePort(80, 80, name="grpc-web"), AppProtocol.UNKNOWN, id="grpc-web"),
    pytest.param(ServicePort(80, 80, name="x", app_protocol="kubernetes.io/h2c"),
                 AppProtocol.HTTP2, id="h2c"),
    pytest.param(ServicePort(80, 80, name="http", app_protocol="tcp"), AppProtocol.TCP,
                 id="appProtocol-beats-name"),
    pytest.param(ServicePort(443, 443, name="https"), AppProtocol.TLS, id="https"),
    pytest.param(ServicePort(53, 53, name="dns", protocol="UDP"), AppProtocol.UNKNOWN,
                 id="udp"),
    pytest.param(ServicePort(6379, 6379, name="redis"), AppProtocol.UNKNOWN, id="redis"),
]


@pytest.mark.parametrize(("port", "expected"), PROTOCOLS)
def test_app_protocol(port: ServicePort, expected: AppProtocol) -> None:
    """App protocol comes from appProtocol, else the port-name prefix, like istiod."""
    assert app_protocol(port) == expected


def pa(name: str, ns: str, mode: str | None = None, selector: dict | None = None,
       ports: dict | None = None) -> PeerAuthentication:
    spec: dict = {}
    if mode:
        spec["mtls"] = {"mode": mode}
    if selector:
        spec["selector"] = {"matchLabels": selector}
    if ports:
        spec["portLevelMtls"] = {str(k): {"mode": v} for k, v in ports.items()}
    obj = parse_object({"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
                        "metadata": {"name": name, "namespace": ns}, "spec": spec})
    assert isinstance(obj, PeerAuthentication)
    return obj


STRICT_REF = f"istio-system/{STATIC_STRICT_NAME}"
POD = make_pod("app-1", labels={"app": "app"})
SEL = {"app": "app"}
PA_CASES = [
    pytest.param([], [], id="nothing"),
    pytest.param([pa("m", "istio-system", "STRICT")], [STRICT_REF], id="mesh-strict"),
    pytest.param([pa("m", "istio-system", "PERMISSIVE")], [], id="mesh-permissive"),
    pytest.param([pa("m", "istio-system", "STRICT"), pa("n", "shop", "UNSET")], [STRICT_REF],
                 id="namespace-unset-inherits"),
    pytest.param([pa("m", "istio-system", "STRICT"), pa("n", "shop", "DISABLE")], [],
                 id="namespace-disable-overrides"),
    pytest.param([pa("n", "shop", "PERMISSIVE"), pa("w", "shop", "STRICT", SEL)], [STRICT_REF],
                 id="workload-strict"),
    pytest.param([pa("n", "shop", "STRICT"), pa("w", "shop", "PERMISSIVE", SEL)], [],
                 id="workload-permissive"),
    pytest.param([pa("n", "shop", "STRICT"), pa("w", "shop", "STRICT", {"app": "other"})],
                 [STRICT_REF], id="workload-selector-not-matching"),
    pytest.param([pa("w", "shop", "STRICT", SEL, {8080: "PERMISSIVE"})],
                 ["shop/converted_peer_authentication_w"], id="strict-with-permissive-port"),
    pytest.param([pa("w", "shop", "STRICT", SEL, {8080: "STRICT"})], [STRICT_REF],
                 id="strict-with-strict-port"),
    pytest.param([pa("w", "shop", "PERMISSIVE", SEL, {8080: "STRICT"})],
                 ["shop/converted_peer_authentication_w"], id="permissive-with-strict-port"),
    pytest.param([pa("n", "shop", "STRICT"), pa("w", "shop", None, SEL, {8080: "PERMISSIVE"})],
                 ["shop/converted_peer_authentication_w"], id="unset-under-strict-port-exception"),
    pytest.param([pa("m", "istio-system", "STRICT"),
                  pa("w", "shop", "PERMISSIVE", SEL, {8080: "STRICT"})],
                 ["shop/converted_peer_authentication_w"], id="permissive-strict-port-strict-mesh"),
    pytest.param([pa("w", "shop", None, SEL, {8080: "STRICT"})],
                 ["shop/converted_peer_authentication_w"], id="unset-under-permissive-strict-port"),
]


@pytest.mark.parametrize(("pas", "expected"), PA_CASES)
def test_peer_authentication_references(pas: list[PeerAuthentication], expected: list[str]
                                        ) -> None:
    """Workloads reference the static STRICT policy or the converted port-level one."""
    assert workload_policy_names(POD, pas, MESH) == expected


def test_every_referenced_converted_policy_is_sent() -> None:
    """Whenever a workload references a converted policy, translate() emits it."""
    for param in PA_CASES:
        pas, _ = param.values
        pod = parse_object({"apiVersion": "v1", "kind": "Pod", "metadata": {
            "name": "app-1", "namespace": "shop", "labels": {"app": "app"}},
            "status": {"podIP": "10.0.0.1"}})
        res = translate(ClusterModel.from_objects([*pas, pod]))
        workload = res.addresses["Kubernetes//Pod/shop/app-1"].workload
        for name in workload.authorization_policies:
            assert name in res.authorizations, (param.id, name)
        assert (STRICT_REF in res.authorizations) == bool(pas)


def test_port_level_conversion_shapes() -> None:
    """A STRICT port under a permissive workload denies plaintext on that port only."""
    converted = convert_port_level(pa("w", "shop", "PERMISSIVE", SEL, {9443: "STRICT"}),
                                   None, None, MESH)
    assert converted is not None
    (group,) = converted.groups
    (rules,) = group.rules
    (match,) = rules.matches
    assert match.destination_ports == [9443] and len(match.not_principals) == 1
    assert convert_port_level(pa("w", "shop", "STRICT", SEL, {9443: "STRICT"}), None, None,
                              MESH) is None
    assert convert_port_level(pa("n", "shop", "STRICT"), None, None, MESH) is None


def test_resource_set_by_type_url() -> None:
    """The ResourceSet serves the ztunnel and waypoint type URLs and rejects others."""
    res = translate(ClusterModel())
    assert set(res.by_type_url) == {
        ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL,
        "type.googleapis.com/ambient.waypoint.v1.RouteConfiguration",
        "type.googleapis.com/ambient.waypoint.v1.L7Authorization",
    }
    assert res.resources(ADDRESS_TYPE_URL) == {}
    with pytest.raises(KeyError):
        res.resources("type.googleapis.com/envoy.config.cluster.v3.Cluster")


def test_dry_run_policies_are_sent_only_when_enabled() -> None:
    """A dry-run policy is withheld by default and sent with dry_run when enabled."""
    pol = parse_object({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                        "metadata": {"name": "t", "namespace": "shop",
                                     "annotations": {"istio.io/dry-run": "true"}},
                        "spec": {"action": "DENY", "rules": [{}]}})
    model = ClusterModel.from_objects([pol])
    default = translate(model)
    assert "shop/t" not in default.authorizations
    assert [s.reason for s in default.statuses] == ["UnsupportedValue"]
    enabled = translate(model, MeshConfig(enable_dry_run=True))
    assert enabled.authorizations["shop/t"].dry_run is True
    assert enabled.statuses == ()

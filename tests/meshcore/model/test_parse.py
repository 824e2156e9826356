"""Tests for the single parse gate: typed objects out, or errors naming kind, object and field."""

from __future__ import annotations

import pytest

from meshcore.model import (
    AuthorizationPolicy,
    Gateway,
    HTTPRoute,
    InvalidObjectError,
    PeerAuthentication,
    Pod,
    Service,
    parse_object,
    thaw,
)


def obj(kind: str, spec: dict | None = None, *, api: str = "", name: str = "x",
        namespace: str | None = "shop", **extra) -> dict:
    apis = {"AuthorizationPolicy": "security.istio.io/v1",
            "PeerAuthentication": "security.istio.io/v1",
            "Gateway": "gateway.networking.k8s.io/v1",
            "HTTPRoute": "gateway.networking.k8s.io/v1",
            "EndpointSlice": "discovery.k8s.io/v1"}
    meta: dict = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    doc = {"apiVersion": api or apis.get(kind, "v1"), "kind": kind, "metadata": meta}
    if spec is not None:
        doc["spec"] = spec
    doc.update(extra)
    return doc


def test_error_message_names_kind_object_and_field() -> None:
    """The error reads `Kind ns/name: field: message` and carries each part."""
    with pytest.raises(InvalidObjectError) as e:
        parse_object(obj("AuthorizationPolicy", {"action": "ALLOWW"}, name="deny-all"))
    err = e.value
    assert str(err) == ('AuthorizationPolicy shop/deny-all: spec.action: unknown value "ALLOWW" '
                        "(expected ALLOW, DENY, AUDIT, CUSTOM)")
    assert (err.kind, err.namespace, err.name, err.field) == (
        "AuthorizationPolicy", "shop", "deny-all", "spec.action")


BAD = [
    pytest.param(obj("Service", {"ports": [{"port": 80}, {"port": 80, "name": "b"}]}),
                 "spec.ports[1].port", id="service-duplicate-port"),
    pytest.param(obj("Service", {"ports": [{"port": 80, "name": "a"}, {"port": 81, "name": "a"}]}),
                 "spec.ports[1].name", id="service-duplicate-port-name"),
    pytest.param(obj("Service", {"ports": [{"port": 80}, {"port": 81}]}),
                 "spec.ports[0].name", id="service-multi-port-unnamed"),
    pytest.param(obj("Service", {"ports": [{"port": 70000}]}), "spec.ports[0].port",
                 id="service-port-range"),
    pytest.param(obj("Service", {"type": "Weird"}), "spec.type", id="service-type"),
    pytest.param(obj("Service", {"clusterIP": "nope"}), "spec.clusterIP", id="service-vip"),
    pytest.param(obj("Pod", {}, status={"podIP": "10.0.0.300"}), "status.podIP",
                 id="pod-bad-ip"),
    pytest.param(obj("Pod", {"containers": [{"name": "c", "ports": [{"containerPort": "x"}]}]}),
                 "spec.containers[0].ports[0].containerPort", id="pod-port-type"),
    pytest.param(obj("Pod", {"hostNetwork": "yes"}), "spec.hostNetwork", id="pod-bool"),
    pytest.param(obj("Pod", {}, name="Bad_Name"), "metadata.name", id="bad-name"),
    pytest.param(obj("Pod", {}, name=""), "metadata.name", id="missing-name"),
    pytest.param(obj("Pod", {}, api="apps/v1"), "apiVersion", id="wrong-api-group"),
    pytest.param(obj("ConfigMap", {}), "kind", id="unsupported-kind"),
    pytest.param(obj("Pod", {}, metadata={"name": "p", "namespace": 7}), "metadata.namespace",
                 id="namespace-type"),
    pytest.param({"metadata": {"name": "x"}}, "kind", id="missing-kind"),
    pytest.param(obj("AuthorizationPolicy", {"rules": [{"from": [{"source": {"ipBlocks": [
        "10.0.0.0/33"]}}]}]}), "spec.rules[0].from[0].source.ipBlocks[0]", id="ap-cidr"),
    pytest.param(obj("AuthorizationPolicy", {"rules": [{"to": [{"operation": {"ports": [
        "http"]}}]}]}), "spec.rules[0].to[0].operation.ports[0]", id="ap-port"),
    pytest.param(obj("AuthorizationPolicy", {"rules": [{"to": [{"operation": {"method": [
        "GET"]}}]}]}), "spec.rules[0].to[0].operation.method", id="ap-unknown-field"),
    pytest.param(obj("AuthorizationPolicy", {"rules": [{"when": [{"key": "source.ip"}]}]}),
                 "spec.rules[0].when[0]", id="ap-when-no-values"),
    pytest.param(obj("AuthorizationPolicy", {"rules": [{"when": [
        {"key": "destination.port", "values": ["x"]}]}]}), "spec.rules[0].when[0].values[0]",
        id="ap-when-port"),
    pytest.param(obj("AuthorizationPolicy", {"selector": {"matchLabels": {"a": "b"}},
                                             "targetRefs": [{"kind": "Service", "name": "s"}]}),
                 "spec.selector", id="ap-selector-and-targetref"),
    pytest.param(obj("AuthorizationPolicy", {"action": "CUSTOM"}), "spec.provider.name",
                 id="ap-custom-without-provider"),
    pytest.param(obj("AuthorizationPolicy", {"rules": {"from": []}}), "spec.rules",
                 id="ap-rules-not-list"),
    pytest.param(obj("PeerAuthentication", {"mtls": {"mode": "STRICTER"}}), "spec.mtls.mode",
                 id="pa-mode"),
    pytest.param(obj("PeerAuthentication", {"portLevelMtls": {"80": {"mode": "STRICT"}}}),
                 "spec.portLevelMtls", id="pa-port-level-needs-selector"),
    pytest.param(obj("Gateway", {"listeners": []}), "spec.gatewayClassName",
                 id="gateway-class"),
    pytest.param(obj("Gateway", {"gatewayClassName": "istio-waypoint"},
                     metadata={"name": "w", "namespace": "s",
                               "labels": {"istio.io/waypoint-for": "pods"}}),
                 'metadata.labels["istio.io/waypoint-for"]', id="gateway-waypoint-for"),
    pytest.param(obj("HTTPRoute", {"rules": [{"matches": [{"path": {"type": "Glob"}}]}]}),
                 "spec.rules[0].matches[0].path.type", id="route-path-type"),
    pytest.param(obj("HTTPRoute", {"rules": [{"backendRefs": [{"name": "svc"}]}]}),
                 "spec.rules[0].backendRefs[0].port", id="route-backend-port"),
    pytest.param(obj("HTTPRoute", {"rules": [{"filters": [{"type": "Teleport"}]}]}),
                 "spec.rules[0].filters[0].type", id="route-filter-type"),
    pytest.param(obj("EndpointSlice", None, addressType="IPv4",
                     endpoints=[{"addresses": ["nope"]}]), "endpoints[0].addresses[0]",
                 id="endpointslice-address"),
]


@pytest.mark.parametrize(("doc", "field"), BAD)
def test_invalid_objects_are_rejected_with_the_field(doc: dict, field: str) -> None:
    """Each malformed or unsupported object raises InvalidObjectError naming the field."""
    with pytest.raises(InvalidObjectError) as e:
        parse_object(doc)
    assert e.value.field == field
    assert field in str(e.value)


def test_namespace_defaults_and_cluster_scope() -> None:
    """Namespaced objects default to `default`; cluster-scoped kinds have no namespace."""
    assert parse_object(obj("Pod", {}, namespace=None)).key == ("default", "x")
    assert parse_object(obj("Pod", {}, namespace=None), default_namespace="ns2").namespace == "ns2"
    assert parse_object(obj("Namespace", None, namespace="ignored")).key == ("", "x")


def test_pod_fields() -> None:
    """Pod parsing keeps node, service account, IPs (podIP first), readiness and ports."""
    pod = parse_object(obj("Pod", {
        "nodeName": "n1", "serviceAccountName": "sa",
        "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}]},
        status={"podIP": "10.0.0.1", "podIPs": [{"ip": "10.0.0.1"}, {"ip": "fd00::1"}],
                "phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}))
    assert isinstance(pod, Pod)
    assert (pod.node_name, pod.service_account, pod.pod_ips, pod.ready) == (
        "n1", "sa", ("10.0.0.1", "fd00::1"), True)
    assert pod.find_port("http") == 8080 and pod.find_port("grpc") is None
    bare = parse_object(obj("Pod", {}))
    assert isinstance(bare, Pod)
    assert (bare.service_account, bare.pod_ips, bare.ready) == ("default", (), False)


def test_service_fields() -> None:
    """Services keep VIPs (not `None`), named/numeric target ports and selector presence."""
    svc = parse_object(obj("Service", {"clusterIP": "None", "ports": [
        {"name": "http", "port": 80, "targetPort": "web"},
        {"name": "raw", "port": 81, "targetPort": "8081"}]}))
    assert isinstance(svc, Service)
    assert svc.headless and svc.cluster_ips == () and svc.selector is None
    assert [p.target_port for p in svc.ports] == ["web", 8081]


def test_authorization_policy_fields() -> None:
    """AuthorizationPolicy keeps scope inputs, action and every rule part."""
    ap = parse_object(obj("AuthorizationPolicy", {
        "selector": {"matchLabels": {"app": "web"}}, "action": "DENY",
        "rules": [{"from": [{"source": {"principals": ["a"], "ipBlocks": ["10.0.0.1"]}}],
                   "to": [{"operation": {"ports": ["80"], "methods": ["GET"]}}],
                   "when": [{"key": "request.auth.claims[iss]", "values": ["x"]}]}]}))
    assert isinstance(ap, AuthorizationPolicy)
    rule = ap.rules[0]
    assert (ap.action, dict(ap.selector or {})) == ("DENY", {"app": "web"})
    assert rule.from_[0].principals == ("a",) and rule.from_[0].ip_blocks == ("10.0.0.1",)
    assert rule.to[0].ports == ("80",) and rule.to[0].methods == ("GET",)
    assert rule.when[0].key == "request.auth.claims[iss]"
    single = parse_object(obj("AuthorizationPolicy", {"targetRef": {"kind": "Gateway",
                                                                     "name": "wp"}}))
    assert isinstance(single, AuthorizationPolicy) and single.target_refs[0].name == "wp"


def test_peer_authentication_fields() -> None:
    """PeerAuthentication keeps mode and port-level modes sorted by port."""
    pa = parse_object(obj("PeerAuthentication", {
        "selector": {"matchLabels": {"app": "a"}}, "mtls": {"mode": "STRICT"},
        "portLevelMtls": {"9090": {"mode": "PERMISSIVE"}, 8080: {"mode": "DISABLE"}}}))
    assert isinstance(pa, PeerAuthentication)
    assert pa.mode == "STRICT"
    assert pa.port_level_mtls == ((8080, "DISABLE"), (9090, "PERMISSIVE"))
    assert parse_object(obj("PeerAuthentication", {})).mode == "UNSET"  # type: ignore[attr-defined]


def test_gateway_fields() -> None:
    """A waypoint Gateway exposes class, listeners, waypoint-for and status addresses."""
    gw = parse_object(obj("Gateway", {"gatewayClassName": "istio-waypoint", "listeners": [
        {"name": "mesh", "port": 15008, "protocol": "HBONE"}]},
        status={"addresses": [{"type": "Hostname", "value": "w.shop.svc.cluster.local"},
                              {"value": "10.0.0.9"}]}))
    assert isinstance(gw, Gateway)
    assert gw.is_waypoint and gw.waypoint_for == "service"
    assert gw.listeners[0].port == 15008
    assert gw.status_addresses == (("Hostname", "w.shop.svc.cluster.local"),
                                   ("IPAddress", "10.0.0.9"))


def test_http_route_typed_with_defaults_and_round_trip() -> None:
    """HTTPRoute rules are typed with CRD defaults applied, and the raw spec round-trips."""
    spec = {
        "parentRefs": [{"group": "", "kind": "Service", "name": "reviews", "port": 9080}],
        "hostnames": ["reviews"],
        "rules": [
            {"matches": [{"path": {"type": "Exact", "value": "/a"},
                          "headers": [{"name": "x-user", "value": "jason"}],
                          "queryParams": [{"name": "q", "value": "1",
                                           "type": "RegularExpression"}],
                          "method": "GET"}],
             "filters": [{"type": "RequestHeaderModifier",
                          "requestHeaderModifier": {"set": [{"name": "a", "value": "b"}]}}],
             "backendRefs": [{"name": "reviews-v2", "port": 9080, "weight": 90},
                             {"name": "reviews-v3", "port": 9080}],
             "timeouts": {"request": "5s"}},
            {"backendRefs": [{"name": "reviews-v1", "port": 9080}]},
        ],
    }
    route = parse_object(obj("HTTPRoute", spec))
    assert isinstance(route, HTTPRoute)
    first, second = route.rules
    assert route.parent_refs[0].kind == "Service" and route.parent_refs[0].port == 9080
    assert first.matches[0].path is not None and first.matches[0].path.type == "Exact"
    assert first.matches[0].headers[0].type == "Exact"
    assert first.matches[0].query_params[0].type == "RegularExpression"
    assert first.matches[0].method == "GET"
    assert first.filters[0].type == "RequestHeaderModifier"
    assert thaw(first.filters[0].config) == {"set": [{"name": "a", "value": "b"}]}
    assert [(b.name, b.weight, b.kind) for b in first.backend_refs] == [
        ("reviews-v2", 90, "Service"), ("reviews-v3", 1, "Service")]
    assert dict(first.timeouts) == {"request": "5s"}
    assert second.matches[0].path is not None
    assert (second.matches[0].path.type, second.matches[0].path.value) == ("PathPrefix", "/")
    assert thaw(route.raw_spec) == spec


def test_objects_are_immutable() -> None:
    """Model objects and their maps cannot be changed after parsing."""
    pod = parse_object(obj("Pod", {}, metadata={"name": "p", "namespace": "s",
                                                "labels": {"a": "b"}}))
    with pytest.raises(AttributeError):
        pod.meta = None  # type: ignore[misc]
    with pytest.raises(TypeError):
        pod.labels["a"] = "c"  # type: ignore[index]

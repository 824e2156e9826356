"""Istio traffic labels: builders fill every label (unknown when missing) from ztunnel's sources."""

import dataclasses

import pytest

from meshcore.identity import SpiffeId
from meshcore.telemetry.baggage import format_baggage, parse_baggage
from meshcore.telemetry.labels import (
    LABEL_ORDER,
    OVERFLOW,
    UNKNOWN,
    PeerMetadata,
    Protocol,
    Reporter,
    ResponseFlags,
    TrafficLabels,
    traffic_labels,
)
from meshcore.wds.workload import Locality, Service, Workload, WorkloadType

TCP_LABELS = [
    "reporter", "source_workload", "source_canonical_service", "source_canonical_revision",
    "source_workload_namespace", "source_principal", "source_app", "source_version",
    "source_cluster", "destination_service", "destination_service_namespace",
    "destination_service_name", "destination_workload", "destination_canonical_service",
    "destination_canonical_revision", "destination_workload_namespace",
    "destination_principal", "destination_app", "destination_version", "destination_cluster",
    "request_protocol", "response_flags", "connection_security_policy",
]

SLEEP = Workload(
    uid="Kubernetes//Pod/shop/sleep-1", name="sleep-7656cf8794-abcde", namespace="shop",
    identity=SpiffeId("cluster.local", "shop", "sleep"), workload_name="sleep",
    canonical_name="sleep", canonical_revision="v1", cluster_id="Kubernetes",
)
ECHO = Workload(
    uid="Kubernetes//Pod/db/echo-1", name="echo-5d9c-xyz", namespace="db",
    identity=SpiffeId("cluster.local", "db", "echo"), workload_name="echo",
    canonical_name="echo", canonical_revision="v2", cluster_id="Kubernetes",
)
ECHO_SVC = Service(name="echo", namespace="db", hostname="echo.db.svc.cluster.local")


def test_empty_builder_has_every_tcp_label_unknown() -> None:
    """With nothing known, every Istio TCP label is present and `unknown` (flags `-`)."""
    labels = traffic_labels(reporter=Reporter.DESTINATION)
    pairs = dict(labels)
    assert list(pairs) == TCP_LABELS
    assert pairs["reporter"] == "destination"
    assert pairs["request_protocol"] == "tcp"
    assert pairs["response_flags"] == "-"
    assert pairs["connection_security_policy"] == "unknown"
    others = set(TCP_LABELS) - {"reporter", "request_protocol", "response_flags",
                                "connection_security_policy"}
    assert {pairs[k] for k in others} == {UNKNOWN}


def test_outbound_labels_from_workloads_service_and_own_identity() -> None:
    """Outbound: source from the Workload, principal = our identity, destination from WDS."""
    labels = traffic_labels(
        reporter=Reporter.SOURCE, source=SLEEP, destination=ECHO,
        destination_service=ECHO_SVC, source_identity=SLEEP.identity, mtls=True,
    )
    assert dict(labels) == {
        "reporter": "source",
        "source_workload": "sleep",
        "source_canonical_service": "sleep",
        "source_canonical_revision": "v1",
        "source_workload_namespace": "shop",
        "source_principal": "spiffe://cluster.local/ns/shop/sa/sleep",
        "source_app": "sleep",
        "source_version": "v1",
        "source_cluster": "Kubernetes",
        "destination_service": "echo.db.svc.cluster.local",
        "destination_service_namespace": "db",
        "destination_service_name": "echo",
        "destination_workload": "echo",
        "destination_canonical_service": "echo",
        "destination_canonical_revision": "v2",
        "destination_workload_namespace": "db",
        "destination_principal": "spiffe://cluster.local/ns/db/sa/echo",
        "destination_app": "echo",
        "destination_version": "v2",
        "destination_cluster": "Kubernetes",
        "request_protocol": "tcp",
        "response_flags": "-",
        "connection_security_policy": "mutual_tls",
    }


def test_source_principal_never_comes_from_the_workload() -> None:
    """A known source Workload without a proven identity leaves source_principal unknown."""
    labels = traffic_labels(reporter=Reporter.DESTINATION, source=SLEEP, destination=ECHO)
    assert labels.source_workload == "sleep"
    assert labels.source_principal == UNKNOWN
    assert labels.destination_principal == "spiffe://cluster.local/ns/db/sa/echo"


def test_empty_workload_fields_become_unknown() -> None:
    """A Workload with no canonical name/revision/cluster yields `unknown`, never ''."""
    bare = Workload(uid="u", name="p", namespace="ns", identity=SpiffeId.for_workload("ns"))
    labels = traffic_labels(reporter=Reporter.DESTINATION, destination=bare)
    assert labels.destination_workload == UNKNOWN
    assert labels.destination_app == UNKNOWN
    assert labels.destination_cluster == UNKNOWN
    assert labels.destination_workload_namespace == "ns"
    assert labels.destination_principal == "spiffe://cluster.local/ns/ns/sa/default"


def test_peer_baggage_fills_source_when_the_workload_is_unknown() -> None:
    """Inbound without a source Workload: the peer's baggage provides the source labels."""
    peer = parse_baggage(format_baggage(SLEEP))
    labels = traffic_labels(reporter=Reporter.DESTINATION, peer=peer,
                            source_identity=SLEEP.identity, mtls=True)
    assert (labels.source_workload, labels.source_workload_namespace,
            labels.source_canonical_service, labels.source_canonical_revision,
            labels.source_app, labels.source_version, labels.source_cluster) == (
        "sleep", "shop", "sleep", "v1", "sleep", "v1", "Kubernetes")


def test_workload_wins_over_baggage() -> None:
    """When both are known, the looked-up Workload overrides what the peer claims."""
    peer = PeerMetadata(namespace="evil", workload_name="liar", canonical_service="liar")
    labels = traffic_labels(reporter=Reporter.DESTINATION, source=SLEEP, peer=peer)
    assert labels.source_workload_namespace == "shop"
    assert labels.source_workload == "sleep"


def test_locality_group_only_when_known() -> None:
    """The four locality labels appear together, and only when some locality is known."""
    assert "source_region" not in dict(traffic_labels(reporter="source", source=SLEEP))
    zoned = dataclasses.replace(SLEEP, locality=Locality(region="eu", zone="eu-1"))
    pairs = dict(traffic_labels(reporter="source", source=zoned, destination=ECHO))
    assert [pairs[k] for k in ("source_region", "source_zone", "destination_region",
                               "destination_zone")] == ["eu", "eu-1", UNKNOWN, UNKNOWN]


def test_http_labels_and_outcome() -> None:
    """Waypoint labels carry response_code and grpc_response_status; with_outcome sets them."""
    labels = traffic_labels(reporter=Reporter.WAYPOINT, request_protocol=Protocol.GRPC,
                            mtls=True)
    assert labels.response_code == "0" and labels.grpc_response_status == ""
    done = labels.with_outcome(ResponseFlags.NO_ROUTE, 404, 5)
    assert (done.response_flags, done.response_code, done.grpc_response_status) == (
        "NR", "404", "5")
    assert done.is_failure and not labels.is_failure
    assert list(dict(done)) == [k for k in LABEL_ORDER if k in dict(done)]


def test_overflow_keeps_bounded_labels_only() -> None:
    """The overflow form keeps reporter/protocol/code/flags/security; the rest read overflow."""
    labels = traffic_labels(reporter="waypoint", source=SLEEP, destination=ECHO,
                            request_protocol="http", mtls=True).with_outcome("-", 503)
    over = dict(labels.overflowed())
    assert over["reporter"] == "waypoint"
    assert over["response_code"] == "503"
    assert over["connection_security_policy"] == "mutual_tls"
    assert over["source_workload"] == OVERFLOW
    assert over["destination_principal"] == OVERFLOW


def test_labels_are_hashable_values() -> None:
    """Equal label sets are equal and hash alike (the cardinality cap relies on it)."""
    a = traffic_labels(reporter="source", source=SLEEP)
    b = traffic_labels(reporter="source", source=SLEEP)
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a.attributes == dict(b)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param("", PeerMetadata(), id="empty"),
        pytest.param("k8s.namespace.name=shop,k8s.job.name=nightly",
                     PeerMetadata(namespace="shop", workload_name="nightly",
                                  workload_kind="job"), id="job"),
        pytest.param("service.name=a%20b;prop=1, junk ,other.key=x,cloud.region=eu",
                     PeerMetadata(canonical_service="a b", region="eu"),
                     id="properties-junk-unknown-keys"),
    ],
)
def test_parse_baggage(header: str, expected: PeerMetadata) -> None:
    """Known baggage members are read; properties, junk and unknown keys are ignored."""
    assert parse_baggage(header) == expected


def test_format_baggage_omits_empty_values() -> None:
    """ztunnel's baggage omits empty values and names the workload by its kind."""
    pod = dataclasses.replace(SLEEP, workload_type=WorkloadType.POD, cluster_id="",
                              canonical_revision="")
    assert format_baggage(pod) == (
        "k8s.namespace.name=shop,k8s.pod.name=sleep,service.name=sleep")


def test_traffic_labels_type_is_frozen() -> None:
    """Labels cannot be changed after building (they key aggregation state)."""
    labels = TrafficLabels(reporter="source")
    with pytest.raises(dataclasses.FrozenInstanceError):
        labels.reporter = "destination"  # type: ignore[misc]

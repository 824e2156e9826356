"""MeshMetrics: Istio's instruments, live connection bytes, caps, and the exposition they give."""

import dataclasses

import pytest

from meshcore.identity import SpiffeId
from meshcore.telemetry.labels import ResponseFlags, traffic_labels
from meshcore.telemetry.metrics import ISTIO_BUCKETS, MeshMetrics, XdsTermination
from meshcore.wds.workload import Workload

from .scrape import parse, series
from .test_labels import ECHO, ECHO_SVC, SLEEP

OUTBOUND = traffic_labels(reporter="source", source=SLEEP, destination=ECHO,
                          destination_service=ECHO_SVC, source_identity=SLEEP.identity,
                          mtls=True)
OUTBOUND_LINE = (
    'istio_tcp_connections_opened_total{reporter="source",source_workload="sleep",'
    'source_canonical_service="sleep",source_canonical_revision="v1",'
    'source_workload_namespace="shop",'
    'source_principal="spiffe://cluster.local/ns/shop/sa/sleep",source_app="sleep",'
    'source_version="v1",source_cluster="Kubernetes",'
    'destination_service="echo.db.svc.cluster.local",destination_service_namespace="db",'
    'destination_service_name="echo",destination_workload="echo",'
    'destination_canonical_service="echo",destination_canonical_revision="v2",'
    'destination_workload_namespace="db",'
    'destination_principal="spiffe://cluster.local/ns/db/sa/echo",destination_app="echo",'
    'destination_version="v2",destination_cluster="Kubernetes",request_protocol="tcp",'
    'response_flags="-",connection_security_policy="mutual_tls"} 1'
)


def test_open_connection_exact_exposition_line() -> None:
    """One opened connection renders as exactly Istio's counter line, labels in Istio order."""
    metrics = MeshMetrics("ztunnel")
    metrics.tcp.open(OUTBOUND)
    lines = metrics.render().splitlines()
    assert "# TYPE istio_tcp_connections_opened_total counter" in lines
    assert OUTBOUND_LINE in lines


def test_connection_lifecycle_counts_live_bytes_and_failure() -> None:
    """Bytes show at a scrape while open; close counts closed (+failed for a failure flag)."""
    metrics = MeshMetrics("ztunnel")
    conn = metrics.tcp.open(OUTBOUND)
    conn.add_bytes(client_to_server=100)
    conn.add_bytes(client_to_server=20, server_to_client=7)
    samples, types = parse(metrics.render())
    assert series(samples, "istio_tcp_received_bytes_total", reporter="source") == {
        frozenset(OUTBOUND): "120"}
    assert series(samples, "istio_tcp_sent_bytes_total") == {frozenset(OUTBOUND): "7"}
    assert series(samples, "istio_tcp_connections_closed_total") == {}

    conn.add_bytes(server_to_client=3)
    final = conn.close(ResponseFlags.CONNECT)
    assert conn.close("-") is final  # idempotent: the first close counts
    samples, types = parse(metrics.render())
    assert series(samples, "istio_tcp_sent_bytes_total") == {frozenset(OUTBOUND): "10"}
    closed = series(samples, "istio_tcp_connections_closed_total")
    assert closed == {frozenset(final): "1"}
    assert dict(final)["response_flags"] == "CONNECT"
    assert series(samples, "istio_tcp_connections_failed_total") == {frozenset(final): "1"}
    assert series(samples, "istio_tcp_connections_opened_total") == {frozenset(OUTBOUND): "1"}
    assert (conn.client_to_server, conn.server_to_client) == (120, 10)
    assert types["istio_tcp_connections_failed_total"] == "counter"
    assert metrics.tcp.statistics().open_connections == 0


def test_followed_source_is_read_at_each_scrape_and_never_counted_twice() -> None:
    """A recorder following a relay's live totals shows them at every scrape; the final totals
    at close add only what the scrapes had not counted yet."""
    metrics = MeshMetrics("ztunnel")
    conn = metrics.tcp.open(OUTBOUND)
    totals = [0, 0]
    conn.follow(lambda: (totals[0], totals[1]))
    totals[:] = [500, 40]
    samples, _ = parse(metrics.render())
    assert series(samples, "istio_tcp_received_bytes_total") == {frozenset(OUTBOUND): "500"}
    totals[:] = [800, 90]
    samples, _ = parse(metrics.render())
    assert series(samples, "istio_tcp_sent_bytes_total") == {frozenset(OUTBOUND): "90"}
    conn.set_totals(1000, 100)  # what the relay returned when it ended
    final = conn.close()
    samples, _ = parse(metrics.render())
    assert series(samples, "istio_tcp_received_bytes_total") == {frozenset(final): "1000"}
    assert series(samples, "istio_tcp_sent_bytes_total") == {frozenset(final): "100"}


def test_successful_close_is_not_a_failure() -> None:
    """Flags `-` count a close but never a failed connection."""
    metrics = MeshMetrics("ztunnel")
    metrics.tcp.open(OUTBOUND).close()
    samples, _ = parse(metrics.render())
    assert series(samples, "istio_tcp_connections_closed_total", response_flags="-")
    assert series(samples, "istio_tcp_connections_failed_total") == {}


def test_cardinality_cap_maps_new_label_sets_to_overflow() -> None:
    """Past the cap, new label sets aggregate into one overflow set that keeps bounded labels."""
    metrics = MeshMetrics("ztunnel", cardinality_limit=2)
    workloads = [dataclasses.replace(SLEEP, workload_name=f"app{i}") for i in range(5)]
    for w in workloads:
        metrics.tcp.open(traffic_labels(reporter="source", source=w)).close()
    samples, _ = parse(metrics.render())
    opened = series(samples, "istio_tcp_connections_opened_total")
    by_workload = {dict(labels)["source_workload"]: v for labels, v in opened.items()}
    # The two admitted sets' closes take the two... no: opens admitted app0, app1 only.
    assert by_workload == {"app0": "1", "app1": "1", "overflow": "3"}
    overflow = next(lbl for lbl in opened if dict(lbl)["source_workload"] == "overflow")
    assert dict(overflow)["reporter"] == "source"
    assert dict(overflow)["request_protocol"] == "tcp"
    closed = series(samples, "istio_tcp_connections_closed_total")
    assert sum(int(v) for v in closed.values()) == 5
    assert metrics.tcp.statistics().label_sets == 2
    assert metrics.tcp.statistics().overflowed == 3


def test_waypoint_request_metrics_and_histogram_buckets() -> None:
    """Requests count per code; duration/size histograms use Istio's (Envoy's) buckets."""
    metrics = MeshMetrics("waypoint")
    base = traffic_labels(reporter="waypoint", source=SLEEP, destination=ECHO,
                          destination_service=ECHO_SVC, source_identity=SLEEP.identity,
                          request_protocol="http", mtls=True)
    ok = base.with_outcome(response_code=200)
    metrics.http.record(ok, duration_ms=3.0, request_bytes=0, response_bytes=1500)
    metrics.http.record(ok, duration_ms=700.0, request_bytes=10, response_bytes=20)
    metrics.http.record(base.with_outcome("UF", 503), duration_ms=0.2, request_bytes=0,
                        response_bytes=19)
    samples, types = parse(metrics.render())
    assert types["istio_requests_total"] == "counter"
    assert types["istio_request_duration_milliseconds"] == "histogram"
    requests = series(samples, "istio_requests_total")
    assert {dict(k)["response_code"]: v for k, v in requests.items()} == {"200": "2", "503": "1"}
    buckets = series(samples, "istio_request_duration_milliseconds_bucket", response_code="200")
    by_le = {dict(k)["le"]: int(v) for k, v in buckets.items()}
    assert list(by_le) == sorted(by_le, key=lambda le: float(le.replace("+Inf", "inf")))
    assert len(by_le) == len(ISTIO_BUCKETS) + 1
    assert (by_le["1"], by_le["5"], by_le["500"], by_le["1000"], by_le["+Inf"]) == (0, 1, 1, 2, 2)
    assert "3.6e+06" in by_le
    assert series(samples, "istio_request_duration_milliseconds_sum", response_code="200") == {
        frozenset(ok): "703"}
    assert series(samples, "istio_response_bytes_count", response_code="503") == {
        frozenset(base.with_outcome("UF", 503)): "1"}
    assert series(samples, "istio_request_bytes_sum", response_code="200") == {
        frozenset(ok): "10"}


class _Stats:
    def __init__(self) -> None:
        self.active_proxy_count = 3
        self.pending_proxy_count = 1
        self.proxies_started_total = 5
        self.proxies_stopped_total = 2


def test_operational_metrics_exact_lines() -> None:
    """xDS, certificate, build and workload-manager metrics render with ztunnel's names."""
    metrics = MeshMetrics("ztunnel", version="0.1.0")
    url = "type.googleapis.com/istio.workload.Address"
    metrics.xds.message(url, 300)
    metrics.xds.message(url, 200)
    metrics.xds.connection_terminated(XdsTermination.RECONNECT)
    metrics.certificates.fetched()
    metrics.certificates.fetch_failed()
    metrics.certificates.fetch_failed()
    stats = _Stats()
    metrics.watch_workload_manager(lambda: stats)
    lines = set(metrics.render().splitlines())
    for expected in [
        f'istio_xds_message_total{{url="{url}"}} 2',
        f'istio_xds_message_bytes_total{{url="{url}"}} 500',
        'istio_xds_connection_terminations_total{reason="Reconnect"} 1',
        "istio_certificate_fetches_total 1",
        "istio_certificate_fetch_failures_total 2",
        'istio_build{component="ztunnel",tag="0.1.0"} 1',
        "# TYPE workload_manager_active_proxy_count gauge",
        "workload_manager_active_proxy_count 3",
        "workload_manager_pending_proxy_count 1",
        "# TYPE workload_manager_proxies_started_total counter",
        "workload_manager_proxies_started_total 5",
        "workload_manager_proxies_stopped_total 2",
    ]:
        assert expected in lines, expected
    stats.active_proxy_count = 4
    assert "workload_manager_active_proxy_count 4" in metrics.render().splitlines()


def test_every_rendered_family_is_an_istio_name() -> None:
    """After traffic of every kind, each TYPE line names one of the documented families."""
    metrics = MeshMetrics("ztunnel")
    metrics.tcp.open(OUTBOUND).close("DENY")
    metrics.http.record(OUTBOUND.with_outcome(response_code=200), duration_ms=1,
                        request_bytes=1, response_bytes=1)
    _, types = parse(metrics.render())
    assert set(types) == {
        "istio_build", "istio_tcp_connections_opened_total", "istio_tcp_connections_closed_total",
        "istio_tcp_connections_failed_total", "istio_requests_total",
        "istio_request_duration_milliseconds", "istio_request_bytes", "istio_response_bytes",
    }


@pytest.mark.parametrize("limit", [pytest.param(1, id="one"), pytest.param(3, id="three")])
def test_cap_bounds_label_sets_per_instrument(limit: int) -> None:
    """However many workloads, an instrument holds at most limit + overflow series."""
    metrics = MeshMetrics("ztunnel", cardinality_limit=limit)
    for i in range(20):
        w = Workload(uid=f"u{i}", name=f"p{i}", namespace="ns",
                     identity=SpiffeId.for_workload("ns"), workload_name=f"w{i}")
        metrics.tcp.open(traffic_labels(reporter="destination", source=w))
    samples, _ = parse(metrics.render())
    assert len(series(samples, "istio_tcp_connections_opened_total")) == limit + 1


def test_each_instrument_is_aggregated_once() -> None:
    """No instrument matches two views (that would double the cost and the streams)."""
    metrics = MeshMetrics("waypoint")
    metrics.tcp.open(OUTBOUND).close()
    metrics.http.record(OUTBOUND.with_outcome(response_code=200), duration_ms=1,
                        request_bytes=1, response_bytes=1)
    data = metrics.collect()
    assert data is not None
    names = [m.name for rm in data.resource_metrics for sm in rm.scope_metrics
             for m in sm.metrics]
    assert len(names) == len(set(names))

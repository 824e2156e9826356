"""The metrics routes over a real loopback socket, scraped with the stdlib HTTP client."""

import http.client

import pytest
import trio

from meshcore.admin.http import serve_admin
from meshcore.telemetry.metrics import MeshMetrics

from .scrape import parse, series
from .test_metrics import OUTBOUND

pytestmark = pytest.mark.trio


def _get(port: int, path: str) -> tuple[int, str, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.getheader("content-type") or "", resp.read().decode()
    finally:
        conn.close()


async def test_metrics_and_stats_prometheus_serve_live_counts() -> None:
    """/metrics and /stats/prometheus answer text 0.0.4 with the counts recorded so far."""
    metrics = MeshMetrics("ztunnel")
    conn = metrics.tcp.open(OUTBOUND)
    conn.add_bytes(client_to_server=1234)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_admin, metrics.routes(), "127.0.0.1", 0)
        for path in ("/metrics", "/stats/prometheus"):
            status, ctype, body = await trio.to_thread.run_sync(_get, port, path)
            assert status == 200
            assert ctype.startswith("text/plain; version=0.0.4")
            samples, types = parse(body)
            assert types["istio_tcp_received_bytes_total"] == "counter"
            assert series(samples, "istio_tcp_received_bytes_total") == {
                frozenset(OUTBOUND): "1234"}
        conn.close()
        _, _, body = await trio.to_thread.run_sync(_get, port, "/metrics")
        samples, _ = parse(body)
        assert sum(int(v) for v in series(
            samples, "istio_tcp_connections_closed_total").values()) == 1
        nursery.cancel_scope.cancel()

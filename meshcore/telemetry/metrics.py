"""One OpenTelemetry `MeterProvider` per proxy process, its instruments, and `/metrics`.

Called by `ztunnel.app` and `waypoint.app` at start-up: `metrics = MeshMetrics("ztunnel")`,
then `metrics.tcp.open(labels)` in the data path (see `recorders`), `metrics.xds`,
`metrics.certificates`, `metrics.watch_workload_manager(...)` in the control path, and
`metrics.routes()` mounted on the admin server (`meshcore.admin.serve_admin`, port 15020).

The SDK aggregates (cumulative temporality); a pull reader collects at scrape time and
`prometheus.render` writes the text. Instrument names are Istio's Prometheus family names
without suffixes (the renderer adds `_total` to counters): `istio_tcp_connections_opened`
is scraped as `istio_tcp_connections_opened_total`. Histograms use Envoy's default buckets,
which Istio's waypoint reports. The provider is not installed as the OpenTelemetry global:
each `MeshMetrics` is self-contained (tests make as many as they like).

Cardinality: traffic label sets are capped per recorder (`cardinality_limit`, default 2000
distinct label sets; see `recorders.LabelCap`); the SDK's own per-instrument limit is set
above it as a backstop (its overflow series renders as `otel_metric_overflow="true"`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Protocol

from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.sdk.metrics import Counter, MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, MetricsData
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource

from meshcore.admin.http import AdminRequest, AdminResponse, Route
from meshcore.telemetry import prometheus
from meshcore.telemetry.labels import LABEL_ORDER
from meshcore.telemetry.recorders import (
    HttpInstruments,
    RequestRecorder,
    TcpInstruments,
    TcpRecorder,
)

# Envoy's default histogram buckets; Istio's request duration/size histograms use them.
ISTIO_BUCKETS: tuple[float, ...] = (
    0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000,
    300000, 600000, 1800000, 3600000,
)
DEFAULT_CARDINALITY_LIMIT = 2000
METER_NAME = "ambient_py"
HISTOGRAMS = (
    "istio_request_duration_milliseconds", "istio_request_bytes", "istio_response_bytes",
)


class XdsTermination:
    """Values of `istio_xds_connection_terminations_total{reason}` (ztunnel's words)."""

    CONNECTION_ERROR = "ConnectionError"
    ERROR = "Error"
    RECONNECT = "Reconnect"
    COMPLETE = "Complete"


class WorkloadManagerStats(Protocol):
    """What `watch_workload_manager` reads (ztunnel's `WorkloadManagerStatistics` has it)."""

    @property
    def active_proxy_count(self) -> int: ...
    @property
    def pending_proxy_count(self) -> int: ...
    @property
    def proxies_started_total(self) -> int: ...
    @property
    def proxies_stopped_total(self) -> int: ...


class _PullReader(MetricReader):
    """Collects on demand (at scrape) and hands back what the SDK produced."""

    def __init__(self) -> None:
        super().__init__()
        self._last: MetricsData | None = None

    def _receive_metrics(self, metrics_data: MetricsData, timeout_millis: float = 10_000,
                         **kwargs: object) -> None:
        self._last = metrics_data

    def collect_now(self) -> MetricsData | None:
        self._last = None
        self.collect()
        return self._last

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: object) -> None:
        pass


class XdsMetrics:
    """ztunnel's xDS client counters (AMBIENT-INTERNALS §8.1)."""

    def __init__(self, meter: Meter) -> None:
        self._messages = meter.create_counter(
            "istio_xds_message", description="Total number of messages received (unstable)")
        self._bytes = meter.create_counter(
            "istio_xds_message_bytes", unit="By",
            description="Total number of bytes received (unstable)")
        self._terminations = meter.create_counter(
            "istio_xds_connection_terminations",
            description="The total number of completed connections to xds server (unstable)")

    def message(self, type_url: str, nbytes: int) -> None:
        """One xDS response of `type_url` received, `nbytes` long on the wire."""
        self._messages.add(1, {"url": type_url})
        self._bytes.add(nbytes, {"url": type_url})

    def connection_terminated(self, reason: str) -> None:
        """An ADS stream ended; `reason` is one of `XdsTermination`."""
        self._terminations.add(1, {"reason": reason})


class CertificateMetrics:
    """Workload certificate requests to the CA (ambient-py additions; Istio has none)."""

    def __init__(self, meter: Meter) -> None:
        self._fetches = meter.create_counter(
            "istio_certificate_fetches",
            description="Workload certificates obtained from the CA (ambient-py)")
        self._failures = meter.create_counter(
            "istio_certificate_fetch_failures",
            description="Failed workload certificate requests to the CA (ambient-py)")

    def fetched(self) -> None:
        self._fetches.add(1)

    def fetch_failed(self) -> None:
        self._failures.add(1)


class MeshMetrics:
    """A proxy process's metrics: traffic recorders, operational counters, exposition."""

    def __init__(
        self,
        component: str,
        *,
        version: str = "",
        cardinality_limit: int = DEFAULT_CARDINALITY_LIMIT,
    ) -> None:
        self.component = component
        self.version = version
        self._reader = _PullReader()
        backstop = 2 * cardinality_limit + 1000  # admitted sets + their outcomes + overflow
        views = [
            View(instrument_name=name,
                 aggregation=ExplicitBucketHistogramAggregation(ISTIO_BUCKETS),
                 aggregation_cardinality_limit=backstop)
            for name in HISTOGRAMS
        ] + [View(instrument_type=Counter, instrument_name="istio_*",
                  aggregation_cardinality_limit=backstop)]  # one view per instrument
        self.provider = MeterProvider(
            metric_readers=[self._reader],
            views=views,
            resource=Resource.create({"service.name": component}),
        )
        meter = self.provider.get_meter(METER_NAME)
        self.tcp = TcpRecorder(
            TcpInstruments(
                opened=meter.create_counter(
                    "istio_tcp_connections_opened",
                    description="The total number of TCP connections opened"),
                closed=meter.create_counter(
                    "istio_tcp_connections_closed",
                    description="The total number of TCP connections closed"),
                failed=meter.create_counter(
                    "istio_tcp_connections_failed",
                    description="The total number of TCP connections that failed (unstable)"),
                received_bytes=meter.create_counter(
                    "istio_tcp_received_bytes", unit="By",
                    description="The size of total bytes received during request in case "
                    "of a TCP connection"),
                sent_bytes=meter.create_counter(
                    "istio_tcp_sent_bytes", unit="By",
                    description="The size of total bytes sent during response in case of a "
                    "TCP connection"),
            ),
            cardinality_limit,
        )
        self.http = RequestRecorder(
            HttpInstruments(
                requests=meter.create_counter(
                    "istio_requests", description="The total number of requests"),
                duration=meter.create_histogram(
                    "istio_request_duration_milliseconds", unit="ms",
                    description="Duration of requests in milliseconds"),
                request_bytes=meter.create_histogram(
                    "istio_request_bytes", unit="By",
                    description="Size of HTTP request bodies in bytes"),
                response_bytes=meter.create_histogram(
                    "istio_response_bytes", unit="By",
                    description="Size of HTTP response bodies in bytes"),
            ),
            cardinality_limit,
        )
        self.xds = XdsMetrics(meter)
        self.certificates = CertificateMetrics(meter)
        self._workload_manager: Callable[[], WorkloadManagerStats] | None = None
        meter.create_observable_gauge(
            "istio_build", callbacks=[self._observe_build],
            description="Istio component build info")
        for name, attr, kind in (
            ("workload_manager_active_proxy_count", "active_proxy_count", "gauge"),
            ("workload_manager_pending_proxy_count", "pending_proxy_count", "gauge"),
            ("workload_manager_proxies_started", "proxies_started_total", "counter"),
            ("workload_manager_proxies_stopped", "proxies_stopped_total", "counter"),
        ):
            create = (meter.create_observable_gauge if kind == "gauge"
                      else meter.create_observable_counter)
            create(name, callbacks=[self._observe_workload_manager(attr)],
                   description=_WM_HELP[name])

    # ---- control path -------------------------------------------------------------------
    def watch_workload_manager(self, statistics: Callable[[], WorkloadManagerStats]) -> None:
        """Report `workload_manager_*` from `statistics()` at every scrape (ztunnel inpod)."""
        self._workload_manager = statistics

    def _observe_build(self, options: CallbackOptions) -> Iterable[Observation]:
        yield Observation(1, {"component": self.component, "tag": self.version or "unknown"})

    def _observe_workload_manager(
        self, attr: str
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            if self._workload_manager is not None:
                yield Observation(int(getattr(self._workload_manager(), attr)))
        return observe

    # ---- exposition ---------------------------------------------------------------------
    def collect(self) -> MetricsData | None:
        """Flush live byte counts of open connections, then collect from the SDK."""
        self.tcp.flush_open()
        return self._reader.collect_now()

    def render(self) -> str:
        """The Prometheus text exposition of everything recorded so far."""
        return prometheus.render(self.collect(), LABEL_ORDER)

    def handle_scrape(self, request: AdminRequest) -> AdminResponse:
        return AdminResponse(200, self.render().encode(), prometheus.CONTENT_TYPE)

    def routes(self) -> dict[str, Route]:
        """Admin routes for the metrics port (15020): `/metrics` and `/stats/prometheus`."""
        return {"/metrics": self.handle_scrape, "/stats/prometheus": self.handle_scrape}

    def statistics(self) -> dict[str, object]:
        return {
            "tcp": dataclasses.asdict(self.tcp.statistics()),
            "http": dataclasses.asdict(self.http.statistics()),
        }

    def shutdown(self) -> None:
        self.provider.shutdown()


_WM_HELP = {
    "workload_manager_active_proxy_count":
        "The total number current workloads with active proxies",
    "workload_manager_pending_proxy_count":
        "The total number current workloads with pending proxies",
    "workload_manager_proxies_started": "The total number of proxies that were started",
    "workload_manager_proxies_stopped": "The total number of proxies that were stopped",
}

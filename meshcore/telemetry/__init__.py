"""Telemetry for ztunnel and the waypoint: Istio's metrics, access logs, OpenTelemetry traces.

- `labels`: `TrafficLabels` (Istio's standard label set) and `traffic_labels(...)`, the builder
  from the proxy's Workload/Service types and identities.
- `metrics`: `MeshMetrics`, one OpenTelemetry MeterProvider per process with Istio's
  instruments, live connection recorders (`recorders`) and the `/metrics` admin routes
  rendered by `prometheus` (Prometheus text 0.0.4, exact Istio names).
- `access_log`: ztunnel-style access-log lines (JSON or text) on the `access` logger.
- `tracing` / `traceparent`: spans per connection (ztunnel) and per request (waypoint), W3C
  trace-context parsing, OTLP export when configured. `baggage`: the HBONE peer-metadata header.
See docs/observability.md.
"""

from meshcore.telemetry.access_log import AccessLog, ConnectionEntry, RequestEntry
from meshcore.telemetry.baggage import format_baggage, parse_baggage
from meshcore.telemetry.errors import MalformedHeaderError, TelemetryConfigError, TelemetryError
from meshcore.telemetry.labels import (
    PeerMetadata,
    Protocol,
    Reporter,
    ResponseFlags,
    SecurityPolicy,
    TrafficLabels,
    traffic_labels,
)
from meshcore.telemetry.metrics import MeshMetrics, XdsTermination
from meshcore.telemetry.recorders import ConnectionRecorder, RequestRecorder, TcpRecorder
from meshcore.telemetry.traceparent import TraceParent
from meshcore.telemetry.tracing import SpanHandle, Tracing, TracingConfig, label_attributes

__all__ = [
    "AccessLog",
    "ConnectionEntry",
    "ConnectionRecorder",
    "MalformedHeaderError",
    "MeshMetrics",
    "PeerMetadata",
    "Protocol",
    "Reporter",
    "RequestEntry",
    "RequestRecorder",
    "ResponseFlags",
    "SecurityPolicy",
    "SpanHandle",
    "TcpRecorder",
    "TelemetryConfigError",
    "TelemetryError",
    "TraceParent",
    "Tracing",
    "TracingConfig",
    "TrafficLabels",
    "XdsTermination",
    "format_baggage",
    "label_attributes",
    "parse_baggage",
    "traffic_labels",
]

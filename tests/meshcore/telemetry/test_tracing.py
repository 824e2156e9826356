"""Tracing: spans per connection/request via the in-memory exporter, W3C parent propagation."""

import sys

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from meshcore.telemetry.errors import TelemetryConfigError
from meshcore.telemetry.labels import traffic_labels
from meshcore.telemetry.traceparent import TraceParent
from meshcore.telemetry.tracing import Tracing, TracingConfig, label_attributes

ON = TracingConfig(enabled=True, service_name="ztunnel")


def _tracing() -> tuple[Tracing, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    return Tracing(ON, exporter=exporter), exporter


def test_outbound_then_inbound_share_one_trace() -> None:
    """Outbound span's traceparent, sent on CONNECT, parents the inbound span of the peer."""
    client, exported = _tracing()
    server, server_exported = _tracing()
    labels = traffic_labels(reporter="source", mtls=True)
    with client.connection_span("outbound", attributes=label_attributes(labels)) as out:
        header = dict(out.headers())["traceparent"]
        with server.connection_span("inbound", parent=TraceParent.parse(header)) as inb:
            inb.set_attributes({"bytes_sent": 10, "ignored": None})
    (out_span,) = exported.get_finished_spans()
    (in_span,) = server_exported.get_finished_spans()
    assert out_span.kind is SpanKind.CLIENT and out_span.name == "ztunnel outbound"
    assert in_span.kind is SpanKind.SERVER
    assert in_span.context.trace_id == out_span.context.trace_id
    assert in_span.parent is not None and in_span.parent.is_remote
    assert in_span.parent.span_id == out_span.context.span_id
    assert out_span.attributes["istio.reporter"] == "source"
    assert out_span.attributes["istio.connection_security_policy"] == "mutual_tls"
    assert in_span.attributes["bytes_sent"] == 10 and "ignored" not in in_span.attributes
    assert TraceParent.parse(header).sampled
    assert out.trace_id == f"{out_span.context.trace_id:032x}"


def test_request_span_propagates_to_upstream_headers() -> None:
    """The waypoint's span continues the caller's trace and its headers parent the next hop."""
    tracing, exported = _tracing()
    caller = TraceParent.random(sampled=True)
    with tracing.request_span("GET", route="db/echo", traceparent=caller.format(),
                              tracestate="vendor=1") as span:
        upstream = dict(span.headers())
    (recorded,) = exported.get_finished_spans()
    assert recorded.name == "GET db/echo"
    assert recorded.context.trace_id == caller.trace_id
    assert recorded.parent is not None and recorded.parent.span_id == caller.span_id
    nxt = TraceParent.parse(upstream["traceparent"])
    assert (nxt.trace_id, nxt.span_id) == (caller.trace_id, recorded.context.span_id)
    assert upstream["tracestate"] == "vendor=1"


def test_unsampled_parent_is_honoured() -> None:
    """A ztunnel peer's flags 00 mean not sampled: nothing exported, trace id still kept."""
    tracing, exported = _tracing()
    parent = TraceParent.random()
    with tracing.connection_span("inbound", parent=parent) as span:
        assert not span.recording
    assert exported.get_finished_spans() == ()
    assert span.traceparent.trace_id == parent.trace_id and not span.traceparent.sampled


def test_malformed_request_header_starts_a_new_trace() -> None:
    """A malformed traceparent is ignored (new root span; tracestate dropped with it)."""
    tracing, exported = _tracing()
    with tracing.request_span("POST", traceparent="garbage", tracestate="x=1") as span:
        assert [k for k, _ in span.headers()] == ["traceparent"]
    (recorded,) = exported.get_finished_spans()
    assert recorded.parent is None and recorded.name == "POST"


def test_exception_marks_the_span_as_error() -> None:
    """An exception escaping the block is recorded and sets ERROR status; fail() does too."""
    tracing, exported = _tracing()
    with pytest.raises(ConnectionResetError), tracing.connection_span("outbound"):
        raise ConnectionResetError("peer reset")
    with tracing.connection_span("inbound") as span:
        span.fail("denied by db/deny-all")
    first, second = exported.get_finished_spans()
    assert first.status.status_code is StatusCode.ERROR
    assert first.events[0].name == "exception"
    assert second.status.description == "denied by db/deny-all"


def test_disabled_tracing_makes_no_spans_but_propagates() -> None:
    """Off (the default): no provider; outbound gets a random 00 traceparent, inbound keeps id."""
    tracing = Tracing(TracingConfig())
    assert not tracing.enabled and tracing.provider is None
    with tracing.connection_span("outbound") as out:
        assert out.span is None and not out.traceparent.sampled
    parent = TraceParent.random(sampled=True)
    with tracing.connection_span("inbound", parent=parent) as inb:
        assert inb.traceparent.trace_id == parent.trace_id
        assert inb.traceparent.span_id != parent.span_id


def test_missing_otlp_package_is_a_clear_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """An OTLP endpoint without the exporter package names the pip package to install."""
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
                        None)
    config = TracingConfig(enabled=True, otlp_endpoint="http://127.0.0.1:4317")
    with pytest.raises(TelemetryConfigError, match="pip install opentelemetry-exporter-otlp-"
                       "proto-grpc") as info:
        Tracing(config)
    assert info.value.setting == "tracing.otlp_endpoint"


@pytest.mark.parametrize(
    ("config", "setting"),
    [
        pytest.param(TracingConfig(enabled=True), "tracing.otlp_endpoint", id="no-endpoint"),
        pytest.param(TracingConfig(enabled=True, otlp_endpoint="x", otlp_protocol="thrift"),
                     "tracing.otlp_protocol", id="bad-protocol"),
        pytest.param(TracingConfig(sample_ratio=1.5), "tracing.sample_ratio", id="bad-ratio"),
    ],
)
def test_config_errors(config: TracingConfig, setting: str) -> None:
    """Unusable settings raise TelemetryConfigError naming the setting."""
    with pytest.raises(TelemetryConfigError) as info:
        Tracing(config)
    assert info.value.setting == setting


def test_config_from_env() -> None:
    """Tracing turns on when an OTLP endpoint is set in the standard OTEL_* variables."""
    assert not TracingConfig.from_env("ztunnel", {}).enabled
    config = TracingConfig.from_env("ztunnel", {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_TRACES_SAMPLER_ARG": "0.25"})
    assert (config.enabled, config.otlp_endpoint, config.sample_ratio,
            config.service_name) == (True, "http://c:4317", 0.25, "ztunnel")
    with pytest.raises(TelemetryConfigError, match="OTEL_TRACES_SAMPLER_ARG"):
        TracingConfig.from_env("z", {"OTEL_TRACES_SAMPLER_ARG": "half"})

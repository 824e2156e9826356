"""OpenTelemetry tracing for ztunnel (a span per tunnelled connection) and the waypoint.

Called at start-up by `ztunnel.app` / `waypoint.app`: `tracing = Tracing(TracingConfig(...))`
(or `TracingConfig.from_env()`), then per connection `with tracing.connection_span(...) as s:`
(ztunnel; Istio's ztunnel records no spans, we do when tracing is on) and per request
`with tracing.request_span(...) as s:` (waypoint). Spans go to an OTLP exporter (when
configured) or to the exporter handed in (tests pass the SDK's `InMemorySpanExporter`).

Off by default. When off, no span is created, but trace context still flows: an outbound
connection gets a fresh random `traceparent` with flags 00 (as ztunnel sends), an inbound
one or a request keeps the caller's trace id, so access logs can carry `trace_id` either way.
When on, the sampler is parent-based with a trace-id ratio for new traces: a peer's
`traceparent` flags decide (ztunnel peers send 00 = not sampled), our own new traces are
sampled at `sample_ratio`. The provider is never installed globally.

The OTLP exporter package is imported only when an endpoint is configured; if it is missing
`TelemetryConfigError` names the pip package to install.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
from collections.abc import Iterator, Mapping

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.status import Status, StatusCode

from meshcore.telemetry.errors import TelemetryConfigError
from meshcore.telemetry.labels import TrafficLabels
from meshcore.telemetry.traceparent import TraceParent, parse_or_none

_OTLP = {
    "grpc": ("opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
             "opentelemetry-exporter-otlp-proto-grpc"),
    "http/protobuf": ("opentelemetry.exporter.otlp.proto.http.trace_exporter",
                      "opentelemetry-exporter-otlp-proto-http"),
}
AttributeValue = str | int | float | bool


@dataclasses.dataclass(frozen=True, slots=True)
class TracingConfig:
    enabled: bool = False
    otlp_endpoint: str | None = None  # e.g. http://otel-collector.observability:4317
    otlp_protocol: str = "grpc"  # or "http/protobuf"
    sample_ratio: float = 1.0  # for traces we start; peers' sampled flag decides theirs
    service_name: str = "ambient-py"

    @classmethod
    def from_env(cls, service_name: str, env: Mapping[str, str] | None = None) -> TracingConfig:
        """Tracing on iff an OTLP endpoint is set, read from the standard OTEL_* variables."""
        env = os.environ if env is None else env
        endpoint = (env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                    or env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None)
        ratio_text = env.get("OTEL_TRACES_SAMPLER_ARG", "1.0")
        try:
            ratio = float(ratio_text)
        except ValueError as e:
            raise TelemetryConfigError(
                "OTEL_TRACES_SAMPLER_ARG", f"{ratio_text!r} is not a number in [0, 1]") from e
        return cls(
            enabled=endpoint is not None,
            otlp_endpoint=endpoint,
            otlp_protocol=env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            sample_ratio=ratio,
            service_name=env.get("OTEL_SERVICE_NAME", service_name),
        )


def _otlp_exporter(config: TracingConfig) -> SpanExporter:
    if config.otlp_protocol not in _OTLP:
        raise TelemetryConfigError(
            "tracing.otlp_protocol",
            f"{config.otlp_protocol!r} is not supported; use one of {sorted(_OTLP)}")
    module_name, package = _OTLP[config.otlp_protocol]
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise TelemetryConfigError(
            "tracing.otlp_endpoint",
            f"exporting spans to {config.otlp_endpoint} over OTLP/{config.otlp_protocol} "
            f"needs the Python package {package}: `pip install {package}`, "
            "or unset the endpoint to turn tracing off") from e
    exporter: SpanExporter = module.OTLPSpanExporter(endpoint=config.otlp_endpoint)
    return exporter


class SpanHandle:
    """A started (or, with tracing off, virtual) span: the ids to propagate and log."""

    def __init__(self, span: Span | None, traceparent: TraceParent,
                 tracestate: str | None = None) -> None:
        self.span = span
        self.traceparent = traceparent  # send this downstream; its trace id goes in logs
        self.tracestate = tracestate

    @property
    def trace_id(self) -> str:
        return self.traceparent.trace_id_hex

    @property
    def recording(self) -> bool:
        return self.span is not None and self.span.is_recording()

    def headers(self) -> list[tuple[str, str]]:
        """Trace-context headers for the next hop (`traceparent`, and `tracestate` if any)."""
        out = [("traceparent", self.traceparent.format())]
        if self.tracestate:
            out.append(("tracestate", self.tracestate))
        return out

    def set_attributes(self, attributes: Mapping[str, AttributeValue | None]) -> None:
        if self.span is not None:
            self.span.set_attributes({k: v for k, v in attributes.items() if v is not None})

    def fail(self, description: str) -> None:
        """Mark the span as failed (the connection or request did not succeed)."""
        if self.span is not None:
            self.span.set_status(Status(StatusCode.ERROR, description))


def label_attributes(labels: TrafficLabels) -> dict[str, str]:
    """Traffic labels as span attributes, prefixed `istio.` (`istio.source_workload`, ...)."""
    return {f"istio.{k}": v for k, v in labels}


class Tracing:
    """A process's tracer (or none, when off) and the span helpers the proxies use."""

    def __init__(self, config: TracingConfig, *, exporter: SpanExporter | None = None) -> None:
        if not 0.0 <= config.sample_ratio <= 1.0:
            raise TelemetryConfigError(
                "tracing.sample_ratio", f"{config.sample_ratio} is not in [0, 1]")
        self.config = config
        self.provider: TracerProvider | None = None
        self._tracer: trace.Tracer | None = None
        if not config.enabled:
            return
        processor: SpanProcessor
        if exporter is not None:
            processor = SimpleSpanProcessor(exporter)
        elif config.otlp_endpoint:
            processor = BatchSpanProcessor(_otlp_exporter(config))
        else:
            raise TelemetryConfigError(
                "tracing.otlp_endpoint", "tracing is enabled but no OTLP endpoint is set; "
                "set it (or OTEL_EXPORTER_OTLP_ENDPOINT) or disable tracing")
        self.provider = TracerProvider(
            sampler=ParentBased(TraceIdRatioBased(config.sample_ratio)),
            resource=Resource.create({"service.name": config.service_name}),
        )
        self.provider.add_span_processor(processor)
        self._tracer = self.provider.get_tracer("ambient_py")

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    @contextlib.contextmanager
    def connection_span(
        self,
        direction: str,
        *,
        parent: TraceParent | None = None,
        attributes: Mapping[str, AttributeValue | None] | None = None,
    ) -> Iterator[SpanHandle]:
        """ztunnel's span for one connection: CLIENT kind outbound, SERVER kind inbound.

        `parent` is the peer's `traceparent` (inbound); outbound, send `handle.headers()` on
        the CONNECT. An exception escaping the block marks the span as an error.
        """
        kind = SpanKind.CLIENT if direction == "outbound" else SpanKind.SERVER
        with self._span(f"ztunnel {direction}", kind, parent, None, attributes) as handle:
            yield handle

    @contextlib.contextmanager
    def request_span(
        self,
        method: str,
        *,
        route: str | None = None,
        traceparent: str | None = None,
        tracestate: str | None = None,
        attributes: Mapping[str, AttributeValue | None] | None = None,
    ) -> Iterator[SpanHandle]:
        """The waypoint's SERVER span for one request; `headers()` go on the upstream request.

        `traceparent` is the request's raw header (malformed or absent: a new trace).
        """
        parent = parse_or_none(traceparent)
        name = f"{method} {route}" if route else method
        with self._span(name, SpanKind.SERVER, parent, tracestate if parent else None,
                        attributes) as handle:
            yield handle

    @contextlib.contextmanager
    def _span(self, name: str, kind: SpanKind, parent: TraceParent | None,
              tracestate: str | None,
              attributes: Mapping[str, AttributeValue | None] | None) -> Iterator[SpanHandle]:
        if self._tracer is None:
            tp = parent.child() if parent is not None else TraceParent.random()
            yield SpanHandle(None, tp, tracestate)
            return
        context = None
        if parent is not None:
            remote = SpanContext(parent.trace_id, parent.span_id, is_remote=True,
                                 trace_flags=TraceFlags(parent.flags))
            context = trace.set_span_in_context(NonRecordingSpan(remote))
        attrs = {k: v for k, v in (attributes or {}).items() if v is not None}
        with self._tracer.start_as_current_span(
            name, context=context, kind=kind, attributes=attrs,
            record_exception=True, set_status_on_exception=True,
        ) as span:
            ctx = span.get_span_context()
            tp = TraceParent(ctx.trace_id, ctx.span_id, int(ctx.trace_flags))
            yield SpanHandle(span, tp, tracestate)

    def shutdown(self) -> None:
        """Flush and stop the exporter (call once at process exit)."""
        if self.provider is not None:
            self.provider.shutdown()

"""The Prometheus text renderer: exact names, suffixes, label escaping, buckets and numbers."""

import math

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View

from meshcore.telemetry.prometheus import format_value, render


@pytest.mark.parametrize(
    ("value", "text"),
    [
        pytest.param(0, "0", id="int-zero"),
        pytest.param(42, "42", id="int"),
        pytest.param(0.0, "0", id="float-zero"),
        pytest.param(0.5, "0.5", id="half"),
        pytest.param(1.0, "1", id="float-integral"),
        pytest.param(300000.0, "300000", id="below-exponent-switch"),
        pytest.param(1800000.0, "1.8e+06", id="exponent"),
        pytest.param(3600000.0, "3.6e+06", id="exponent-2"),
        pytest.param(1234567.0, "1.234567e+06", id="exponent-all-digits"),
        pytest.param(0.0001, "0.0001", id="small"),
        pytest.param(0.00001, "1e-05", id="small-exponent"),
        pytest.param(-2.5, "-2.5", id="negative"),
        pytest.param(math.inf, "+Inf", id="inf"),
        pytest.param(-math.inf, "-Inf", id="minus-inf"),
        pytest.param(math.nan, "NaN", id="nan"),
    ],
)
def test_format_value_like_go(value: float, text: str) -> None:
    """Numbers print as Go's FormatFloat(v, 'g', -1, 64) (what Envoy/ztunnel scrapes show)."""
    assert format_value(value) == text


def _provider() -> tuple[MeterProvider, InMemoryMetricReader]:
    reader = InMemoryMetricReader()
    view = View(instrument_name="req_ms",
                aggregation=ExplicitBucketHistogramAggregation((1.0, 10.0, 1800000.0)))
    return MeterProvider(metric_readers=[reader], views=[view]), reader


def test_exact_text_for_counter_gauge_and_histogram() -> None:
    """Counters gain `_total`, histograms `_bucket/_sum/_count` with cumulative `le` buckets."""
    provider, reader = _provider()
    meter = provider.get_meter("t")
    counter = meter.create_counter("things", description="Things seen")
    counter.add(2, {"b": "2", "a": "x"})
    counter.add(3, {"b": "2", "a": "x"})
    counter.add(1, {"a": "w", "b": "1"})
    gauge = meter.create_up_down_counter("open_things")
    gauge.add(4)
    gauge.add(-1)
    hist = meter.create_histogram("req_ms", unit="ms", description="Latency")
    for v in (0.5, 5, 5, 2_000_000):
        hist.record(v, {"code": "200"})
    text = render(reader.get_metrics_data(), key_order=["b"])
    assert text == (
        "# TYPE open_things gauge\n"
        "open_things 3\n"
        "# HELP req_ms Latency\n"
        "# TYPE req_ms histogram\n"
        'req_ms_bucket{code="200",le="1"} 1\n'
        'req_ms_bucket{code="200",le="10"} 3\n'
        'req_ms_bucket{code="200",le="1.8e+06"} 3\n'
        'req_ms_bucket{code="200",le="+Inf"} 4\n'
        'req_ms_sum{code="200"} 2.0000105e+06\n'
        'req_ms_count{code="200"} 4\n'
        "# HELP things_total Things seen\n"
        "# TYPE things_total counter\n"
        'things_total{b="1",a="w"} 1\n'
        'things_total{b="2",a="x"} 5\n'
    )


def test_label_values_and_names_are_escaped() -> None:
    """Quotes, backslashes and newlines are escaped; invalid name characters become `_`."""
    provider, reader = _provider()
    counter = provider.get_meter("t").create_counter("c")
    counter.add(1, {"otel.metric.overflow": True, "path": 'a"b\\c\nd'})
    assert render(reader.get_metrics_data()).splitlines()[1] == (
        'c_total{otel_metric_overflow="true",path="a\\"b\\\\c\\nd"} 1'
    )


def test_nothing_recorded_renders_empty() -> None:
    """No data points: an empty exposition (not a header without samples)."""
    _, reader = _provider()
    assert render(reader.get_metrics_data()) == ""
    assert render(None) == ""

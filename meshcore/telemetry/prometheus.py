"""Prometheus text exposition (format 0.0.4) of OpenTelemetry SDK metrics, with exact names.

Called by `metrics.MeshMetrics.render()` (which the admin `/metrics` and `/stats/prometheus`
routes serve) with the `MetricsData` the SDK's reader collected. Pure: data in, text out.

Why our own renderer and not `opentelemetry-exporter-prometheus`: Istio's dashboards key on
exact names. The exporter appends unit suffixes and `_total` by its own rules, adds
`target_info` and `otel_scope_*` labels, needs `prometheus_client` and its global registry.
Here the OTel instrument name *is* the Prometheus family name without suffixes, and this
module adds exactly: `_total` to monotonic sums (counters); `_bucket` / `_sum` / `_count` to
histograms. Units are metadata only and never change a name. Non-monotonic sums and gauges
render as `gauge`.

Output rules: one `# HELP` and `# TYPE` per family, families sorted by name; label keys in
the order `key_order` gives (Istio's traffic label order), others after, sorted; attribute
keys that are not valid Prometheus names have invalid characters replaced by `_` (so the SDK's
`otel.metric.overflow` becomes `otel_metric_overflow`); label values escaped (`\\`, `"`, `\n`);
series sorted by label values; integers written as integers, floats as Go's
`strconv.FormatFloat(v, 'g', -1, 64)` writes them (`0.5`, `1`, `3.6e+06`, `+Inf`), which is
what Envoy and ztunnel scrapes show for `le`.
"""

from __future__ import annotations

import decimal
import math
import re
from collections.abc import Iterable, Mapping, Sequence

from opentelemetry.sdk.metrics.export import (
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricsData,
    NumberDataPoint,
    Sum,
)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_INVALID = re.compile(r"[^a-zA-Z0-9_]")


def format_value(value: float | int) -> str:
    """A sample value or `le` bound as Go's Prometheus clients and Envoy write it."""
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "0"
    d = decimal.Decimal(repr(value)).normalize()
    sign, digits, exponent = d.as_tuple()
    assert isinstance(exponent, int)
    point = len(digits) + exponent - 1  # decimal exponent of the first digit
    if point < -4 or point >= 6:
        mantissa = "".join(map(str, digits))
        if len(mantissa) > 1:
            mantissa = mantissa[0] + "." + mantissa[1:]
        return f"{'-' if sign else ''}{mantissa}e{'+' if point >= 0 else '-'}{abs(point):02d}"
    return format(d, "f")


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def label_name(key: str) -> str:
    name = _INVALID.sub("_", key)
    return "_" + name if name[:1].isdigit() else name


def _labels(
    attributes: Mapping[str, object] | None,
    order: Mapping[str, int],
    extra: Sequence[tuple[str, str]] = (),
) -> str:
    items = [(label_name(k), _attr_text(v)) for k, v in (attributes or {}).items()]
    items.sort(key=lambda kv: (order.get(kv[0], len(order)), kv[0]))
    items.extend(extra)
    if not items:
        return ""
    return "{" + ",".join(f'{k}="{escape_label_value(v)}"' for k, v in items) + "}"


def _attr_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def render(metrics_data: MetricsData | None, key_order: Sequence[str] = ()) -> str:
    """The whole exposition text for `metrics_data` (empty string when nothing was recorded)."""
    order = {k: i for i, k in enumerate(key_order)}
    families: dict[str, Metric] = {}
    for rm in metrics_data.resource_metrics if metrics_data else ():
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                families.setdefault(metric.name, metric)
    out: list[str] = []
    for name in sorted(families):
        out.extend(_family(families[name], order))
    return "".join(out)


def _family(metric: Metric, order: Mapping[str, int]) -> Iterable[str]:
    data = metric.data
    base = label_name(metric.name)
    if isinstance(data, Histogram):
        yield from _header(base, "histogram", metric.description)
        points = sorted(data.data_points, key=lambda p: _labels(p.attributes, order))
        for point in points:
            yield from _histogram_point(base, point, order)
        return
    if isinstance(data, Sum) and data.is_monotonic:
        name, kind = base + "_total", "counter"
    elif isinstance(data, (Sum, Gauge)):
        name, kind = base, "gauge"
    else:  # an aggregation we never configure (exponential histogram): say so, do not guess
        yield f"# {base}: {type(data).__name__} is not rendered\n"
        return
    yield from _header(name, kind, metric.description)
    lines = []
    for number in data.data_points:
        assert isinstance(number, NumberDataPoint)
        lines.append(f"{name}{_labels(number.attributes, order)} {format_value(number.value)}\n")
    yield from sorted(lines)


def _header(name: str, kind: str, description: str | None) -> Iterable[str]:
    if description:
        yield f"# HELP {name} {_escape_help(description)}\n"
    yield f"# TYPE {name} {kind}\n"


def _histogram_point(
    base: str, point: HistogramDataPoint, order: Mapping[str, int]
) -> Iterable[str]:
    cumulative = 0
    bounds = [*point.explicit_bounds, math.inf]
    for bound, count in zip(bounds, point.bucket_counts, strict=True):
        cumulative += count
        labels = _labels(point.attributes, order, [("le", format_value(float(bound)))])
        yield f"{base}_bucket{labels} {cumulative}\n"
    labels = _labels(point.attributes, order)
    yield f"{base}_sum{labels} {format_value(point.sum)}\n"
    yield f"{base}_count{labels} {point.count}\n"

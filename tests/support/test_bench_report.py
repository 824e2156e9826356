"""The benchmark's pure parts: percentiles (bench/pingpong.py) and the ratio table (report)."""

from __future__ import annotations

import pytest

from bench.pingpong import percentile
from bench.report import Metric, SectionResult, format_table, rows


@pytest.mark.parametrize(
    ("fraction", "expected"),
    [
        pytest.param(0.5, 50.0, id="p50"),
        pytest.param(0.99, 99.0, id="p99"),
        pytest.param(1.0, 100.0, id="max"),
        pytest.param(0.0, 1.0, id="min"),
    ],
)
def test_percentile_nearest_rank(fraction: float, expected: float) -> None:
    """Nearest-rank percentiles of 1..100 are the obvious values."""
    assert percentile([float(v) for v in range(1, 101)], fraction) == expected


def _result() -> SectionResult:
    result = SectionResult(
        name="hbone", title="t", metrics=[Metric("tput1", "iperf3", "Gbit/s", True),
                                          Metric("cpu_client", "client CPU", "CPU-s")],
        cases={"direct": "direct TCP", "envoy": "Envoy", "ours": "ours"},
        references=["direct", "envoy"], settings={"runs": 1},
    )
    result.summary = {"direct": {"tput1": 20.0}, "envoy": {"tput1": 5.0, "cpu_client": 1.0}}
    result.unavailable = {"ours": "not built yet"}
    return result


def test_rows_give_values_and_ratios_to_each_reference() -> None:
    """Each figure carries its ratio to direct and to Envoy; missing figures show '-'."""
    table = rows(_result())
    assert table[0] == ["iperf3 (Gbit/s)", "direct TCP", "20.0", "1.00x", "4.00x"]
    assert table[1] == ["", "Envoy", "5.00", "0.25x", "1.00x"]
    assert table[3] == ["client CPU (CPU-s)", "direct TCP", "-", "-", "-"]
    assert table[4] == ["", "Envoy", "1.00", "-", "1.00x"]


def test_unavailable_case_is_explicit() -> None:
    """A case that could not run shows no numbers and states why, once."""
    text = format_table(_result())
    assert "not available*" in text
    assert text.count("ours: not available: not built yet") == 1

"""The HBONE benchmark's derived figures (pure helpers, no namespaces)."""

from bench.hbone_section import add_latency_over_direct


def test_added_latency_subtracts_the_same_repetitions_direct_p50() -> None:
    """p50_added is each repetition's p50 minus direct TCP's p50 of that repetition."""
    samples = {"direct": [{"p50": 8.0}, {"p50": 10.0}],
               "ours": [{"p50": 208.0}, {"p50": 230.0}],
               "envoy": [{"p50": 48.0}]}
    add_latency_over_direct(samples)
    assert [s["p50_added"] for s in samples["ours"]] == [200.0, 220.0]
    assert samples["envoy"][0]["p50_added"] == 40.0
    assert "p50_added" not in samples["direct"][0]


def test_added_latency_skips_repetitions_without_a_direct_figure() -> None:
    """A repetition where direct TCP failed gets no p50_added (no invented baseline)."""
    samples = {"direct": [{"p50": 8.0}], "ours": [{"p50": 100.0}, {"p50": 120.0}]}
    add_latency_over_direct(samples)
    assert samples["ours"][0]["p50_added"] == 92.0
    assert "p50_added" not in samples["ours"][1]

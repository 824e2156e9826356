"""Least-request balancing, outlier detection and retry decisions (waypoint.resilience)."""

from __future__ import annotations

import collections
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from waypoint.resilience import (
    Event,
    HostState,
    Outcome,
    OutlierConfig,
    OutlierDetector,
    State,
    classify,
    decide_retry,
    pick_least_request,
    step,
)
from waypoint.routing import DEFAULT_RETRY, RetryPolicy

# -- least request -----------------------------------------------------------------------------


def test_least_request_never_picks_the_busiest() -> None:
    """With two distinct choices, the single most-loaded endpoint is never chosen."""
    active = {"a": 0, "b": 3, "c": 50}
    rng = random.Random(2)
    picks = collections.Counter(pick_least_request(list(active), active.__getitem__, rng)
                                for _ in range(3000))
    assert picks["c"] == 0
    assert picks["a"] > picks["b"] > 0  # a wins every pair it is in (2/3 of draws)


def test_least_request_equal_load_spreads() -> None:
    """Equal load spreads picks over every endpoint."""
    rng = random.Random(4)
    picks = collections.Counter(pick_least_request(["a", "b", "c"], lambda e: 0, rng)
                                for _ in range(3000))
    assert set(picks) == {"a", "b", "c"} and min(picks.values()) > 700


def test_least_request_edges() -> None:
    """No endpoints gives None; one endpoint is always it."""
    rng = random.Random(0)
    assert pick_least_request([], lambda e: 0, rng) is None
    assert pick_least_request(["only"], lambda e: 9, rng) == "only"


# -- outlier detection -------------------------------------------------------------------------

CFG = OutlierConfig(consecutive_5xx=3, base_ejection_time=30.0, max_ejection_time=100.0,
                    max_ejection_percent=50.0)
HEALTHY_2 = HostState(State.HEALTHY, 2, 1, 0.0)
EJECTED = HostState(State.EJECTED, 0, 1, 130.0)

TABLE = [
    pytest.param(HEALTHY_2, Event.SUCCESS, 100.0, True, HostState(State.HEALTHY, 0, 1, 0.0),
                 id="healthy-success-resets"),
    pytest.param(HostState(), Event.FAILURE, 100.0, True, HostState(State.HEALTHY, 1, 0, 0.0),
                 id="healthy-failure-counts"),
    pytest.param(HEALTHY_2, Event.FAILURE, 100.0, True, HostState(State.EJECTED, 0, 2, 160.0),
                 id="threshold-ejects-base-times-k"),
    pytest.param(HostState(State.HEALTHY, 2, 5, 0.0), Event.FAILURE, 100.0, True,
                 HostState(State.EJECTED, 0, 6, 200.0), id="ejection-time-capped"),
    pytest.param(HEALTHY_2, Event.FAILURE, 100.0, False, HostState(State.HEALTHY, 3, 1, 0.0),
                 id="threshold-but-max-percent"),
    pytest.param(HEALTHY_2, Event.TICK, 100.0, True, HEALTHY_2, id="healthy-tick"),
    pytest.param(EJECTED, Event.SUCCESS, 100.0, True, EJECTED, id="ejected-late-success"),
    pytest.param(EJECTED, Event.FAILURE, 100.0, True, EJECTED, id="ejected-late-failure"),
    pytest.param(EJECTED, Event.TICK, 129.9, True, EJECTED, id="ejected-tick-early"),
    pytest.param(EJECTED, Event.TICK, 130.0, True, HostState(State.HEALTHY, 0, 1, 130.0),
                 id="ejected-tick-returns"),
]


@pytest.mark.parametrize(("before", "event", "now", "may_eject", "after"), TABLE)
def test_outlier_table(before: HostState, event: Event, now: float, may_eject: bool,
                       after: HostState) -> None:
    """Each row of the outlier table in waypoint/resilience/outlier.py holds."""
    assert step(before, event, now, CFG, may_eject) == after


host_states = st.builds(HostState, st.sampled_from(State), st.integers(0, 10),
                        st.integers(0, 10), st.floats(0, 1000))


@given(host_states, st.sampled_from(Event), st.floats(0, 1000), st.booleans())
def test_outlier_every_pair(h: HostState, event: Event, now: float, may_eject: bool) -> None:
    """For every (state, event): only FAILURE ejects, only TICK un-ejects, k never drops."""
    after = step(h, event, now, CFG, may_eject)
    assert after.ejections >= h.ejections
    if h.state is State.HEALTHY and after.state is State.EJECTED:
        assert event is Event.FAILURE and may_eject and h.failures + 1 >= CFG.consecutive_5xx
        assert now < after.ejected_until <= now + CFG.max_ejection_time
    if h.state is State.EJECTED and after.state is State.HEALTHY:
        assert event is Event.TICK and now >= h.ejected_until
    if event is Event.SUCCESS and h.state is State.HEALTHY:
        assert after.failures == 0


def test_detector_respects_max_ejection_percent() -> None:
    """With 4 hosts and 50%: two can be ejected, the third stays in; ticks bring them back."""
    d = OutlierDetector(CFG)
    for host in ("a", "b", "c"):
        for _ in range(3):
            d = d.record(host, Event.FAILURE, 10.0, total_hosts=4)
    assert d.ejected() == {"a", "b"}
    assert d.available(["a", "b", "c", "d"]) == ["c", "d"]
    d = d.tick(40.0)
    assert d.ejected() == frozenset()


def test_detector_always_allows_one_ejection() -> None:
    """Even when one host is more than max_ejection_percent, the first ejection happens."""
    d = OutlierDetector(OutlierConfig(consecutive_5xx=1, max_ejection_percent=10.0))
    assert d.record("a", Event.FAILURE, 0.0, total_hosts=2).ejected() == {"a"}


@pytest.mark.parametrize(("status", "event"), [
    pytest.param(200, Event.SUCCESS, id="2xx"), pytest.param(404, Event.SUCCESS, id="4xx"),
    pytest.param(503, Event.FAILURE, id="5xx"), pytest.param(None, Event.FAILURE, id="reset"),
])
def test_classify(status: int | None, event: Event) -> None:
    """5xx and no response count as failures, everything else as success."""
    assert classify(status) is event


# -- retries -----------------------------------------------------------------------------------

ALL_5XX = RetryPolicy(3, frozenset({"5xx"}), frozenset())
RETRY_CASES = [
    pytest.param(DEFAULT_RETRY, Outcome(status=503), True, "retriable-status-codes",
                 id="default-503"),
    pytest.param(DEFAULT_RETRY, Outcome(status=500), False, "not retriable", id="default-500"),
    pytest.param(DEFAULT_RETRY, Outcome(reset="connect-failure"), True, "connect-failure",
                 id="default-connect-failure"),
    pytest.param(DEFAULT_RETRY, Outcome(reset="refused-stream"), True, "refused-stream",
                 id="default-refused-stream"),
    pytest.param(DEFAULT_RETRY, Outcome(reset="reset"), False, "not retriable",
                 id="default-plain-reset"),
    pytest.param(DEFAULT_RETRY, Outcome(status=200, grpc_status=14), True, "unavailable",
                 id="default-grpc-unavailable"),
    pytest.param(DEFAULT_RETRY, Outcome(status=200, grpc_status=1), True, "cancelled",
                 id="default-grpc-cancelled"),
    pytest.param(DEFAULT_RETRY, Outcome(status=200), False, "not retriable", id="success"),
    pytest.param(ALL_5XX, Outcome(status=500), True, "5xx", id="5xx-any"),
    pytest.param(ALL_5XX, Outcome(reset="timeout"), True, "5xx", id="5xx-includes-resets"),
    pytest.param(RetryPolicy(1, frozenset({"gateway-error"}), frozenset()), Outcome(status=500),
                 False, "not retriable", id="gateway-error-not-500"),
    pytest.param(RetryPolicy(1, frozenset({"retriable-4xx"}), frozenset()), Outcome(status=409),
                 True, "retriable-4xx", id="retriable-4xx"),
]


@pytest.mark.parametrize(("policy", "outcome", "retry", "reason"), RETRY_CASES)
def test_retry_conditions(policy: RetryPolicy, outcome: Outcome, retry: bool,
                          reason: str) -> None:
    """Envoy's retry_on conditions decide whether the first attempt is retried."""
    d = decide_retry(policy, 0, outcome, random.Random(0))
    assert d.retry is retry and d.reason.startswith(reason)


def test_retry_budget_and_backoff_bounds() -> None:
    """Istio's default allows 2 retries; backoff k lies in [0, min(10b, b(2^k-1)))."""
    rng = random.Random(5)
    o = Outcome(status=503)
    assert decide_retry(DEFAULT_RETRY, 1, o, rng).retry
    assert not decide_retry(DEFAULT_RETRY, 2, o, rng).retry
    many = RetryPolicy(10, frozenset({"5xx"}), frozenset(), backoff_base=0.025)
    for k, upper in ((0, 0.025), (1, 0.075), (2, 0.175), (5, 0.25), (9, 0.25)):
        waits = [decide_retry(many, k, o, rng).backoff for _ in range(200)]
        assert all(0 <= w < upper + 1e-12 for w in waits)
        assert max(waits) > upper * 0.8  # fully jittered, so it reaches near the cap


def test_outcome_needs_status_xor_reset() -> None:
    """An Outcome is either a response status or a reset reason from the known list."""
    with pytest.raises(ValueError):
        Outcome()
    with pytest.raises(ValueError):
        Outcome(status=200, reset="reset")
    with pytest.raises(ValueError):
        Outcome(reset="bogus")

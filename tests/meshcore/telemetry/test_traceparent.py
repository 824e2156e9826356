"""W3C traceparent: round trips, and every malformed shape is rejected with the reason."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshcore.telemetry.errors import MalformedHeaderError
from meshcore.telemetry.traceparent import TraceParent, parse_or_none

VALID = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_parse_known_value() -> None:
    """The W3C spec's example parses into its ids and sampled flag."""
    tp = TraceParent.parse(VALID)
    assert tp.trace_id_hex == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert tp.span_id_hex == "00f067aa0ba902b7"
    assert tp.sampled
    assert tp.format() == VALID


@given(st.integers(1, (1 << 128) - 1), st.integers(1, (1 << 64) - 1), st.integers(0, 255))
def test_round_trip(trace_id: int, span_id: int, flags: int) -> None:
    """format() then parse() gives back the same value, for any ids and flags."""
    tp = TraceParent(trace_id, span_id, flags)
    assert TraceParent.parse(tp.format()) == tp


def test_future_version_extra_fields_and_whitespace_accepted() -> None:
    """A higher version may carry more fields; surrounding spaces are allowed."""
    tp = TraceParent.parse(" 01-" + VALID[3:] + "-what-ever\t")
    assert tp == TraceParent.parse(VALID)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        pytest.param("", "expected version", id="empty"),
        pytest.param("00-abc", "expected version", id="too-few-fields"),
        pytest.param("ff" + VALID[2:], "version ff", id="version-ff"),
        pytest.param("0g" + VALID[2:], "version is not", id="version-not-hex"),
        pytest.param(VALID + "-extra", "exactly four", id="v00-extra-field"),
        pytest.param(VALID.upper(), "version is not|trace-id is not", id="upper-case"),
        pytest.param("00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
                     "trace-id is not", id="short-trace-id"),
        pytest.param("00-" + "0" * 32 + "-00f067aa0ba902b7-01", "trace-id is all zeros",
                     id="zero-trace-id"),
        pytest.param("00-4bf92f3577b34da6a3ce929d0e0e4736-" + "0" * 16 + "-01",
                     "parent-id is all zeros", id="zero-parent-id"),
        pytest.param("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
                     "trace-flags", id="short-flags"),
        pytest.param("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01",
                     "parent-id is not", id="parent-not-hex"),
    ],
)
def test_malformed_rejected(value: str, reason: str) -> None:
    """Malformed values raise MalformedHeaderError naming the header and the problem."""
    with pytest.raises(MalformedHeaderError, match=reason) as info:
        TraceParent.parse(value)
    assert info.value.header == "traceparent" and info.value.value == value
    assert parse_or_none(value) is None


def test_random_is_unsampled_and_child_keeps_trace() -> None:
    """ztunnel-style random values have flags 00; child() keeps trace id and flags."""
    tp = TraceParent.random()
    assert tp.format().endswith("-00") and not tp.sampled
    child = tp.child()
    assert (child.trace_id, child.flags) == (tp.trace_id, tp.flags)
    assert child.span_id != 0
    assert parse_or_none(None) is None

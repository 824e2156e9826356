"""The stream state table: every (state, input) pair, and random input sequences (Hypothesis)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshcore.hbone.state import (
    TRANSITIONS,
    StreamInput,
    StreamState,
    StreamStateError,
    transition,
)

S, I = StreamState, StreamInput  # noqa: E741
SENDS = {I.SEND_HEADERS, I.SEND_DATA, I.SEND_END_STREAM}
RECVS = {I.RECV_HEADERS, I.RECV_DATA, I.RECV_END_STREAM}


@given(st.sampled_from(list(StreamState)), st.sampled_from(list(StreamInput)))
def test_every_pair_is_a_transition_or_a_state_error(
    state: StreamState, event: StreamInput
) -> None:
    """Each pair either yields a state from the table or raises StreamStateError naming both."""
    if (state, event) in TRANSITIONS:
        assert transition(state, event) is TRANSITIONS[state, event]
    else:
        with pytest.raises(StreamStateError) as info:
            transition(state, event)
        assert (info.value.state, info.value.input) == (state, event)


@given(st.lists(st.sampled_from(list(StreamInput)), max_size=30))
def test_random_sequences_respect_rfc_invariants(events: list[StreamInput]) -> None:
    """Driving the table with any input sequence (skipping rejected inputs) never sends after
    our END_STREAM, never receives after the peer's, and never leaves CLOSED."""
    state = S.IDLE
    sent_end = recv_end = False
    for event in events:
        try:
            nxt = transition(state, event)
        except StreamStateError:
            continue
        if state is S.CLOSED:
            assert nxt is S.CLOSED
        if event in SENDS:
            assert not sent_end
        if event in RECVS:
            assert not recv_end
        sent_end |= event is I.SEND_END_STREAM
        recv_end |= event is I.RECV_END_STREAM
        if sent_end and recv_end:
            assert nxt is S.CLOSED
        state = nxt


def test_table_covers_exactly_the_reachable_states() -> None:
    """Every state is reachable from IDLE and every non-closed state can reach CLOSED."""
    reachable = {S.IDLE}
    while True:
        more = {
            TRANSITIONS[s, i]
            for s, i in itertools.product(reachable, StreamInput)
            if (s, i) in TRANSITIONS
        } - reachable
        if not more:
            break
        reachable |= more
    assert reachable == set(StreamState)
    for state in set(StreamState) - {S.IDLE, S.CLOSED}:
        assert TRANSITIONS.get((state, I.SEND_RST_STREAM)) is S.CLOSED
        assert TRANSITIONS.get((state, I.RECV_RST_STREAM)) is S.CLOSED


@pytest.mark.parametrize(
    ("state", "event"),
    [
        pytest.param(S.IDLE, I.RECV_DATA, id="DATA on idle"),
        pytest.param(S.HALF_CLOSED_REMOTE, I.RECV_DATA, id="DATA after peer END_STREAM"),
        pytest.param(S.HALF_CLOSED_LOCAL, I.SEND_DATA, id="send after our END_STREAM"),
        pytest.param(S.CLOSED, I.RECV_HEADERS, id="HEADERS on closed"),
        pytest.param(S.IDLE, I.RECV_RST_STREAM, id="RST_STREAM on idle"),
    ],
)
def test_rfc_forbidden_pairs_are_missing(state: StreamState, event: StreamInput) -> None:
    """Pairs RFC 9113 §5.1 forbids are absent from the table."""
    assert (state, event) not in TRANSITIONS

"""The pure ZDS session table: every (state, input, pod status) triple, and random sequences."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ztunnel.inpod import protocol_state as ps

ALL_TRIPLES = list(itertools.product(ps.Phase, ps.Input, ps.PodStatus))
REPLIES = ps.REPLY_ACTIONS


def _session(phase: ps.Phase, named: frozenset[str] = frozenset()) -> ps.Session:
    return ps.Session(phase, named if phase is ps.Phase.AWAIT_SNAPSHOT else frozenset())


def test_table_covers_every_state_and_input() -> None:
    """Each (phase, input) has a row, and each row says what to do for every pod status."""
    assert set(ps.TABLE) == set(itertools.product(ps.Phase, ps.Input))
    for row in ps.TABLE.values():
        assert set(row.by_status) == set(ps.PodStatus)


@given(st.sampled_from(ALL_TRIPLES), st.text(min_size=1, max_size=8),
       st.frozensets(st.text(min_size=1, max_size=8), max_size=4))
def test_every_triple_yields_exactly_one_reply(triple: tuple[ps.Phase, ps.Input, ps.PodStatus],
                                               uid: str, named: frozenset[str]) -> None:
    """Any request in any state gets exactly one reply, and a disconnect only follows a NACK."""
    phase, kind, status = triple
    result = ps.step(_session(phase, named), ps.Event(kind, uid, status, "bad bytes"))
    replies = [a for a in result.actions if isinstance(a, REPLIES)]
    assert len(replies) == 1
    disconnects = [a for a in result.actions if isinstance(a, ps.Disconnect)]
    if disconnects:
        assert result.actions[-2:] == (ps.SendNack(disconnects[0].reason), disconnects[0])
        assert result.session.ended
    else:
        assert not result.session.ended


@given(st.sampled_from(ALL_TRIPLES), st.text(min_size=1, max_size=8))
def test_actions_only_name_the_requested_pod(triple: tuple[ps.Phase, ps.Input, ps.PodStatus],
                                             uid: str) -> None:
    """Per-pod actions always concern the uid of the request (never some other pod)."""
    phase, kind, status = triple
    result = ps.step(_session(phase), ps.Event(kind, uid, status))
    for action in result.actions:
        if isinstance(action, ps.StartProxy | ps.ReplaceProxy | ps.KeepProxy | ps.StopProxy):
            assert action.uid == uid


@pytest.mark.parametrize(("phase", "kind", "status", "expected"), [
    pytest.param(ps.Phase.AWAIT_SNAPSHOT, ps.Input.ADD, ps.PodStatus.ABSENT,
                 (ps.StartProxy("p"),), id="snapshot-add-new-pod-starts"),
    pytest.param(ps.Phase.READY, ps.Input.ADD, ps.PodStatus.SERVING,
                 (ps.KeepProxy("p"), ps.SendAck()), id="re-add-same-netns-is-idempotent"),
    pytest.param(ps.Phase.READY, ps.Input.ADD, ps.PodStatus.SERVING_OTHER_NETNS,
                 (ps.ReplaceProxy("p"),), id="re-add-other-netns-replaces"),
    pytest.param(ps.Phase.READY, ps.Input.ADD, ps.PodStatus.PENDING,
                 (ps.StartProxy("p"),), id="re-add-pending-starts-again"),
    pytest.param(ps.Phase.READY, ps.Input.DEL, ps.PodStatus.ABSENT,
                 (ps.SendAck(),), id="del-unknown-acks"),
    pytest.param(ps.Phase.READY, ps.Input.DEL, ps.PodStatus.SERVING,
                 (ps.StopProxy("p"), ps.SendAck()), id="del-serving-stops"),
    pytest.param(ps.Phase.AWAIT_SNAPSHOT, ps.Input.KEEP, ps.PodStatus.SERVING,
                 (ps.SendAck(),), id="keep-in-snapshot-acks"),
    pytest.param(ps.Phase.AWAIT_SNAPSHOT, ps.Input.SNAPSHOT_SENT, ps.PodStatus.ABSENT,
                 (ps.StopUnnamed(frozenset({"q"})), ps.MarkReady(), ps.SendAck()),
                 id="snapshot-sent-reconciles-and-readies"),
])
def test_rows(phase: ps.Phase, kind: ps.Input, status: ps.PodStatus,
              expected: tuple[ps.Action, ...]) -> None:
    """Selected rows produce exactly the documented actions."""
    session = _session(phase, frozenset({"q"}))
    assert ps.step(session, ps.Event(kind, "p", status)).actions == expected


@pytest.mark.parametrize(("phase", "kind", "reason"), [
    pytest.param(ps.Phase.READY, ps.Input.KEEP, "after SnapshotSent", id="keep-after-snapshot"),
    pytest.param(ps.Phase.READY, ps.Input.SNAPSHOT_SENT, "twice", id="second-snapshot-sent"),
    pytest.param(ps.Phase.READY, ps.Input.GARBAGE, "bad bytes", id="garbage-ready"),
    pytest.param(ps.Phase.AWAIT_SNAPSHOT, ps.Input.GARBAGE, "bad bytes", id="garbage-snapshot"),
])
def test_protocol_errors_nack_and_disconnect(phase: ps.Phase, kind: ps.Input,
                                             reason: str) -> None:
    """Protocol violations NACK with a reason naming the problem, then disconnect."""
    result = ps.step(_session(phase), ps.Event(kind, "p", detail="bad bytes"))
    nack, disconnect = result.actions
    assert isinstance(nack, ps.SendNack) and reason in nack.reason
    assert isinstance(disconnect, ps.Disconnect)
    with pytest.raises(ValueError, match="ended"):
        ps.step(result.session, ps.Event(ps.Input.DEL, "p"))


# ---- random sessions against a model of the proxy table -------------------------------------
UIDS = ["a", "b", "c"]
INODES = [1, 2]


@st.composite
def _requests(draw: st.DrawFn) -> list[tuple[ps.Input, str, int]]:
    kinds = st.sampled_from([ps.Input.ADD, ps.Input.ADD, ps.Input.DEL, ps.Input.KEEP,
                             ps.Input.SNAPSHOT_SENT, ps.Input.GARBAGE])
    return draw(st.lists(st.tuples(kinds, st.sampled_from(UIDS), st.sampled_from(INODES)),
                         max_size=30))


@given(_requests(), st.dictionaries(st.sampled_from(UIDS), st.sampled_from(INODES)),
       st.booleans())
def test_random_sessions_keep_the_table_consistent(
        requests: list[tuple[ps.Input, str, int]], served_before: dict[str, int],
        start_ok: bool) -> None:
    """Random request sequences (across reconnects) never serve a pod twice or keep an unnamed one.

    Model: `served` maps uid → inode of its running proxy, `pending` holds uids whose start
    failed; starts succeed or fail per `start_ok`.
    """
    served = dict(served_before)
    pending: set[str] = set()
    session = ps.Session()
    for kind, uid, inode in requests:
        if uid in pending:
            status = ps.PodStatus.PENDING
        elif uid not in served:
            status = ps.PodStatus.ABSENT
        elif kind is ps.Input.ADD and served[uid] != inode:
            status = ps.PodStatus.SERVING_OTHER_NETNS
        else:
            status = ps.PodStatus.SERVING
        result = ps.step(session, ps.Event(kind, uid, status))
        for action in result.actions:
            match action:
                case ps.StartProxy(u) | ps.ReplaceProxy(u):
                    assert u not in served or served[u] != inode  # never a duplicate proxy
                    served.pop(u, None)
                    pending.discard(u)
                    if start_ok:
                        served[u] = inode
                    else:
                        pending.add(u)
                case ps.KeepProxy(u):
                    assert served[u] == inode
                case ps.StopProxy(u):
                    served.pop(u, None)
                    pending.discard(u)
                case ps.StopUnnamed(named):
                    for u in list(served):
                        if u not in named:
                            del served[u]
                    pending &= named
                    assert set(served) <= named and pending <= named
        session = result.session
        if session.ended:
            session = ps.Session()  # the manager reconnects; the agent re-sends its snapshot
    assert not (set(served) & pending)

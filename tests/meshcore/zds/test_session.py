"""The ZDS conversation table: happy path, every violation class, and both ends always agreeing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshcore.zds import codec
from meshcore.zds.codec import ZdsProtocolError
from meshcore.zds.session import Role, State, ZdsSession, ZdsUsageError

ADD = codec.AddWorkload("uid-1", "web", "shop")


def _pair() -> tuple[ZdsSession, ZdsSession]:
    return ZdsSession(Role.AGENT), ZdsSession(Role.ZTUNNEL)


def _flow(sender: ZdsSession, receiver: ZdsSession, message: codec.Request | codec.Hello
          | codec.Ack) -> None:
    data = sender.send(message)
    assert receiver.receive(data, codec.fd_count(message)) == message


def test_hello_snapshot_then_add_and_del() -> None:
    """hello → snapshot (add, keep, snapshot-sent, each acked) → ready → add/del with acks."""
    agent, zt = _pair()
    _flow(zt, agent, codec.Hello())
    for message in (ADD, codec.KeepWorkload("uid-2"), codec.SnapshotSent()):
        assert agent.state is State.SNAPSHOT
        _flow(agent, zt, message)
        _flow(zt, agent, codec.Ack())
    assert agent.state is zt.state is State.READY
    _flow(agent, zt, codec.DelWorkload("uid-1"))
    _flow(zt, agent, codec.Ack("not found"))
    _flow(agent, zt, ADD)
    assert agent.outstanding is not None


def _ready() -> tuple[ZdsSession, ZdsSession]:
    agent, zt = _pair()
    _flow(zt, agent, codec.Hello())
    _flow(agent, zt, codec.SnapshotSent())
    _flow(zt, agent, codec.Ack())
    return agent, zt


@pytest.mark.parametrize("setup, message, match", [
    pytest.param(_pair, ADD, "state await-hello", id="request-before-hello"),
    pytest.param(_ready, codec.KeepWorkload("u"), "state ready", id="keep-after-snapshot"),
    pytest.param(_ready, codec.SnapshotSent(), "state ready", id="second-snapshot-sent"),
])
def test_agent_misuse_is_usage_error(setup: object, message: codec.Request, match: str) -> None:
    """Sending what the protocol forbids now is our bug: ZdsUsageError, session closed."""
    agent, _ = setup()  # type: ignore[operator]
    with pytest.raises(ZdsUsageError, match=match):
        agent.send(message)
    assert agent.state is State.CLOSED


def test_second_request_before_ack_is_refused() -> None:
    """One request outstanding at a time, on both ends."""
    agent, zt = _ready()
    zt_data = agent.send(ADD)
    zt.receive(zt_data, 1)
    with pytest.raises(ZdsUsageError, match="waiting for its ack"):
        agent.send(codec.DelWorkload("u"))
    sneaky = ZdsSession(Role.ZTUNNEL)
    _flow(sneaky, ZdsSession(Role.AGENT), codec.Hello())
    sneaky.receive(codec.encode_request(codec.SnapshotSent()), 0)
    with pytest.raises(ZdsProtocolError, match="waiting for its ack"):
        sneaky.receive(codec.encode_request(ADD), 1)


@pytest.mark.parametrize("first, match", [
    pytest.param(codec.encode_response(codec.Ack()), "ZdsHello", id="ack-before-hello"),
    pytest.param(b"\xff", "ZdsHello", id="garbage"),
])
def test_agent_rejects_bad_first_datagram(first: bytes, match: str) -> None:
    """The first datagram from ztunnel must be a V1 hello."""
    agent = ZdsSession(Role.AGENT)
    with pytest.raises(ZdsProtocolError):
        agent.receive(first, 0)
    assert agent.state is State.CLOSED
    with pytest.raises(ZdsProtocolError, match="closed"):
        agent.receive(codec.encode_hello(), 0)


def test_unsolicited_ack_is_protocol_error() -> None:
    """An ack with no request outstanding closes the session."""
    agent, _ = _ready()
    with pytest.raises(ZdsProtocolError, match="no request is waiting"):
        agent.receive(codec.encode_response(codec.Ack()), 0)


MESSAGES = st.sampled_from([
    codec.Hello(), ADD, codec.KeepWorkload("u"), codec.DelWorkload("u"), codec.SnapshotSent(),
    codec.Ack(), codec.Ack("nack"),
])


@given(st.lists(MESSAGES, max_size=12))
def test_both_ends_always_agree(messages: list[codec.Request | codec.Hello | codec.Ack]) -> None:
    """Whatever one end is allowed to send, the other accepts, and they stay in the same state."""
    agent, zt = _pair()
    for message in messages:
        sender, receiver = (zt, agent) if isinstance(message, codec.Hello | codec.Ack) else (
            agent, zt)
        try:
            data = sender.send(message)
        except ZdsUsageError:
            break
        assert receiver.receive(data, codec.fd_count(message)) == message
        assert (agent.state, agent.outstanding) == (zt.state, zt.outstanding)

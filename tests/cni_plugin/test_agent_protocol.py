"""The plugin ⇄ agent codec: round trips, framing and rejection of malformed input."""

from __future__ import annotations

import pytest

from cni_plugin.agent_protocol import (
    MAX_LINE,
    AgentRequest,
    AgentResponse,
    LineBuffer,
    PodIp,
    PodRef,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)
from cni_plugin.errors import ProtocolError

REQUEST = AgentRequest(
    op="add", container_id="c0ffee", netns="/var/run/netns/p", ifname="eth0",
    pod=PodRef("web", "shop", "uid-1"),
    ips=(PodIp("eth0", "10.1.0.5/24", "10.1.0.1"), PodIp("eth0", "fd00::5/64")),
)


def test_request_round_trip() -> None:
    """A request survives encode → decode unchanged and is one newline-terminated line."""
    data = encode_request(REQUEST)
    assert data.endswith(b"\n") and data.count(b"\n") == 1
    assert decode_request(data[:-1]) == REQUEST


@pytest.mark.parametrize("resp", [
    pytest.param(AgentResponse(ok=True, enrolled=True, changed=False), id="ok"),
    pytest.param(AgentResponse(ok=False, code=11, msg="busy", details="retry"), id="error"),
])
def test_response_round_trip(resp: AgentResponse) -> None:
    """Responses survive encode → decode unchanged."""
    assert decode_response(encode_response(resp)[:-1]) == resp


@pytest.mark.parametrize("line, match", [
    pytest.param(b"\xff\xfe", "not valid JSON", id="not-utf8"),
    pytest.param(b"{nope", "not valid JSON", id="not-json"),
    pytest.param(b"[1]", "JSON object", id="array"),
    pytest.param(b'{"v": 2, "op": "add"}', "version", id="wrong-version"),
    pytest.param(b'{"v": 1, "op": "explode"}', "unknown op", id="bad-op"),
    pytest.param(b'{"v": 1, "op": "add", "netns": 5}', "'netns'", id="netns-not-string"),
    pytest.param(b'{"v": 1, "op": "add", "ips": [3]}', "'ips'", id="ip-not-object"),
])
def test_malformed_requests_are_rejected(line: bytes, match: str) -> None:
    """Garbage and wrong shapes raise ProtocolError naming the problem."""
    with pytest.raises(ProtocolError, match=match):
        decode_request(line)


def test_response_without_code_is_rejected() -> None:
    """An error response must carry an integer code."""
    with pytest.raises(ProtocolError, match="code"):
        decode_response(b'{"v": 1, "ok": false}')


def test_line_buffer_byte_by_byte_and_trailing_data() -> None:
    """Lines are found whether fed whole or byte by byte, and trailing data is kept."""
    data = encode_request(REQUEST) + b'{"v":1'
    buf = LineBuffer()
    lines = []
    for i in range(len(data)):
        buf.feed(data[i:i + 1])
        if (line := buf.next_line()) is not None:
            lines.append(line)
    assert [decode_request(x) for x in lines] == [REQUEST]
    assert buf.next_line() is None


def test_line_buffer_rejects_endless_line() -> None:
    """More than MAX_LINE bytes without a newline is a protocol error."""
    buf = LineBuffer()
    with pytest.raises(ProtocolError, match="no newline"):
        buf.feed(b"x" * (MAX_LINE + 1))

"""ZDS codec: messages round-trip, fd counts are enforced, bad datagrams raise typed errors."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshcore.protos.istio.workload.zds import (
    AddWorkload as PbAdd,
)
from meshcore.protos.istio.workload.zds import (
    WorkloadInfo,
    WorkloadRequest,
    WorkloadResponse,
    ZdsHello,
)
from meshcore.zds import (
    MAX_MESSAGE,
    Ack,
    AddWorkload,
    DelWorkload,
    Hello,
    KeepWorkload,
    SnapshotSent,
    ZdsEncodeError,
    ZdsProtocolError,
    decode_hello,
    decode_request,
    decode_response,
    encode_hello,
    encode_request,
    encode_response,
    fd_count,
)

REQUESTS = [
    pytest.param(AddWorkload("3f2c-uid", "web-1", "shop", "web"), id="add"),
    pytest.param(KeepWorkload("3f2c-uid"), id="keep"),
    pytest.param(DelWorkload("3f2c-uid"), id="del"),
    pytest.param(SnapshotSent(), id="snapshot-sent"),
]


@pytest.mark.parametrize("request_", REQUESTS)
def test_request_round_trip(request_: AddWorkload) -> None:
    """Each WorkloadRequest decodes to what was encoded when sent with its fd count."""
    assert decode_request(encode_request(request_), fd_count(request_)) == request_


def test_wire_bytes_match_istio_field_numbers() -> None:
    """Add uses field 1, del 2 (uid in field 2), snapshot 3, keep 5, as Istio's zds.proto."""
    assert encode_request(DelWorkload("u")) == b"\x12\x03\x12\x01u"
    assert encode_request(SnapshotSent()) == b"\x1a\x00"
    assert encode_request(KeepWorkload("u")) == b"\x2a\x03\x0a\x01u"
    pb = WorkloadRequest(add=PbAdd(uid="u", workload_info=WorkloadInfo(name="n")))
    assert decode_request(bytes(pb), 1) == AddWorkload("u", "n")


@pytest.mark.parametrize("ack", [pytest.param(Ack(), id="ack"),
                                 pytest.param(Ack("failure to start proxy"), id="nack")])
def test_response_round_trip(ack: Ack) -> None:
    """ACK and NACK survive a round trip; ok is true only for an empty error."""
    decoded = decode_response(encode_response(ack))
    assert decoded == ack and decoded.ok is (not ack.error)


def test_hello_round_trip_and_version_check() -> None:
    """V1 hello decodes; NOT_USED (an empty hello) is rejected naming the version."""
    assert decode_hello(encode_hello()) == Hello(1)
    with pytest.raises(ZdsProtocolError, match="version 0"):
        decode_hello(bytes(ZdsHello()))


@pytest.mark.parametrize("request_, fds", [
    pytest.param(AddWorkload("u"), 0, id="add-without-fd"),
    pytest.param(AddWorkload("u"), 2, id="add-with-two-fds"),
    pytest.param(DelWorkload("u"), 1, id="del-with-fd"),
    pytest.param(SnapshotSent(), 1, id="snapshot-with-fd"),
])
def test_wrong_fd_count_is_rejected(request_: AddWorkload, fds: int) -> None:
    """Exactly one fd with AddWorkload and none with anything else."""
    with pytest.raises(ZdsProtocolError, match="file descriptor"):
        decode_request(encode_request(request_), fds)


def test_fd_on_response_or_hello_is_rejected() -> None:
    """Hellos and acks never carry fds."""
    with pytest.raises(ZdsProtocolError, match="file descriptor"):
        decode_response(encode_response(Ack()), 1)
    with pytest.raises(ZdsProtocolError, match="file descriptor"):
        decode_hello(encode_hello(), 1)


def test_oversize_is_rejected_both_ways() -> None:
    """Encoding past 1 KiB is our error; receiving past 1 KiB is the peer's."""
    with pytest.raises(ZdsEncodeError, match="1024"):
        encode_request(AddWorkload("u", "x" * MAX_MESSAGE))
    big = bytes(WorkloadRequest(add=PbAdd(uid="u" * MAX_MESSAGE)))
    with pytest.raises(ZdsProtocolError, match="limit"):
        decode_request(big, 1)


def test_long_nack_is_shortened_to_fit() -> None:
    """A very long NACK text is cut so the response still fits one datagram."""
    data = encode_response(Ack("e" * 5000))
    assert len(data) <= MAX_MESSAGE and not decode_response(data).ok


@pytest.mark.parametrize("data", [
    pytest.param(b"\xff\xff\xff", id="bad-varint"),
    pytest.param(b"", id="empty"),
    pytest.param(b"GET / HTTP/1.1\r\n", id="http"),
    pytest.param(b"\x0a\x00", id="add-without-uid"),
    pytest.param(b"\x0a\x05\x0a", id="truncated-submessage"),
    pytest.param(b"\x0b", id="group-wire-type"),
])
def test_garbage_request_raises_typed_error(data: bytes) -> None:
    """Bytes that are not a meaningful WorkloadRequest raise ZdsProtocolError."""
    with pytest.raises(ZdsProtocolError):
        decode_request(data, 0)


def test_empty_response_is_rejected() -> None:
    """A response without its ack payload is a protocol error."""
    with pytest.raises(ZdsProtocolError, match="no ack"):
        decode_response(bytes(WorkloadResponse()))


@given(st.binary(max_size=64), st.integers(min_value=0, max_value=2))
def test_arbitrary_bytes_never_escape_as_other_errors(data: bytes, fds: int) -> None:
    """Any input either decodes or raises ZdsProtocolError, nothing else."""
    for decode in (lambda: decode_request(data, fds), lambda: decode_response(data, fds),
                   lambda: decode_hello(data, fds)):
        with contextlib.suppress(ZdsProtocolError):
            decode()

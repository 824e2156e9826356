"""SCM_RIGHTS helpers on a real socketpair(AF_UNIX, SOCK_SEQPACKET), sync and trio."""

from __future__ import annotations

import os
import socket

import pytest
import trio

from meshcore.zds import AddWorkload, ZdsProtocolError, decode_request, encode_request
from meshcore.zds.seqpacket import (
    check_netns_fd,
    recv_datagram,
    recv_datagram_async,
    send_datagram,
    send_datagram_async,
)

MESSAGE = AddWorkload("pod-uid", "web", "shop", "web-sa")


def _inode(fd: int) -> int:
    return os.fstat(fd).st_ino


def test_netns_fd_travels_with_add_workload() -> None:
    """The netns fd sent with AddWorkload arrives as a new fd to the same namespace."""
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    netns = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        send_datagram(left, encode_request(MESSAGE), [netns])
        received = recv_datagram(right)
        assert received is not None
        data, fds = received
        assert decode_request(data, len(fds)) == MESSAGE
        assert len(fds) == 1 and fds[0] != netns
        assert _inode(fds[0]) == _inode(netns)
        assert os.get_inheritable(fds[0]) is False  # MSG_CMSG_CLOEXEC
        check_netns_fd(fds[0])
        os.close(fds[0])
    finally:
        os.close(netns)
        left.close()
        right.close()


def test_non_netns_fd_is_rejected() -> None:
    """check_netns_fd refuses a plain file and a different namespace type."""
    with open("/proc/self/stat", "rb") as plain, pytest.raises(ZdsProtocolError,
                                                                match="not a namespace"):
        check_netns_fd(plain.fileno())
    uts = os.open("/proc/self/ns/uts", os.O_RDONLY)
    try:
        with pytest.raises(ZdsProtocolError, match="not a network namespace"):
            check_netns_fd(uts)
    finally:
        os.close(uts)


def test_oversize_datagram_is_truncation_error_and_fds_closed() -> None:
    """A datagram over 1 KiB raises, and the fd that came with it is closed, not leaked."""
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    netns = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        before = set(os.listdir("/proc/self/fd"))
        send_datagram(left, b"x" * 2000, [netns])
        with pytest.raises(ZdsProtocolError, match="truncated"):
            recv_datagram(right)
        assert set(os.listdir("/proc/self/fd")) == before
    finally:
        os.close(netns)
        left.close()
        right.close()


def test_end_of_stream_is_none() -> None:
    """When the peer closes, recv_datagram returns None."""
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    left.close()
    assert recv_datagram(right) is None
    right.close()


@pytest.mark.trio
async def test_trio_socket_variant() -> None:
    """The async helpers pass a datagram and fd over trio sockets the same way."""
    left, right = trio.socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    netns = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        await send_datagram_async(left, encode_request(MESSAGE), [netns])
        received = await recv_datagram_async(right)
        assert received is not None
        data, fds = received
        assert decode_request(data, len(fds)) == MESSAGE
        assert _inode(fds[0]) == _inode(netns)
        os.close(fds[0])
    finally:
        os.close(netns)
        left.close()
        right.close()

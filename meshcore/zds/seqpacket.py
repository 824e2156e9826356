"""SCM_RIGHTS send/receive of one ZDS datagram on a unix SOCK_SEQPACKET socket (thin I/O layer).

`send_datagram(sock, data, fds)` / `recv_datagram(sock)` for blocking stdlib sockets, and
`send_datagram_async` / `recv_datagram_async` for trio sockets (anything with awaitable
`sendmsg`/`recvmsg`; this module does not import trio). Received fds are opened close-on-exec.
`check_netns_fd(fd)` verifies that a received fd is a network namespace (NS_GET_NSTYPE).

Who calls it: the agent's ZDS server and ztunnel's ZDS client, around `meshcore.zds.codec`.
Invariants: a receive buffer of `MAX_MESSAGE` bytes; a truncated datagram or truncated ancillary
data raises `ZdsProtocolError` after closing every fd that did arrive (no fd leaks on bad input);
end of stream is `None`.
"""

from __future__ import annotations

import array
import fcntl
import os
import socket
from collections.abc import Awaitable, Sequence
from typing import Any, Protocol

from meshcore.zds.codec import MAX_MESSAGE, ZdsProtocolError

MAX_FDS = 4  # room to receive (and then reject) a few stray fds
ANCILLARY_SPACE = socket.CMSG_SPACE(MAX_FDS * array.array("i").itemsize)
NS_GET_NSTYPE = 0xB703
CLONE_NEWNET = 0x40000000

Received = tuple[bytes, list[int]]


class AsyncSeqpacketSocket(Protocol):
    def sendmsg(self, buffers: Sequence[bytes], ancdata: Sequence[tuple[int, int, bytes]],
                /) -> Awaitable[int]: ...

    def recvmsg(self, bufsize: int, ancbufsize: int, flags: int,
                /) -> Awaitable[tuple[bytes, list[tuple[int, int, bytes]], int, Any]]: ...


def _ancillary(fds: Sequence[int]) -> list[tuple[int, int, bytes]]:
    if not fds:
        return []
    return [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]


def _unpack(data: bytes, ancdata: list[tuple[int, int, bytes]], flags: int) -> Received | None:
    fds: list[int] = []
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(payload) - len(payload) % array.array("i").itemsize
            fds.extend(array.array("i", payload[:usable]))
    if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
        for fd in fds:
            os.close(fd)
        what = "datagram" if flags & socket.MSG_TRUNC else "ancillary data (too many fds)"
        raise ZdsProtocolError(f"truncated ZDS {what}: the peer sent more than "
                               f"{MAX_MESSAGE} bytes / {MAX_FDS} fds")
    if not data and not fds:
        return None  # orderly end of the connection
    return data, fds


def send_datagram(sock: socket.socket, data: bytes, fds: Sequence[int] = ()) -> None:
    sock.sendmsg([data], _ancillary(fds))


def recv_datagram(sock: socket.socket) -> Received | None:
    """One datagram and the fds that came with it; None at end of stream."""
    data, ancdata, flags, _ = sock.recvmsg(MAX_MESSAGE, ANCILLARY_SPACE, socket.MSG_CMSG_CLOEXEC)
    return _unpack(data, ancdata, flags)


async def send_datagram_async(sock: AsyncSeqpacketSocket, data: bytes,
                              fds: Sequence[int] = ()) -> None:
    await sock.sendmsg([data], _ancillary(fds))


async def recv_datagram_async(sock: AsyncSeqpacketSocket) -> Received | None:
    data, ancdata, flags, _ = await sock.recvmsg(MAX_MESSAGE, ANCILLARY_SPACE,
                                                 socket.MSG_CMSG_CLOEXEC)
    return _unpack(data, ancdata, flags)


def check_netns_fd(fd: int) -> None:
    """Raise ZdsProtocolError unless `fd` refers to a network namespace."""
    try:
        kind = fcntl.ioctl(fd, NS_GET_NSTYPE)
    except OSError as exc:
        raise ZdsProtocolError(f"fd {fd} sent with AddWorkload is not a namespace: {exc}") from None
    if kind != CLONE_NEWNET:
        raise ZdsProtocolError(f"fd {fd} sent with AddWorkload is a namespace of type {kind:#x}, "
                               "not a network namespace")

"""Non-blocking I/O on the stdlib socket under a `trio.SocketStream` (the TLS fast path).

Who calls it: `TlsStream` (tls_stream.py) when its transport is a `trio.SocketStream`, and the
splice relay (splice.py) through `raw_socket()`. It calls the socket's `recv_into` / `send`
directly and trio's `wait_readable` / `wait_writable` only when the kernel says it would block:
no per-call wrapper layers, and no scheduler round for a call that did not wait (trio's socket
methods take one even then).

After a read shorter than `SHORT_READ` the next receive waits for readability first (the socket
is almost surely empty), saving a failing `recv` per message in request/response traffic.

Invariants: at most one task receives and one task sends at a time (the owner's locks ensure
it); `send_nowait` never waits and keeps what the kernel refused, in order, for the next send.
Errors are raised as the raw `OSError` (callers map them to trio's stream errors); a socket
closed under a waiting task raises `trio.ClosedResourceError` (trio's `notify_closing`).
"""

from __future__ import annotations

import socket

import trio

# A read shorter than this most likely emptied the socket (request/response traffic), so the
# next receive waits for readability first instead of trying a recv that fails with EAGAIN
# (one syscall and one exception less per message). A wrong guess (more data arrived while the
# short read was processed) costs one scheduler round, so the bar is low: bulk reads over a
# veth are a few KiB to hundreds of KiB, a 64-byte message is ~100 bytes of TLS record.
SHORT_READ = 2 * 1024


def raw_socket(stream: trio.abc.Stream) -> socket.socket | None:
    """The stdlib socket under a `trio.SocketStream` (for non-blocking fast paths), else None.

    trio keeps it in the private `_sock` attribute; if that ever changes, callers fall back to
    the generic stream API (slower, same behaviour).
    """
    if not isinstance(stream, trio.SocketStream):
        return None
    sock = getattr(stream.socket, "_sock", None)
    return sock if isinstance(sock, socket.socket) and not sock.getblocking() else None


class RawSocket:
    """Receive into a reused buffer; send with waits only when the socket is full."""

    __slots__ = ("_buf", "_drained", "sock", "unsent", "waited")

    def __init__(self, sock: socket.socket, read_size: int) -> None:
        self.sock = sock
        self._buf = bytearray(read_size)
        self._drained = False  # the last read was short: wait before the next recv
        self.waited = False  # set by send_all when it had to wait (a schedule point happened)
        self.unsent: memoryview | None = None  # what send_nowait could not write

    async def receive(self) -> tuple[memoryview, bool]:
        """(bytes read, valid until the next call; empty at EOF), whether it waited."""
        sock, buf = self.sock, self._buf
        waited = self._drained
        if waited:
            await trio.lowlevel.wait_readable(sock)
        while True:
            try:
                n = sock.recv_into(buf)
            except BlockingIOError:
                waited = True
                await trio.lowlevel.wait_readable(sock)
                continue
            self._drained = 0 < n < SHORT_READ
            return memoryview(buf)[:n], waited

    async def send_all(self, data: bytes | memoryview) -> None:
        """Write `unsent` (if any) then `data`, waiting for writability as needed."""
        if self.unsent is not None:
            unsent, self.unsent = self.unsent, None
            await self._send_all(unsent)
        await self._send_all(data)

    async def _send_all(self, data: bytes | memoryview) -> None:
        sock = self.sock
        view = memoryview(data)
        while view:
            try:
                n = sock.send(view)
            except BlockingIOError:
                self.waited = True
                await trio.lowlevel.wait_writable(sock)
                continue
            view = view[n:]

    def flush_nowait(self) -> bool:
        """Write `unsent` without waiting; True once all of it went (then `unsent` is None),
        False if the socket is full (the rest stays in `unsent`)."""
        view = self.unsent
        sock = self.sock
        while view is not None:
            try:
                n = sock.send(view)
            except BlockingIOError:
                self.unsent = view
                return False
            view = view[n:] if n < len(view) else None
        self.unsent = None
        return True

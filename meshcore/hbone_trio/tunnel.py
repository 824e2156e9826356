"""TunnelStream: one HBONE CONNECT stream as a trio `HalfCloseableStream`.

Who calls it: created by `HboneTrioConnection` (client: `open_tunnel_nowait`; server: for each
RequestReceived); the reader task feeds it events (`_on_data`, `_on_eof`, `_on_reset`,
`_on_response`, `_on_connection_lost`); applications and `relay()` use the stream API.

Invariants: `receive_some` hands out views of decrypted TLS buffers (zero copy) and acknowledges
them to the core (re-opening flow-control windows) as it hands them out; `send_all` returns only
after its bytes were written to TLS (the core's frames alias the caller's buffer); every method
has exactly one schedule point; connection death wakes every waiter with ConnectionLostError.
"""

from __future__ import annotations

import collections
import contextlib
import operator
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING

import trio

from meshcore import hbone
from meshcore.hbone import ErrorCode
from meshcore.hbone_trio.errors import ConnectionLostError, StreamResetError

if TYPE_CHECKING:
    from meshcore.hbone_trio.connection import HboneTrioConnection

# How long a send may wait on a peer that stops reading before the connection is declared dead.
SEND_STALL_TIMEOUT = 20.0


class DirectSink:
    """A plain socket the reader may write a tunnel's DATA to directly (see `splice.py`)."""

    __slots__ = ("last", "nbytes", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.nbytes = 0  # bytes the reader wrote directly
        self.last = trio.current_time()  # when it last did


class TunnelStream(trio.abc.HalfCloseableStream):
    """One CONNECT stream as a trio half-closeable stream.

    `receive_some` returns views of decrypted data (zero copy) and re-opens the flow-control
    window as it hands them out; `send_all` waits for window; `send_eof` sends END_STREAM;
    `aclose` resets the stream (CANCEL) unless both directions already ended.
    """

    def __init__(self, conn: HboneTrioConnection, stream_id: int) -> None:
        self.conn = conn
        self.stream_id = stream_id
        self.response: hbone.ResponseReceived | None = None
        self._queue: collections.deque[memoryview] = collections.deque()
        self._queued = 0
        self._eof_received = False
        self._eof_sent = False
        self._closed = False
        self._error: BaseException | None = None
        self._lot = trio.lowlevel.ParkingLot()
        self._response_event = trio.Event()
        self._recv_busy = False
        self._send_busy = False
        self._responded = False
        # Set by the splice relay (`splice.py`): the reader writes arriving DATA straight to
        # this socket (non-blocking) while nothing is queued; see `_on_data`.
        self._direct: DirectSink | None = None

    # -- events from the reader

    def _on_data(self, data: memoryview) -> None:
        if self._closed:
            self.conn.core.acknowledge_received_data(self.stream_id, len(data))
            return
        sink = self._direct
        if sink is not None and not self._queue:
            # Splice fast path: no task hop. Whatever the socket does not take now is queued
            # (in order, behind nothing) for the splice task, and stays unacknowledged, so
            # flow control stops the peer while the socket is full.
            try:
                n = sink.sock.send(data)
            except BlockingIOError:
                n = 0
            except OSError:
                n = 0  # the splice task's own send reports the error
                self._direct = None
            if n:
                sink.nbytes += n
                sink.last = trio.current_time()
                self.conn.core.acknowledge_received_data(self.stream_id, n)
                if n == len(data):
                    return
                data = data[n:]
        self._queue.append(data)
        self._queued += len(data)
        self._lot.unpark_all()

    def _on_eof(self) -> None:
        self._eof_received = True
        self._lot.unpark_all()
        self._maybe_done()

    def _on_reset(self, event: hbone.StreamReset) -> None:
        who = "peer" if event.remote else "local HTTP/2 core"
        self._error = StreamResetError(
            f"HBONE stream {self.stream_id} on {self.conn.label} reset by {who}:"
            f" {event.error_code!r} {event.reason}".rstrip(),
            stream_id=self.stream_id,
            error_code=int(event.error_code),
            remote=event.remote,
        )
        self._response_event.set()
        self._lot.unpark_all()
        self.conn._window_lot.unpark_all()
        self.conn._forget(self)

    def _on_response(self, event: hbone.ResponseReceived) -> None:
        self.response = event
        self._response_event.set()

    def _on_connection_lost(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = ConnectionLostError(
                f"HBONE connection {self.conn.label} lost under stream {self.stream_id}: {exc!r}"
            )
        self._response_event.set()
        self._lot.unpark_all()

    def _maybe_done(self) -> None:
        if self._eof_received and self._eof_sent:
            self.conn._forget(self)

    # -- client side

    async def wait_response(self) -> hbone.ResponseReceived:
        """Wait for the CONNECT response; raises if the stream or connection broke first."""
        await self._response_event.wait()
        if self.response is None:
            assert self._error is not None
            raise self._error
        return self.response

    # -- server side

    async def respond(
        self, status: int, headers: Sequence[tuple[str, str]] = (), *, end_stream: bool = False
    ) -> None:
        self.conn._check_alive()
        self.conn.core.respond(self.stream_id, status, headers, end_stream=end_stream)
        self._responded = True
        if end_stream:
            self._eof_sent = True
            self._maybe_done()
        await self.conn.flush()

    # -- receive

    async def receive_some(self, max_bytes: int | None = None) -> memoryview:  # type: ignore[override]
        if max_bytes is not None:
            max_bytes = operator.index(max_bytes)
            if max_bytes < 1:
                raise ValueError("max_bytes must be >= 1")
        if self._recv_busy:
            raise trio.BusyResourceError("another task is receiving on this tunnel")
        self._recv_busy = True
        try:
            # Exactly one schedule point: parking for data, or an explicit one if none was needed.
            await trio.lowlevel.checkpoint_if_cancelled()
            parked = False
            while True:
                if self._closed:
                    raise trio.ClosedResourceError("tunnel stream was closed")
                if self._queue:
                    view = self._queue.popleft()
                    if max_bytes is not None and len(view) > max_bytes:
                        self._queue.appendleft(view[max_bytes:])
                        view = view[:max_bytes]
                    n = len(view)
                    self._queued -= n
                    self._ack(n)
                    if not parked:
                        await trio.lowlevel.cancel_shielded_checkpoint()
                    return view
                if self._eof_received:
                    if not parked:
                        await trio.lowlevel.cancel_shielded_checkpoint()
                    return memoryview(b"")
                if self._error is not None:
                    raise self._error
                parked = True
                await self._lot.park()
        finally:
            self._recv_busy = False

    def _ack(self, n: int) -> None:
        conn = self.conn
        if n and not conn.closed:
            conn.core.acknowledge_received_data(self.stream_id, n)
            if conn.core.bytes_to_send():
                # The WINDOW_UPDATE goes out now if the socket takes it, else via the writer.
                try:
                    written = conn.try_flush_nowait()
                except ConnectionLostError:
                    return  # recorded on the connection; the next call on the stream raises
                if not written:
                    conn._wake_writer.set()

    # -- send

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._send_all(data, checkpoint=True)

    async def _send_all(
        self, data: bytes | bytearray | memoryview, *, checkpoint: bool
    ) -> None:
        """send_all; with checkpoint=False no schedule point unless it had to wait (splice)."""
        if self._send_busy:
            raise trio.BusyResourceError("another task is sending on this tunnel")
        self._send_busy = True
        try:
            # Schedule point: the flush's socket write, or the explicit one at the end.
            await trio.lowlevel.checkpoint_if_cancelled()
            flushed = not checkpoint
            self._check_send()
            view = memoryview(data).cast("B") if not isinstance(data, memoryview) else data
            if view.ndim != 1 or view.itemsize != 1:
                view = view.cast("B")
            core = self.conn.core
            while view:
                self._check_send()
                try:
                    n = core.send_data(self.stream_id, view)
                except hbone.HboneError as exc:
                    raise self._error or self._core_error(exc) from exc
                if n and self.conn.try_flush_nowait():
                    # Encrypted and written without waiting (no shielded scope needed).
                    view = view[n:]
                elif n:
                    # The queued frames alias `view`: they must be written before we return,
                    # even if we are cancelled (bounded, so a stuck peer breaks the connection).
                    with trio.CancelScope(shield=True) as scope:
                        scope.deadline = trio.current_time() + SEND_STALL_TIMEOUT
                        await self.conn.flush(checkpoint=checkpoint)
                    flushed = True
                    if scope.cancelled_caught:
                        self.conn._fail(
                            ConnectionLostError(
                                f"HBONE peer {self.conn.label} did not read for"
                                f" {SEND_STALL_TIMEOUT}s"
                            )
                        )
                    view = view[n:]
                else:
                    await self.conn._window_lot.park()
                    flushed = True
            if not flushed:
                await trio.lowlevel.cancel_shielded_checkpoint()
        finally:
            self._send_busy = False

    def _core_error(self, exc: hbone.HboneError) -> trio.BrokenResourceError:
        """Translate a core refusal (stream already closed, connection terminated)."""
        if isinstance(exc, hbone.StreamClosedError):
            return StreamResetError(
                f"HBONE stream {self.stream_id} on {self.conn.label} is closed: {exc}",
                stream_id=self.stream_id,
                error_code=int(ErrorCode.STREAM_CLOSED),
                remote=False,
            )
        return ConnectionLostError(f"HBONE connection {self.conn.label}: {exc}")

    def _check_send(self) -> None:
        if self._closed or self._eof_sent:
            raise trio.ClosedResourceError("tunnel stream is closed for sending")
        if self._error is not None:
            raise self._error

    async def wait_send_all_might_not_block(self) -> None:
        if self._send_busy:
            raise trio.BusyResourceError("another task is sending on this tunnel")
        self._send_busy = True
        try:
            await trio.lowlevel.checkpoint()
            self._check_send()
            while self.conn.core.local_send_window(self.stream_id) <= 0:
                await self.conn._window_lot.park()
                self._check_send()
        finally:
            self._send_busy = False

    async def send_eof(self) -> None:
        if self._send_busy:
            raise trio.BusyResourceError("another task is sending on this tunnel")
        await trio.lowlevel.checkpoint()
        if self._closed:
            raise trio.ClosedResourceError("tunnel stream was closed")
        if self._eof_sent:
            return
        if self._error is not None:
            raise self._error
        self._eof_sent = True
        try:
            self.conn.core.end_stream(self.stream_id)
        except hbone.HboneError as exc:
            raise self._error or self._core_error(exc) from exc
        self._maybe_done()
        await self.conn.flush()

    # -- close

    async def aclose(self) -> None:
        """Close like a TCP socket: END_STREAM if not sent, then RST_STREAM(CANCEL) if the peer
        has not finished sending (it must stop: nobody reads). Never blocks long."""
        await self._close(graceful=True)

    async def reset(self, error_code: ErrorCode = ErrorCode.CANCEL) -> None:
        """Abort: RST_STREAM(error_code) unless both directions already ended; then closed."""
        await self._close(graceful=False, error_code=error_code)

    async def _close(self, *, graceful: bool, error_code: ErrorCode = ErrorCode.CANCEL) -> None:
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        unread = self._queued
        self._queue.clear()
        self._queued = 0
        conn = self.conn
        if not conn.closed and self._error is None:
            core = conn.core
            with contextlib.suppress(hbone.HboneError):
                if unread:
                    core.acknowledge_received_data(self.stream_id, unread)
                if graceful and not self._eof_sent and self.response_sent_or_received:
                    core.end_stream(self.stream_id)
                    self._eof_sent = True
                if not (self._eof_received and self._eof_sent):
                    core.reset_stream(self.stream_id, error_code)
            conn._wake_writer.set()
        conn._forget(self)
        self._lot.unpark_all()
        conn._window_lot.unpark_all()
        await trio.lowlevel.checkpoint()

    @property
    def response_sent_or_received(self) -> bool:
        """True once the tunnel is open (client: 200 received; server: response sent)."""
        return self.response is not None or self._responded

"""Splice: the fast relay between one HBONE tunnel and one plain TCP socket.

Who calls it: `relay.relay()` uses it automatically when one side is a `TunnelStream` and the
other a `trio.SocketStream` (the HBONE server's upstream, ztunnel's outbound downstream); the
generic two-task copy remains for every other pair. Same contract as `relay()`: copy both
ways, half-close, idle timeout, counters; it never raises for I/O errors; the caller closes.

Why: the generic relay moves every chunk through a task hop (connection reader -> tunnel
queue -> relay task -> socket) and through trio's socket wrappers, which costs scheduler rounds
and Python layers per message (docs/hbone-data-path.md, "Splice").

- tunnel -> socket: the tunnel gets a `DirectSink`; the connection's reader task, on DATA for
  this stream, `send()`s it to the socket (non-blocking) if nothing is queued ahead of it, and
  acknowledges what the kernel took. What the socket refuses is queued, unacknowledged (so the
  peer's window closes: flow control is the back-pressure), and drained in order by this
  module's drain task, which waits for writability. The drain sends from the head of the
  queue without popping it first, so the reader never overtakes a partly sent chunk.
- socket -> tunnel: one task does non-blocking `recv_into` (256 KiB, reused buffer), waiting
  for readability only when the socket is empty (or, after a read shorter than
  `rawsock.SHORT_READ`, before the next `recv`), and encrypts + sends the DATA frames itself
  (`TunnelStream._send_all(checkpoint=False)`): a message that did not have to wait costs no
  scheduler round besides the wait for the next read. Every few consecutive reads that never
  waited it takes a checkpoint, so a bulk sender cannot starve other tasks.

Invariant: `tunnel._direct` is cleared before the socket is closed (the reader must never
write to a closed, possibly reused, descriptor).
"""

from __future__ import annotations

import dataclasses
import errno
import math
import socket

import trio

from meshcore.hbone_trio.meter import RelayMeter
from meshcore.hbone_trio.rawsock import SHORT_READ, raw_socket
from meshcore.hbone_trio.tunnel import DirectSink, TunnelStream

# Reads in a row that never waited before the socket->tunnel task yields to the scheduler.
_READS_PER_CHECKPOINT = 4


@dataclasses.dataclass(frozen=True)
class SpliceResult:
    to_tunnel: int
    to_socket: int
    idle_timed_out: bool
    error: BaseException | None


class _Progress:
    __slots__ = ("done", "error", "last", "nbytes")

    def __init__(self) -> None:
        self.nbytes = 0
        self.done = False
        self.error: BaseException | None = None
        self.last = trio.current_time()


def can_splice(a: trio.abc.Stream, b: trio.abc.Stream) -> bool:
    """True if (a, b) is a tunnel and a plain socket stream (in either order)."""
    if isinstance(a, TunnelStream):
        return raw_socket(b) is not None
    return isinstance(b, TunnelStream) and raw_socket(a) is not None


async def splice(
    tunnel: TunnelStream,
    stream: trio.SocketStream,
    *,
    idle_timeout: float | None,
    buffer_size: int,
    meter: RelayMeter | None = None,
) -> SpliceResult:
    """Copy both ways until both directions end (or one fails, or idle); does not close."""
    sock = raw_socket(stream)
    assert sock is not None, "splice needs a trio.SocketStream over a stdlib socket"
    sink = DirectSink(sock)
    up, down = _Progress(), _Progress()  # up: socket -> tunnel; down: tunnel -> socket
    if meter is not None:
        meter.attach(lambda: (down.nbytes + sink.nbytes, up.nbytes))
    idle = False
    tunnel._direct = sink
    try:
        async with trio.open_nursery() as nursery:

            async def run(fn, progress: _Progress) -> None:  # type: ignore[no-untyped-def]
                try:
                    await fn(progress)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                    progress.error = exc
                    nursery.cancel_scope.cancel()
                progress.done = True
                if up.done and down.done:
                    nursery.cancel_scope.cancel()

            async def to_tunnel(progress: _Progress) -> None:
                await _socket_to_tunnel(sock, tunnel, progress, buffer_size)

            async def to_socket(progress: _Progress) -> None:
                await _tunnel_to_socket(tunnel, stream, sock, progress)

            nursery.start_soon(run, to_tunnel, up)
            nursery.start_soon(run, to_socket, down)
            if idle_timeout is not None and not math.isinf(idle_timeout):
                while True:
                    last = max(up.last, down.last, sink.last)
                    await trio.sleep_until(last + idle_timeout)
                    last = max(up.last, down.last, sink.last)
                    if trio.current_time() >= last + idle_timeout:
                        idle = True
                        nursery.cancel_scope.cancel()
                        break
    finally:
        tunnel._direct = None
    return SpliceResult(
        to_tunnel=up.nbytes,
        to_socket=down.nbytes + sink.nbytes,
        idle_timed_out=idle,
        error=up.error or down.error,
    )


def _socket_error(exc: OSError) -> trio.BrokenResourceError | trio.ClosedResourceError:
    if exc.errno == errno.EBADF:
        return trio.ClosedResourceError("socket was closed")
    return trio.BrokenResourceError(f"socket failed: {exc}")


async def _socket_to_tunnel(
    sock: socket.socket, tunnel: TunnelStream, progress: _Progress, size: int
) -> None:
    buf = bytearray(size)
    view = memoryview(buf)
    streak = 0
    drained = False  # the last read was short: wait first (see rawsock.SHORT_READ)
    while True:
        if drained:
            streak = 0
            await trio.lowlevel.wait_readable(sock)
        try:
            n = sock.recv_into(buf)
        except BlockingIOError:
            streak = 0
            drained = False
            await trio.lowlevel.wait_readable(sock)
            continue
        except OSError as exc:
            raise _socket_error(exc) from exc
        if not n:
            break
        drained = n < SHORT_READ
        streak += 1
        # The frames alias `buf`: _send_all returns only once they are encrypted and written.
        await tunnel._send_all(view[:n], checkpoint=streak >= _READS_PER_CHECKPOINT)
        if streak >= _READS_PER_CHECKPOINT:
            streak = 0
        progress.nbytes += n
        progress.last = trio.current_time()
    await tunnel.send_eof()


async def _tunnel_to_socket(
    tunnel: TunnelStream, stream: trio.SocketStream, sock: socket.socket, progress: _Progress
) -> None:
    queue = tunnel._queue
    while True:
        while queue:
            view = queue[0]
            try:
                n = sock.send(view)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(sock)
                continue
            except OSError as exc:
                raise _socket_error(exc) from exc
            if n == len(view):
                queue.popleft()
            else:
                queue[0] = view[n:]
            tunnel._queued -= n
            tunnel._ack(n)
            progress.nbytes += n
            progress.last = trio.current_time()
        if tunnel._closed:
            raise trio.ClosedResourceError("tunnel stream was closed")
        if tunnel._eof_received:
            break
        if tunnel._error is not None:
            raise tunnel._error
        await tunnel._lot.park()
    await stream.send_eof()

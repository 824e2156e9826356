"""Bidirectional byte copy between two trio streams (app socket <-> HBONE tunnel).

Who calls it: the HBONE server (`server.py`) after a 200, and ztunnel's outbound path after
`HboneClient.connect`. Returns a frozen `RelayResult` for metrics and access logs.

Behaviour:
- Two copy loops run concurrently. Each reads at most `buffer_size` (256 KiB) and waits for the
  write to finish before reading again: back-pressure comes from the destination.
- EOF one way -> `send_eof()` on the other stream (if it is half-closeable); the other
  direction keeps flowing until it also ends.
- An error in either direction ends both (the other stream is reset/closed), recorded in the
  result; `idle_timeout` seconds without a byte in either direction ends both too.
- Copies: reading from a `trio.SocketStream` uses `recv_into` a buffer reused per direction
  (no allocation per read); tunnel payload arrives as views of the decrypted TLS buffer and is
  written to the socket as is. A reused buffer is safe because `send_all` returns only after
  the bytes were handed to the kernel (`TunnelStream` guarantees this too).
- Both streams are closed in `finally` (tunnels: reset if unfinished), whatever happens.
- A tunnel paired with a plain `trio.SocketStream` (the common case: HBONE server upstream,
  ztunnel outbound downstream) goes through `splice.splice`, the same contract with fewer
  task hops and scheduler rounds per chunk; every other pair uses the two copy loops here.
"""

from __future__ import annotations

import dataclasses
import errno
import math

import trio

from meshcore.hbone_trio.meter import RelayMeter
from meshcore.hbone_trio.splice import can_splice, splice
from meshcore.hbone_trio.tunnel import TunnelStream

BUFFER_SIZE = 256 * 1024


@dataclasses.dataclass(frozen=True)
class RelayResult:
    """What a finished relay moved, and why it ended."""

    a_to_b: int
    b_to_a: int
    idle_timed_out: bool = False
    error: str | None = None  # the first error seen, if the relay did not end cleanly


class _Direction:
    __slots__ = ("done", "error", "nbytes")

    def __init__(self) -> None:
        self.nbytes = 0
        self.done = False
        self.error: BaseException | None = None


class _Shared:
    __slots__ = ("idle", "last")

    def __init__(self) -> None:
        self.last = trio.current_time()  # time of the last byte moved either way
        self.idle = False


async def relay(
    a: trio.abc.Stream,
    b: trio.abc.Stream,
    *,
    idle_timeout: float | None = None,
    buffer_size: int = BUFFER_SIZE,
    meter: RelayMeter | None = None,
) -> RelayResult:
    """Copy a->b and b->a until both directions end; close both. Never raises for I/O errors.
    `meter`, if given, shows the bytes moved so far while the relay runs."""
    if can_splice(a, b):
        return await _spliced(a, b, idle_timeout=idle_timeout, buffer_size=buffer_size,
                              meter=meter)
    ab, ba = _Direction(), _Direction()
    if meter is not None:
        meter.attach(lambda: (ab.nbytes, ba.nbytes))
    state = _Shared()
    try:
        async with trio.open_nursery() as nursery:

            async def one_way(src: trio.abc.Stream, dst: trio.abc.Stream, d: _Direction) -> None:
                try:
                    await _copy(src, dst, d, state, buffer_size)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                    d.error = exc
                    nursery.cancel_scope.cancel()
                d.done = True
                if ab.done and ba.done:
                    nursery.cancel_scope.cancel()

            nursery.start_soon(one_way, a, b, ab)
            nursery.start_soon(one_way, b, a, ba)
            if idle_timeout is not None and not math.isinf(idle_timeout):
                while True:
                    await trio.sleep_until(state.last + idle_timeout)
                    if trio.current_time() >= state.last + idle_timeout:
                        state.idle = True
                        nursery.cancel_scope.cancel()
                        break
    finally:
        failed = ab.error is not None or ba.error is not None or state.idle
        with trio.CancelScope(shield=True), trio.move_on_after(1):
            for s in (a, b):
                if failed and isinstance(s, TunnelStream):
                    await s.reset()
                else:
                    await trio.aclose_forcefully(s) if failed else await s.aclose()
    error = ab.error or ba.error
    return RelayResult(
        a_to_b=ab.nbytes,
        b_to_a=ba.nbytes,
        idle_timed_out=state.idle,
        error=repr(error) if error is not None else None,
    )


async def _spliced(
    a: trio.abc.Stream, b: trio.abc.Stream, *, idle_timeout: float | None, buffer_size: int,
    meter: RelayMeter | None,
) -> RelayResult:
    tunnel_first = isinstance(a, TunnelStream)
    tunnel, stream = (a, b) if tunnel_first else (b, a)
    assert isinstance(tunnel, TunnelStream) and isinstance(stream, trio.SocketStream)
    live = RelayMeter()
    if meter is not None:
        def totals() -> tuple[int, int]:
            to_socket, to_tunnel = live.totals()
            return (to_socket, to_tunnel) if tunnel_first else (to_tunnel, to_socket)

        meter.attach(totals)
    result = None
    try:
        result = await splice(tunnel, stream, idle_timeout=idle_timeout, buffer_size=buffer_size,
                              meter=live)
    finally:
        failed = result is None or result.error is not None or result.idle_timed_out
        with trio.CancelScope(shield=True), trio.move_on_after(1):
            if failed:
                await tunnel.reset()
                await trio.aclose_forcefully(stream)
            else:
                await tunnel.aclose()
                await stream.aclose()
    error = repr(result.error) if result.error is not None else None
    to_socket, to_tunnel = result.to_socket, result.to_tunnel
    return RelayResult(
        a_to_b=to_socket if tunnel_first else to_tunnel,
        b_to_a=to_tunnel if tunnel_first else to_socket,
        idle_timed_out=result.idle_timed_out,
        error=error,
    )


async def _copy(
    src: trio.abc.Stream, dst: trio.abc.Stream, d: _Direction, state: _Shared, size: int
) -> None:
    if isinstance(src, trio.SocketStream):
        sock = src.socket
        buf = bytearray(size)
        view = memoryview(buf)
        while True:
            try:
                n = await sock.recv_into(buf)
            except OSError as exc:
                if exc.errno == errno.EBADF:
                    raise trio.ClosedResourceError("socket was closed") from exc
                raise trio.BrokenResourceError(f"socket read failed: {exc}") from exc
            if not n:
                break
            await dst.send_all(view[:n])
            d.nbytes += n
            state.last = trio.current_time()
    else:
        while True:
            chunk = await src.receive_some(size)
            if not chunk:
                break
            await dst.send_all(chunk)
            d.nbytes += len(chunk)
            state.last = trio.current_time()
    if isinstance(dst, trio.abc.HalfCloseableStream):
        await dst.send_eof()

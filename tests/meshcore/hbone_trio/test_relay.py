"""relay(): byte-exact copy, half-close propagation, idle timeout, errors, counters."""

from __future__ import annotations

import os

import pytest
import trio
import trio.testing

from meshcore.hbone_trio.errors import StreamResetError
from meshcore.hbone_trio.meter import RelayMeter
from meshcore.hbone_trio.relay import RelayResult, relay
from tests.meshcore.hbone_trio.pair import connection_pair, tunnel_pair

pytestmark = pytest.mark.trio


def _sockets() -> tuple[trio.SocketStream, trio.SocketStream]:
    a, b = trio.socket.socketpair()
    return trio.SocketStream(a), trio.SocketStream(b)


async def _read_all(stream: trio.abc.ReceiveStream) -> bytes:
    got = bytearray()
    while chunk := await stream.receive_some():
        got += chunk
    return bytes(got)


async def test_socket_to_tunnel_relay_half_close_and_counters() -> None:
    """App EOF becomes END_STREAM; the reply direction keeps flowing; counters match."""
    app, proxy_side = _sockets()
    up = os.urandom(3 << 20)
    down = os.urandom(1 << 20)
    results: list[RelayResult] = []
    async with trio.open_nursery() as nursery:
        client, _server, accepted = await connection_pair(nursery)
        c, s = await tunnel_pair(client, accepted)

        async def run_relay() -> None:
            results.append(await relay(proxy_side, c))

        async def far_end() -> None:
            # Read everything the app sent (until its EOF), then answer and finish.
            assert await _read_all(s) == up
            await s.send_all(down)
            await s.send_eof()

        async with trio.open_nursery() as inner:
            inner.start_soon(run_relay)
            inner.start_soon(far_end)
            await app.send_all(up)
            await app.send_eof()
            assert await _read_all(app) == down
        nursery.cancel_scope.cancel()
    assert results == [RelayResult(a_to_b=len(up), b_to_a=len(down))]


async def test_idle_timeout_ends_both_directions(autojump_clock) -> None:  # type: ignore[no-untyped-def]
    """No bytes either way for idle_timeout seconds ends the relay and closes both streams."""
    a_app, a = _sockets()
    b, b_app = _sockets()
    with trio.fail_after(100):
        result = await relay(a, b, idle_timeout=30)
    assert result.idle_timed_out
    assert await a_app.receive_some() == b""
    assert await b_app.receive_some() == b""


async def test_activity_postpones_the_idle_timeout(autojump_clock) -> None:  # type: ignore[no-untyped-def]
    """Traffic every 20 s keeps a relay with a 30 s idle timeout alive."""
    a_app, a = _sockets()
    b, b_app = _sockets()
    result: list[RelayResult] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: _collect(result, relay(a, b, idle_timeout=30)))
        for _ in range(5):
            await trio.sleep(20)
            await a_app.send_all(b"x")
            assert await b_app.receive_some() == b"x"
        await a_app.send_eof()
        await b_app.send_eof()
    assert result[0] == RelayResult(a_to_b=5, b_to_a=0)


async def _collect(out: list[RelayResult], coro) -> None:  # type: ignore[no-untyped-def]
    out.append(await coro)


async def test_broken_side_resets_the_tunnel() -> None:
    """If the app socket breaks, the relay ends with an error and resets the tunnel."""
    app, proxy_side = _sockets()
    async with trio.open_nursery() as nursery:
        client, _server, accepted = await connection_pair(nursery)
        c, s = await tunnel_pair(client, accepted)
        results: list[RelayResult] = []
        async with trio.open_nursery() as inner:
            inner.start_soon(lambda: _collect(results, relay(proxy_side, c)))
            await trio.testing.wait_all_tasks_blocked()
            await s.send_all(b"data for a dead app")
            app.socket.close()  # RST-like: the relay's write to the app fails
            with pytest.raises(StreamResetError):
                while True:
                    await s.receive_some()
                    await s.send_all(b"more" * 10000)
        assert results[0].error is not None
        nursery.cancel_scope.cancel()


async def _exact(stream: trio.abc.ReceiveStream, n: int) -> bytes:
    got = bytearray()
    while len(got) < n:
        got += await stream.receive_some()
    return bytes(got)


@pytest.mark.parametrize("kind", ["splice-socket-first", "splice-tunnel-first", "copy-loops"])
async def test_meter_shows_bytes_while_the_relay_runs(kind: str) -> None:
    """RelayMeter.totals() reads (a_to_b, b_to_a) mid-relay, oriented like the result, on the
    splice path (either argument order) and on the generic copy loops."""
    app, proxy_side = _sockets()
    meter = RelayMeter()
    results: list[RelayResult] = []
    async with trio.open_nursery() as nursery:
        if kind == "copy-loops":
            far, near = _sockets()
            a, b = proxy_side, near
        else:
            client, _server, accepted = await connection_pair(nursery)
            near, far = await tunnel_pair(client, accepted)
            a, b = (proxy_side, near) if kind == "splice-socket-first" else (near, proxy_side)
        app_is_a = a is proxy_side

        finished = trio.Event()

        async def run() -> None:
            results.append(await relay(a, b, meter=meter))
            finished.set()

        nursery.start_soon(run)
        up, down = os.urandom(300_000), os.urandom(5_000)
        await app.send_all(up)
        assert await _exact(far, len(up)) == up
        await trio.testing.wait_all_tasks_blocked()  # the relay counts after its write returns
        assert meter.totals() == ((len(up), 0) if app_is_a else (0, len(up)))
        await far.send_all(down)
        assert await _exact(app, len(down)) == down
        await trio.testing.wait_all_tasks_blocked()
        live = meter.totals()
        assert live == ((len(up), len(down)) if app_is_a else (len(down), len(up)))
        await app.send_eof()
        await far.send_eof()
        assert await _read_all(app) == b""
        await finished.wait()
        nursery.cancel_scope.cancel()
    assert (results[0].a_to_b, results[0].b_to_a) == live

"""`RawSocket`'s short-read rule: after a short read the next receive waits for readability first.

Checks that the wait-first path returns data that was already queued (it must not hang or lose
bytes) and that bulk data after small messages arrives byte-exact.
"""

from __future__ import annotations

import os

import pytest
import trio

from meshcore.hbone_trio.rawsock import SHORT_READ, RawSocket

pytestmark = pytest.mark.trio


async def test_short_read_then_queued_bulk_arrives_exactly() -> None:
    """After a short read, data queued before the next receive is returned, byte-exact."""
    a, b = trio.socket.socketpair()
    raw = RawSocket(b._sock, 256 * 1024)  # type: ignore[attr-defined]
    a._sock.send(b"ping")  # type: ignore[attr-defined]
    data, _ = await raw.receive()
    assert bytes(data) == b"ping"
    big = os.urandom(SHORT_READ * 3)
    a._sock.sendall(b"pong" + big)  # type: ignore[attr-defined]
    got = bytearray()
    with trio.fail_after(5):
        while len(got) < 4 + len(big):
            data, _ = await raw.receive()
            got += data
    assert got == b"pong" + big
    a.close()
    b.close()


async def test_short_read_waits_and_reports_it() -> None:
    """A receive after a short read waits for the peer's next message and says it waited."""
    a, b = trio.socket.socketpair()
    raw = RawSocket(b._sock, 256 * 1024)  # type: ignore[attr-defined]
    a._sock.send(b"one")  # type: ignore[attr-defined]
    data, _ = await raw.receive()
    assert bytes(data) == b"one"

    async def later() -> None:
        await trio.sleep(0.01)
        a._sock.send(b"two")  # type: ignore[attr-defined]

    async with trio.open_nursery() as nursery:
        nursery.start_soon(later)
        with trio.fail_after(5):
            data, waited = await raw.receive()
    assert bytes(data) == b"two" and waited
    a.close()
    b.close()

"""TlsStream: trio stream conformance, batching, handshake failures and identity checks."""

from __future__ import annotations

import datetime as dt
import os

import pytest
import trio
import trio.testing

from meshcore import pki, tlsconfig
from meshcore.hbone_trio.tls_stream import TlsHandshakeError, TlsStream
from tests.meshcore.hbone_trio import certs

pytestmark = pytest.mark.trio

CLIENT = certs.cached("client")
SERVER = certs.cached("server")
CACHE = tlsconfig.TlsContextCache()


def _pair(
    a: trio.abc.Stream,
    b: trio.abc.Stream,
    client: tlsconfig.WorkloadCredentials = CLIENT,
    server: tlsconfig.WorkloadCredentials = SERVER,
) -> tuple[TlsStream, TlsStream]:
    return (
        TlsStream(a, CACHE.client(client), server_side=False),
        TlsStream(b, CACHE.server(server), server_side=True),
    )


async def _handshake_both(c: TlsStream, s: TlsStream) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(c.do_handshake)
        nursery.start_soon(s.do_handshake)


async def _socket_pair() -> tuple[TlsStream, TlsStream]:
    a, b = trio.socket.socketpair()
    c, s = _pair(trio.SocketStream(a), trio.SocketStream(b))
    await _handshake_both(c, s)
    return c, s


async def _memory_pair() -> tuple[TlsStream, TlsStream]:
    a, b = trio.testing.memory_stream_pair()
    c, s = _pair(a, b)
    await _handshake_both(c, s)
    return c, s


async def _clogged_pair() -> tuple[TlsStream, TlsStream]:
    a, b = trio.testing.lockstep_stream_pair()
    c, s = _pair(a, b)
    await _handshake_both(c, s)
    return c, s


async def test_two_way_stream_over_socketpair() -> None:
    """TlsStream over a real socketpair passes trio's two-way stream conformance suite."""
    await trio.testing.check_two_way_stream(_socket_pair, None)


async def test_two_way_stream_over_memory_streams() -> None:
    """TlsStream over memory and lockstep streams passes the conformance suite, incl. clogging."""
    await trio.testing.check_two_way_stream(_memory_pair, _clogged_pair)


async def test_bulk_transfer_is_byte_exact_and_batched() -> None:
    """8 MiB through send_many arrives byte-exact, in receives far larger than one TLS record."""
    c, s = await _socket_pair()
    payload = os.urandom(8 * 1024 * 1024)
    sizes: list[int] = []

    async def send() -> None:
        view = memoryview(payload)
        # A small frame-header-like piece followed by a big body, like HTTP/2 DATA.
        while view:
            await c.send_many([b"hdr", view[: 1 << 20]])
            view = view[1 << 20 :]
        await c.aclose()

    got = bytearray()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(send)
        while True:
            chunk = await s.receive_some()
            if not chunk:
                break
            sizes.append(len(chunk))
            got += chunk
    await s.aclose()
    expected = b"".join(
        b"hdr" + payload[i : i + (1 << 20)] for i in range(0, len(payload), 1 << 20)
    )
    assert got == expected
    assert max(sizes) > 16 * 1024


async def test_negotiates_tls13_h2_and_aes_gcm() -> None:
    """The handshake settles on TLS 1.3, ALPN h2 and an allowed AES-GCM suite; no session ticket."""
    c, s = await _socket_pair()
    for side in (c, s):
        tlsconfig.check_negotiated(*side.negotiated())
    assert c.ssl_object.session_reused is False
    assert tlsconfig.verify_server_identity(c.peer_leaf_der, [SERVER.identity]) == SERVER.identity
    assert tlsconfig.verify_client_identity(s.peer_leaf_der, "cluster.local") == CLIENT.identity
    await c.aclose()
    await s.aclose()


async def _failing_handshake(
    client: tlsconfig.WorkloadCredentials, server: tlsconfig.WorkloadCredentials
) -> tuple[BaseException | None, BaseException | None]:
    a, b = trio.socket.socketpair()
    c, s = _pair(trio.SocketStream(a), trio.SocketStream(b), client, server)
    errors: list[BaseException | None] = [None, None]

    async def run(i: int, stream: TlsStream) -> None:
        try:
            await stream.do_handshake()
            # TLS 1.3 clients learn of a rejected certificate on their first read.
            await stream.receive_some(1)
        except (TlsHandshakeError, trio.BrokenResourceError) as exc:
            errors[i] = exc
        finally:
            await stream.aclose()

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, 0, c)
            nursery.start_soon(run, 1, s)
    return errors[0], errors[1]


@pytest.mark.parametrize(
    "who",
    [pytest.param("server", id="untrusted server issuer"), pytest.param("client", id="client")],
)
async def test_untrusted_issuer_fails_handshake(who: str) -> None:
    """A leaf signed by a root the peer does not trust fails certificate verification."""
    rogue = pki.new_root("cluster.local", lifetime=dt.timedelta(days=1), now=certs.NOW)
    bad = certs.credentials(certs.sa(who), issuer=rogue)
    client, server = (CLIENT, bad) if who == "server" else (bad, SERVER)
    c_err, s_err = await _failing_handshake(client, server)
    victim = c_err if who == "server" else s_err
    assert isinstance(victim, TlsHandshakeError)
    assert "certificate verify failed" in str(victim)


async def test_expired_certificate_fails_handshake() -> None:
    """An expired server leaf is rejected by the client's chain verification."""
    old = certs.NOW - dt.timedelta(days=3)
    expired = certs.credentials(certs.sa("server"), now=old, lifetime=dt.timedelta(hours=1))
    c_err, _ = await _failing_handshake(CLIENT, expired)
    assert isinstance(c_err, TlsHandshakeError)
    assert "expired" in str(c_err)


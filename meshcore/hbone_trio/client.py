"""Dial one HBONE connection: TCP (through a socket factory), mTLS handshake, identity check.

Who calls it: `pool.HboneClient` when no pooled connection can take a new tunnel. It hands back
an `HboneTrioConnection` whose `run()` the caller starts in a nursery it owns.

The socket factory is the seam for creating sockets elsewhere: ztunnel passes one that creates
the socket inside the source pod's netns with SO_MARK before connecting. The default one
connects on the current netns with TCP_NODELAY.

Errors (all `HboneTrioError`): `HboneConnectError` (TCP connect failed or timed out: the
destination or the network's fault), `HboneHandshakeError` (TLS failed or the peer's identity
or parameters were refused; carries `expected` and, when known, `found`), `HboneStatusError`
(the CONNECT got a non-200 status; carries `status`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
from collections.abc import Awaitable, Callable, Collection

import trio

from meshcore import tlsconfig
from meshcore.hbone import HboneSettings, Role
from meshcore.hbone_trio.connection import HboneTrioConnection, KeepaliveConfig
from meshcore.hbone_trio.errors import HboneTrioError
from meshcore.hbone_trio.tls_stream import TlsHandshakeError, TlsStream
from meshcore.identity import SpiffeId

Address = tuple[str, int]
# (destination address) -> a connected trio socket. Called once per new HBONE connection.
SocketFactory = Callable[[Address], Awaitable[trio.socket.SocketType]]


class HboneConnectError(HboneTrioError):
    """TCP connect to the HBONE peer failed or timed out (is port 15008 reachable?)."""

    def __init__(self, message: str, *, address: Address) -> None:
        super().__init__(message)
        self.address = address


class HboneHandshakeError(HboneTrioError):
    """The TLS handshake failed or the peer's identity/parameters were refused."""

    def __init__(
        self,
        message: str,
        *,
        address: Address,
        expected: tuple[SpiffeId, ...] = (),
        found: tuple[SpiffeId, ...] = (),
    ) -> None:
        super().__init__(message)
        self.address = address
        self.expected = expected
        self.found = found


class HboneStatusError(HboneTrioError):
    """The peer answered the CONNECT with a status other than 200 (401 deny, 503, 400...)."""

    def __init__(self, message: str, *, status: int, authority: str, address: Address) -> None:
        super().__init__(message)
        self.status = status
        self.authority = authority
        self.address = address


@dataclasses.dataclass(frozen=True)
class ClientConfig:
    """Timeouts and HTTP/2 settings for outgoing HBONE connections (ztunnel defaults)."""

    connect_timeout: float = 10.0
    handshake_timeout: float = 10.0
    settings: HboneSettings = dataclasses.field(default_factory=HboneSettings)
    keepalive: KeepaliveConfig | None = dataclasses.field(default_factory=KeepaliveConfig)
    max_streams_per_connection: int = 100
    idle_timeout: float = 300.0
    # How long to wait for the CONNECT response (the peer connects its upstream first).
    response_timeout: float = 15.0


async def default_socket_factory(address: Address) -> trio.socket.SocketType:
    """A TCP socket connected to `address` from the current netns, with TCP_NODELAY."""
    host, port = address
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = trio.socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


async def dial_hbone(
    address: Address,
    creds: tlsconfig.WorkloadCredentials,
    expected: Collection[SpiffeId],
    *,
    config: ClientConfig,
    contexts: tlsconfig.TlsContextCache,
    socket_factory: SocketFactory = default_socket_factory,
) -> HboneTrioConnection:
    """Connect, handshake as `creds.identity` and check the server is one of `expected`.

    Returns the connection not yet running: the caller does `await nursery.start(conn.run)`
    and owns it from then on.
    """
    label = f"{address[0]}:{address[1]}"
    try:
        with trio.fail_after(config.connect_timeout):
            sock = await socket_factory(address)
    except trio.TooSlowError as exc:
        raise HboneConnectError(
            f"TCP connect to HBONE peer {label} timed out after {config.connect_timeout}s",
            address=address,
        ) from exc
    except OSError as exc:
        raise HboneConnectError(
            f"TCP connect to HBONE peer {label} failed: {exc}", address=address
        ) from exc
    _set_nodelay(sock)
    tls = TlsStream(trio.SocketStream(sock), contexts.client(creds), server_side=False)
    want = tuple(sorted(expected))
    try:
        with trio.fail_after(config.handshake_timeout):
            await tls.do_handshake()
        tlsconfig.check_negotiated(*tls.negotiated())
        peer = tlsconfig.verify_server_identity(tls.peer_leaf_der, expected)
    except trio.TooSlowError as exc:
        await trio.aclose_forcefully(tls)
        raise HboneHandshakeError(
            f"TLS handshake with {label} timed out after {config.handshake_timeout}s",
            address=address,
            expected=want,
        ) from exc
    except TlsHandshakeError as exc:
        await trio.aclose_forcefully(tls)
        raise HboneHandshakeError(
            f"TLS handshake with {label} failed (expected {', '.join(map(str, want))}): {exc}",
            address=address,
            expected=want,
        ) from exc
    except tlsconfig.PeerIdentityError as exc:
        await trio.aclose_forcefully(tls)
        raise HboneHandshakeError(
            f"HBONE peer {label}: {exc}", address=address, expected=want, found=exc.found
        ) from exc
    except tlsconfig.NegotiationError as exc:
        await trio.aclose_forcefully(tls)
        raise HboneHandshakeError(f"HBONE peer {label}: {exc}", address=address) from exc
    conn = HboneTrioConnection(
        tls,
        Role.CLIENT,
        settings=config.settings,
        peer_identity=peer,
        keepalive=config.keepalive,
        label=f"{label} ({peer})",
    )
    return conn


def _set_nodelay(sock: trio.socket.SocketType) -> None:
    """TCP_NODELAY on a socket a custom factory returned (ignored for non-TCP sockets)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

"""serve_hbone: accept HBONE (mTLS + HTTP/2 CONNECT) and relay each tunnel to an upstream.

Who calls it: ztunnel's inbound listener (15008, one listener per pod netns) and the waypoint.
They supply `credentials_for(local_addr)` (which certificate to present: one ztunnel serves
many pods, chosen by the address the client dialed) and `handle_connect(request)`, which decides
(authorization, destination lookup), connects the upstream, and returns a `ConnectOutcome`.

Per connection: TLS accept (client certificate required, chain verified against the mesh roots,
TLS 1.3 + h2 + AES-GCM checked, client SPIFFE ID must be in our trust domain), then an
`HboneTrioConnection`. Per stream (AMBIENT-INTERNALS §2.4): a non-CONNECT method or an
authority that is not `host:port` gets 400; otherwise `handle_connect` runs and its status is
sent: 401 (denied), 503 (cannot reach), or 200 *after* the upstream is connected, followed by
`relay()`; or, for a handler that speaks the tunnel's protocol itself (the waypoint parses the
HTTP inside), 200 and then `terminate(tunnel)` in the stream's own task: no relay, no pipe, no
extra task hop. A handler exception answers 503 and is logged.

Fault isolation: a failed handshake, garbage bytes, or malformed HTTP/2 ends that connection
only; one stream's failure resets that stream only. Nothing from a peer can crash the server.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Sequence

import trio

from meshcore import hbone, tlsconfig
from meshcore.hbone import HboneSettings, Role
from meshcore.hbone_trio.client import Address
from meshcore.hbone_trio.connection import HboneTrioConnection, KeepaliveConfig
from meshcore.hbone_trio.meter import RelayMeter
from meshcore.hbone_trio.relay import RelayResult, relay
from meshcore.hbone_trio.tls_stream import TlsHandshakeError, TlsStream
from meshcore.hbone_trio.tunnel import TunnelStream
from meshcore.identity import SpiffeId

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ConnectRequest:
    """One CONNECT stream, as `handle_connect` sees it."""

    authority: str
    host: str
    port: int
    peer_identity: SpiffeId
    peer_addr: Address
    local_addr: Address
    headers: tuple[tuple[str, str], ...]

    def header(self, name: str) -> str | None:
        """First value of a (lower-case) request header, e.g. `baggage` or `forwarded`."""
        for key, value in self.headers:
            if key == name:
                return value
        return None


@dataclasses.dataclass(frozen=True)
class ConnectOutcome:
    """What to answer: 200 with a connected upstream to relay to, or an error status."""

    status: int
    upstream: trio.abc.Stream | None = None
    headers: tuple[tuple[str, str], ...] = ()
    reason: str = ""
    idle_timeout: float | None = None
    on_done: Callable[[RelayResult], None] | None = None
    meter: RelayMeter | None = None  # live bytes of the relay (tunnel -> upstream is a_to_b)
    # 200 without an upstream: this serves the tunnel itself (then the tunnel is closed).
    terminate: Callable[[TunnelStream], Awaitable[None]] | None = None

    def __post_init__(self) -> None:
        takes = (self.upstream is not None) + (self.terminate is not None)
        if (self.status == 200) != (takes == 1) or takes > 1:
            raise ValueError("status 200 needs exactly one of an upstream stream or a "
                             "terminate handler, and only 200 may carry one")

    @classmethod
    def accept(
        cls,
        upstream: trio.abc.Stream,
        headers: Sequence[tuple[str, str]] = (),
        *,
        idle_timeout: float | None = None,
        on_done: Callable[[RelayResult], None] | None = None,
        meter: RelayMeter | None = None,
    ) -> ConnectOutcome:
        return cls(200, upstream, tuple(headers), idle_timeout=idle_timeout, on_done=on_done,
                   meter=meter)

    @classmethod
    def serve_here(cls, terminate: Callable[[TunnelStream], Awaitable[None]],
                   headers: Sequence[tuple[str, str]] = ()) -> ConnectOutcome:
        """200, then `terminate(tunnel)` speaks the tunnel's protocol in place of a relay."""
        return cls(200, headers=tuple(headers), terminate=terminate)

    @classmethod
    def deny(cls, reason: str = "") -> ConnectOutcome:
        return cls(401, reason=reason)

    @classmethod
    def unreachable(cls, reason: str = "") -> ConnectOutcome:
        return cls(503, reason=reason)

    @classmethod
    def bad_request(cls, reason: str = "") -> ConnectOutcome:
        return cls(400, reason=reason)


HandleConnect = Callable[[ConnectRequest], Awaitable[ConnectOutcome]]
CredentialsFor = Callable[[Address], tlsconfig.WorkloadCredentials]


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    handshake_timeout: float = 10.0
    # ztunnel's inbound advertises 200 concurrent streams.
    settings: HboneSettings = dataclasses.field(
        default_factory=lambda: HboneSettings(max_concurrent_streams=200)
    )
    keepalive: KeepaliveConfig | None = dataclasses.field(default_factory=KeepaliveConfig)


def parse_authority(authority: str) -> tuple[str, int]:
    """`ip:port`, `[v6]:port` or `hostname:port` -> (host, port); ValueError otherwise."""
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0 or authority[end + 1 : end + 2] != ":":
            raise ValueError(f"bad IPv6 authority {authority!r}")
        host, port_s = authority[1:end], authority[end + 2 :]
        ipaddress.IPv6Address(host)
    else:
        host, sep, port_s = authority.rpartition(":")
        if not sep or not host or ":" in host:
            raise ValueError(f"authority {authority!r} is not host:port")
    if not port_s.isdigit() or not 0 < int(port_s) < 65536:
        raise ValueError(f"bad port in authority {authority!r}")
    return host, int(port_s)


async def serve_hbone(
    listeners: Sequence[trio.SocketListener],
    credentials_for: CredentialsFor,
    handle_connect: HandleConnect,
    *,
    config: ServerConfig | None = None,
    contexts: tlsconfig.TlsContextCache | None = None,
    handler_nursery: trio.Nursery | None = None,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve HBONE on `listeners` until cancelled; `started()` once accepting.

    Resource handling: every accepted socket is closed when its connection ends; upstream
    streams returned by `handle_connect` are closed by the relay (or at once for non-200).
    """
    cfg = config or ServerConfig()
    cache = contexts or tlsconfig.TlsContextCache()

    async def handler(stream: trio.SocketStream) -> None:
        try:
            await _serve_connection(stream, credentials_for, handle_connect, cfg, cache)
        except Exception:  # a bug in one connection must not take the listener down
            log.exception("HBONE connection handler failed")

    await trio.serve_listeners(
        handler, list(listeners), handler_nursery=handler_nursery, task_status=task_status
    )


async def _serve_connection(
    stream: trio.SocketStream,
    credentials_for: CredentialsFor,
    handle_connect: HandleConnect,
    cfg: ServerConfig,
    cache: tlsconfig.TlsContextCache,
) -> None:
    try:
        local = _addr(stream.socket.getsockname())
        peer = _addr(stream.socket.getpeername())
    except OSError:
        return
    label = f"{peer[0]}:{peer[1]}->{local[0]}:{local[1]}"
    try:
        creds = credentials_for(local)
    except Exception as exc:
        log.warning("HBONE %s: no certificate for local address: %s", label, exc)
        return
    tls = TlsStream(stream, cache.server(creds), server_side=True)
    try:
        with trio.fail_after(cfg.handshake_timeout):
            await tls.do_handshake()
        tlsconfig.check_negotiated(*tls.negotiated())
        peer_id = tlsconfig.verify_client_identity(
            tls.peer_leaf_der, creds.identity.trust_domain
        )
    except (
        trio.TooSlowError,
        TlsHandshakeError,
        tlsconfig.PeerRejectedError,
        trio.BrokenResourceError,
    ) as exc:
        log.info("HBONE %s: handshake refused: %s", label, exc)
        await trio.aclose_forcefully(tls)
        return

    conn: HboneTrioConnection

    def on_request(tunnel: TunnelStream, event: hbone.RequestReceived) -> None:
        conn.start_soon(_serve_stream, tunnel, event, peer_id, peer, local, handle_connect)

    conn = HboneTrioConnection(
        tls,
        Role.SERVER,
        settings=cfg.settings,
        peer_identity=peer_id,
        keepalive=cfg.keepalive,
        on_request=on_request,
        label=f"{label} ({peer_id})",
    )
    await conn.run()


async def _serve_stream(
    tunnel: TunnelStream,
    event: hbone.RequestReceived,
    peer_id: SpiffeId,
    peer: Address,
    local: Address,
    handle_connect: HandleConnect,
) -> None:
    upstream: trio.abc.Stream | None = None
    try:
        if event.method != "CONNECT":
            await _refuse(tunnel, 400)
            return
        try:
            host, port = parse_authority(event.authority or "")
        except ValueError:
            await _refuse(tunnel, 400)
            return
        request = ConnectRequest(
            authority=event.authority or "",
            host=host,
            port=port,
            peer_identity=peer_id,
            peer_addr=peer,
            local_addr=local,
            headers=tuple(event.headers),
        )
        try:
            outcome = await handle_connect(request)
        except Exception:
            log.exception("handle_connect failed for %s from %s", request.authority, peer_id)
            outcome = ConnectOutcome.unreachable("handler error")
        if outcome.status != 200:
            await _refuse(tunnel, outcome.status, outcome.headers)
            return
        if outcome.terminate is not None:
            await tunnel.respond(200, outcome.headers)
            await outcome.terminate(tunnel)
            await tunnel.aclose()  # ends our side cleanly; reset below is then a no-op
            return
        upstream = outcome.upstream
        assert upstream is not None
        await tunnel.respond(200, outcome.headers)
        result = await relay(tunnel, upstream, idle_timeout=outcome.idle_timeout,
                             meter=outcome.meter)
        upstream = None  # the relay closed it
        if outcome.on_done is not None:
            outcome.on_done(result)
    except (trio.BrokenResourceError, trio.ClosedResourceError, hbone.HboneError) as exc:
        log.debug("HBONE stream %s ended early: %r", tunnel.stream_id, exc)
    except Exception:
        log.exception("HBONE stream %s handler failed", tunnel.stream_id)
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(1):
            if upstream is not None:
                await trio.aclose_forcefully(upstream)
            await tunnel.reset()


async def _refuse(
    tunnel: TunnelStream, status: int, headers: Sequence[tuple[str, str]] = ()
) -> None:
    await tunnel.respond(status, headers, end_stream=True)
    await tunnel.aclose()


def _addr(sockaddr: tuple) -> Address:  # type: ignore[type-arg]
    return (str(sockaddr[0]), int(sockaddr[1]))

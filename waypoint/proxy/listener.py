"""The waypoint's HBONE side: accept each CONNECT, resolve its destination, serve it.

Who calls it: `waypoint.proxy.server` serves HBONE with `meshcore.hbone_trio.serve_hbone`
(`proxy.credentials_for`; each CONNECT goes through `proxy.admit`, and an admitted tunnel is
served in place by `downstream.serve_tunnel`); tests do the same through `serve_waypoint`. What it
hands to: `Downstream.serve_tunnel`, with the HBONE tunnel stream itself.

`admit` (per CONNECT stream, AMBIENT-INTERNALS §2.7): the authority is the original
destination, `<service VIP>:<port>` or `<pod IP>:<port>`; a VIP resolves to its Service
(`find_destination`), a pod IP to its Workload; anything else gets 503 ("no filter chain"
in Envoy terms: we do not know it). A Service port declared TCP is authorized now (401 on
deny); HTTP is authorized per request. The peer identity (the source workload's, since
ztunnel presents its certificate) comes from mTLS.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable

import trio

from meshcore.hbone_trio import ConnectOutcome, ConnectRequest
from meshcore.identity import SpiffeId
from meshcore.tlsconfig import WorkloadCredentials
from meshcore.wds import ServiceDestination, find_destination
from waypoint.errors import WaypointError
from waypoint.proxy.context import TunnelContext, parse_forwarded_for, peer_metadata
from waypoint.proxy.downstream import Downstream

log = logging.getLogger("waypoint.listener")


class NoCertificateError(WaypointError):
    """The waypoint has no valid certificate yet (the CA has not answered); retry later."""


class WaypointProxy:
    def __init__(self, downstream: Downstream, nursery: trio.Nursery, identity: SpiffeId,
                 credentials: Callable[[], WorkloadCredentials | None]) -> None:
        self.downstream = downstream
        self.nursery = nursery  # tunnel tasks live here
        self.identity = identity
        self._credentials = credentials
        self.tunnels = 0

    def credentials_for(self, _local: tuple[str, int]) -> WorkloadCredentials:
        creds = self._credentials()
        if creds is None:
            raise NoCertificateError(f"no certificate for {self.identity} yet")
        return creds

    def context(self, request: ConnectRequest) -> TunnelContext | str:
        """The tunnel's context, or why it cannot be served."""
        try:
            ip = ipaddress.ip_address(request.host)
        except ValueError:
            return f"authority {request.authority!r} is not an IP address and port"
        state = self.downstream.handler.state()
        dest = find_destination(state.wds, ip, request.port)
        if dest is None:
            return f"{request.authority} is neither a Service VIP nor a workload the " \
                   "waypoint knows"
        source_ip, source_addr = parse_forwarded_for(request.header("forwarded"))
        common = dict(authority=request.authority, dest_ip=ip, port=request.port,
                      peer_identity=request.peer_identity,
                      peer_addr=f"{request.peer_addr[0]}:{request.peer_addr[1]}",
                      source_ip=source_ip, source_addr=source_addr,
                      peer=peer_metadata(request.header("baggage")))
        if isinstance(dest, ServiceDestination):
            if dest.service.port(request.port) is None:
                return f"Service {dest.service.key} has no port {request.port}"
            return TunnelContext(service=dest.service, **common)  # type: ignore[arg-type]
        return TunnelContext(workload=dest.workload, **common)  # type: ignore[arg-type]

    async def admit(self, request: ConnectRequest) -> TunnelContext | ConnectOutcome:
        """The tunnel's context (then `Downstream.serve_tunnel` serves it in place), or the
        refusal to answer (503 unknown destination, 401 TCP port denied)."""
        ctx = self.context(request)
        if isinstance(ctx, str):
            log.info("CONNECT %s from %s refused: %s", request.authority,
                     request.peer_identity, ctx)
            return ConnectOutcome.unreachable(ctx)
        if self.downstream.declared_protocol(ctx) == "tcp":
            state = self.downstream.handler.state()
            decision = self.downstream.handler.authorize(ctx, None, state)
            if not decision.allowed:
                log.info("CONNECT %s from %s denied: %s", request.authority,
                         request.peer_identity, decision)
                return ConnectOutcome.deny(str(decision))
        self.tunnels += 1
        return ctx

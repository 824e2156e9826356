"""The waypoint's HBONE side: accept each CONNECT, resolve its destination, serve it.

Who calls it: `waypoint.app` runs `serve_hbone(listeners, proxy.credentials_for,
proxy.handle_connect)`; tests do the same with hand-made state. What it hands to:
`Downstream.serve_tunnel` on our end of an in-process pipe; the HBONE server relays the tunnel
to the other end (so only `meshcore.hbone_trio`'s public API is used).

`handle_connect` (per CONNECT stream, AMBIENT-INTERNALS §2.7): the authority is the original
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
from waypoint.proxy.pipe import pipe_pair

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

    async def handle_connect(self, request: ConnectRequest) -> ConnectOutcome:
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
        ours, theirs = pipe_pair()
        self.tunnels += 1
        self.nursery.start_soon(self.downstream.serve_tunnel, ours, ctx)
        return ConnectOutcome.accept(theirs)

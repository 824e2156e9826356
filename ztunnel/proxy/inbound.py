"""Inbound HBONE (15008): `handle_connect` for `meshcore.hbone_trio`'s server, per CONNECT stream.

Who calls it: the pod proxy's 15008 handler runs one HBONE server connection per accepted
socket (TLS with this pod's certificate, then HTTP/2), and the server calls `handle_connect`
for each CONNECT stream. What it hands back: a `ConnectOutcome` (the server sends the status
and, on 200, relays between the tunnel and the app socket we connected).

Steps and statuses (AMBIENT-INTERNALS §2.4; method and authority syntax are checked by the
server first, 400):
1. This pod's Workload must be known → else 503.
2. `validate_destination`: the tunnel's TCP destination IP must equal the authority IP → else
   400 (`ip mismatch`). A hostname authority is resolved through a service the pod belongs to.
3. Upstream `<pod IP>:<port>` (hostname authority: service port → target port); an illegal
   port (15001/15006/15008) → 503.
4. Authorization (`meshcore.authz.evaluate_in`) with the peer identity from TLS, the TCP peer
   IP and the resolved upstream → 401 on deny; the access line names the policy.
5. Connect to the app from inside the pod netns, source = the original client IP (the
   `forwarded` header's `for=`, else the TCP peer) via IP_TRANSPARENT; if the kernel refuses,
   connect without it and log that → 503 if the app refuses or times out.
6. 200 (only now), with `baggage` describing this pod; the connection is tracked for
   re-authorization on policy changes until the relay ends.
"""

from __future__ import annotations

import dataclasses
import logging
import re

from meshcore.authz import ConnectionAttributes, evaluate_in
from meshcore.hbone_trio import ConnectOutcome, ConnectRequest, RelayMeter, RelayResult
from meshcore.telemetry import Reporter, format_baggage, parse_baggage, traffic_labels
from meshcore.telemetry.labels import ResponseFlags
from meshcore.telemetry.traceparent import parse_or_none
from meshcore.wds import IPAddress, Service, Snapshot, Workload
from ztunnel.proxy.context import PodContext
from ztunnel.proxy.next_hop import hostport
from ztunnel.proxy.observe import Observation, guess_inbound_service
from ztunnel.proxy.sockets import canonical_ip, dial_in_pod
from ztunnel.proxy.tracking import ConnectionTracker, Tracked

log = logging.getLogger(__name__)

_FOR = re.compile(r'(?:^|[;,\s])for=(?:"([^"]*)"|([^;,\s]*))', re.IGNORECASE)


def forwarded_for(value: str | None) -> IPAddress | None:
    """The client IP in a `forwarded` header's first `for=` (`"ip:port"`, `"[v6]:port"`, bare
    ip); None when absent, obfuscated, unparseable, loopback or unspecified. Pure."""
    if not value:
        return None
    m = _FOR.search(value)
    if m is None:
        return None
    text = m.group(1) if m.group(1) is not None else m.group(2)
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        ip = canonical_ip(text)
    except ValueError:
        return None
    return None if ip.is_loopback or ip.is_unspecified else ip


def resolve_upstream(
    snapshot: Snapshot, local: Workload, host: str, port: int
) -> tuple[IPAddress, int, Service | None] | None:
    """(pod IP, target port, service) for a hostname authority, via a service the pod is an
    endpoint of (per-workload port first, then the Service's target port). Pure."""
    for entry in local.services:
        service = snapshot.services.get(entry.service)
        if service is None or service.hostname != host:
            continue
        target = next((p.target_port for p in entry.ports if p.service_port == port), 0)
        if not target:
            svc_port = service.port(port)
            target = svc_port.target_port if svc_port is not None else 0
        if target and local.addresses:
            return local.addresses[0], target, service
    return None


@dataclasses.dataclass(eq=False)
class InboundConnection:
    """One HBONE connection on 15008: its open tunnels (for a drain that closes idle ones, and
    to finish the telemetry of tunnels cut short when the connection is cancelled)."""

    streams: dict[Tracked, Observation] = dataclasses.field(default_factory=dict)

    @property
    def idle(self) -> bool:
        return not any(entry.is_open for entry in self.streams)

    def abandon(self, tracker: ConnectionTracker, reason: str) -> None:
        """The connection ended: tunnels whose relay never reported get `reason` as error."""
        for entry, obs in self.streams.items():
            tracker.unregister(entry)
            obs.finish(error=reason)
        self.streams.clear()


class InboundHbone:
    """`handle_connect` for one pod's 15008 (see the module docstring)."""

    def __init__(self, pod: PodContext, tracker: ConnectionTracker) -> None:
        self.pod = pod
        self.tracker = tracker
        self.draining = False  # set by the pod proxy's drain: new streams get 503

    async def handle_connect(
        self, request: ConnectRequest, connection: InboundConnection | None = None
    ) -> ConnectOutcome:
        """Decide one CONNECT stream; `connection` collects the tunnels of its connection."""
        pod, ctx = self.pod, self.pod.ctx
        snapshot = ctx.config.current()
        local = pod.local_workload(snapshot)
        peer_ip = canonical_ip(request.peer_addr[0])
        src_addr = hostport(peer_ip, request.peer_addr[1])
        tunnel_ip = canonical_ip(request.local_addr[0])
        dst_addr = hostport(tunnel_ip, request.local_addr[1])
        if local is None:
            return self._refuse(503, src_addr, dst_addr, request,
                                f"pod {pod.pod.display} is not in the workload state")
        if self.draining:
            return self._refuse(503, src_addr, dst_addr, request,
                                f"pod {pod.pod.display} is being removed (draining)")
        service: Service | None = None
        try:
            authority_ip: IPAddress | None = canonical_ip(request.host)
        except ValueError:
            authority_ip = None
        if authority_ip is None:
            resolved = resolve_upstream(snapshot, local, request.host, request.port)
            if resolved is None:
                return self._refuse(503, src_addr, dst_addr, request,
                                    f"{request.authority} is not a service port of"
                                    f" {local.namespace}/{local.name}")
            upstream_ip, upstream_port, service = resolved
        elif authority_ip != tunnel_ip:
            return self._refuse(400, src_addr, dst_addr, request,
                                f"ip mismatch: tunnel reached {tunnel_ip} but CONNECT names"
                                f" {authority_ip}")
        else:
            upstream_ip, upstream_port = authority_ip, request.port
            service = guess_inbound_service(snapshot, local, upstream_port)
        upstream = hostport(upstream_ip, upstream_port)
        if upstream_port in pod.settings.illegal_ports:
            return self._refuse(503, src_addr, dst_addr, request,
                                f"illegal call to ztunnel's own port {upstream}")

        attrs = ConnectionAttributes(request.peer_identity, peer_ip, upstream_ip,
                                     upstream_port, local)
        decision = evaluate_in(snapshot, attrs)
        baggage = request.header("baggage")
        from_ip = snapshot.workloads_by_address.get((local.network, peer_ip))
        labels = traffic_labels(
            reporter=Reporter.DESTINATION, source=from_ip, destination=local,
            destination_service=service, source_identity=request.peer_identity,
            peer=parse_baggage(baggage) if baggage else None, mtls=True,
        )
        trace = parse_or_none(request.header("traceparent"))
        obs = Observation.start(ctx, labels, src_addr=src_addr, dst_addr=dst_addr,
                                dst_hbone_addr=upstream, parent=trace)
        if not decision.allowed:
            log.info("HBONE CONNECT %s from %s denied: %s", upstream, request.peer_identity,
                     decision.rejection_error)
            obs.finish(error=decision.rejection_error, response_flags=ResponseFlags.DENY,
                       decision=decision)
            return ConnectOutcome.deny(decision.reason)

        client_ip = forwarded_for(request.header("forwarded")) or peer_ip
        try:
            dialed = await dial_in_pod(pod.netns, (str(upstream_ip), upstream_port),
                                       source_ip=client_ip,
                                       connect_timeout=pod.settings.connect_timeout)
        except OSError as exc:
            error = f"connect to app {upstream} failed: {exc}"
            obs.finish(error=error, response_flags=ResponseFlags.CONNECT, decision=decision)
            return ConnectOutcome.unreachable(error)
        if not dialed.spoofed:
            log.info("pod %s: could not use client IP %s as the source toward %s (no"
                     " IP_TRANSPARENT); the app sees ztunnel's address instead",
                     pod.pod.display, client_ip, upstream)
        entry = self.tracker.register(attrs, dialed.stream)
        if connection is not None:
            connection.streams[entry] = obs

        def done(result: RelayResult) -> None:
            if connection is not None:
                connection.streams.pop(entry, None)
            self.tracker.unregister(entry)
            error = result.error
            if entry.closed_by_policy is not None:
                error = entry.closed_by_policy.rejection_error
            obs.finish(client_to_server=result.a_to_b, server_to_client=result.b_to_a,
                       error=error, decision=entry.closed_by_policy or decision)

        return ConnectOutcome.accept(
            dialed.stream, [("baggage", format_baggage(local))],
            idle_timeout=pod.settings.idle_timeout, on_done=done,
            meter=obs.follow(RelayMeter()),
        )

    def _refuse(self, status: int, src_addr: str, dst_addr: str, request: ConnectRequest,
                reason: str) -> ConnectOutcome:
        self.pod.ctx.access_log.connection_failed(
            src_addr, dst_addr, "inbound", f"{status}: {reason} (CONNECT {request.authority})")
        return ConnectOutcome(status, reason=reason)


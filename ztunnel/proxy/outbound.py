"""Outbound (15001): the pod's captured TCP → HBONE through the pool, or plain TCP passthrough.

Who calls it: the pod proxy's accept loop on the pod's 15001 listener, once per connection,
with the accepted stream (the pod proxy closes it afterwards in any case). It hands the bytes
to `meshcore.hbone_trio` (pool `connect`, then `relay`) or to a plain socket made inside the pod
netns, and the outcome to `observe` (metrics and the access log, direction `outbound`).

Steps (AMBIENT-INTERNALS §1.1, §2.3, §2.6):
1. Original destination via SO_ORIGINAL_DST (none → `connection failed`).
2. Refuse loopback destinations and self-calls (an illegal port 15001/15006/15008 on one of
   the pod's own IPs): ztunnel would otherwise loop into itself.
3. The source workload = this pod's Workload (waits up to 5 s for it to appear in xDS).
4. `next_hop.build_request`: HBONE hop, TCP hop, or an error ("no healthy upstream", ...).
5. HBONE: the *source pod's* certificate (`wait_credentials(source.identity)`), the pooled
   connection for (identity, expected SANs, next hop) whose sockets are created inside the
   pod netns with mark 0x539 (so they leave with the pod IP), CONNECT with `baggage`,
   `forwarded: for="<client ip:port>"[;host=<service>]` and a fresh `traceparent`.
   Any non-200 answer (401 denied, 503, 400) or dial failure closes the app's connection with
   RST and logs the error.
   TCP: connect from inside the pod netns (mark 0x539) to the chosen address.
6. `relay(app, upstream)` with half-close both ways; the access line at the end.
"""

from __future__ import annotations

import logging

import trio

from meshcore.hbone_trio import (
    HboneHandshakeError,
    HboneStatusError,
    HboneTrioError,
    RelayMeter,
    relay,
)
from meshcore.telemetry import format_baggage, traffic_labels
from meshcore.telemetry.labels import Reporter, ResponseFlags
from meshcore.wds import IPAddress, Workload
from meshcore.workload_identity.errors import IdentityError
from ztunnel.proxy.context import PodContext
from ztunnel.proxy.errors import IllegalDestinationError, ProxyError
from ztunnel.proxy.next_hop import HboneHop, NextHop, TcpHop, build_request, hostport
from ztunnel.proxy.observe import Observation, failed
from ztunnel.proxy.sockets import abort, dial_in_pod, endpoint_of, original_dst

log = logging.getLogger(__name__)
CANCELLED = "connection cancelled before it finished (drain deadline or shutdown)"


def check_outbound_destination(
    dst_ip: IPAddress, dst_port: int, own_ips: tuple[IPAddress, ...], illegal: frozenset[int]
) -> None:
    """Raise IllegalDestinationError for destinations ztunnel must never proxy. Pure."""
    if dst_ip.is_loopback:
        raise IllegalDestinationError(
            f"outbound to loopback {hostport(dst_ip, dst_port)} is never proxied (the in-pod"
            " rules do not redirect it; was 15001 dialed directly?)"
        )
    if dst_port in illegal and dst_ip in own_ips:
        raise IllegalDestinationError(
            f"illegal call to ztunnel's own port {hostport(dst_ip, dst_port)} (a self-call loop)"
        )


def forwarded_header(client: str, service_hostname: str | None) -> str:
    """ztunnel's `forwarded` value: `for="<ip:port>"` plus `;host=` when a service is known."""
    value = f'for="{client}"'
    return f"{value};host={service_hostname}" if service_hostname else value


async def handle_outbound(pod: PodContext, app: trio.SocketStream) -> None:
    """Serve one connection accepted on the pod's 15001 (see the module docstring)."""
    ctx = pod.ctx
    try:
        peer_ip, peer_port = endpoint_of(app.socket.getpeername())
        local_ip, local_port = endpoint_of(app.socket.getsockname())
    except OSError:
        return  # the app already went away
    src_addr = hostport(peer_ip, peer_port)
    try:
        dst_ip, dst_port = original_dst(app.socket)
    except ProxyError as exc:
        failed(ctx, src_addr, hostport(local_ip, local_port), "outbound", str(exc))
        await abort(app)
        return
    dst_addr = hostport(dst_ip, dst_port)
    try:
        source = await pod.wait_local_workload()
        check_outbound_destination(
            dst_ip, dst_port, (*source.addresses, local_ip), pod.settings.illegal_ports
        )
        hop = build_request(ctx.config.current(), source, dst_ip, dst_port)
    except ProxyError as exc:
        failed(ctx, src_addr, dst_addr, "outbound", str(exc))
        await abort(app)
        return
    if isinstance(hop, HboneHop):
        await _via_hbone(pod, app, source, hop, src_addr)
    else:
        await _via_tcp(pod, app, source, hop, src_addr)


def _labels(source: Workload, hop: NextHop, mtls: bool):  # type: ignore[no-untyped-def]
    return traffic_labels(
        reporter=Reporter.SOURCE,
        source=source,
        destination=hop.workload,
        destination_service=hop.service,
        source_identity=source.identity if mtls else None,
        mtls=mtls,
    )


async def _via_hbone(
    pod: PodContext, app: trio.SocketStream, source: Workload, hop: HboneHop, src_addr: str
) -> None:
    ctx = pod.ctx
    obs = Observation.start(
        ctx, _labels(source, hop, True), src_addr=src_addr, dst_addr=hostport(*hop.address),
        dst_hbone_addr=hop.authority,
    )
    headers = [
        ("baggage", format_baggage(source)),
        ("forwarded", forwarded_header(src_addr, hop.service.hostname if hop.service else None)),
        ("traceparent", obs.traceparent.format()),
    ]
    assert pod.client is not None, "outbound handler runs only while the pod proxy serves"
    try:
        await _tunnel(pod, app, source, hop, headers, obs)
    finally:
        obs.finish(error=CANCELLED)  # no-op unless cancelled before finishing


async def _tunnel(pod: PodContext, app: trio.SocketStream, source: Workload, hop: HboneHop,
                  headers: list[tuple[str, str]], obs: Observation) -> None:
    ctx = pod.ctx
    assert pod.client is not None
    try:
        with trio.fail_after(pod.settings.credentials_timeout):
            creds = await ctx.certificates.wait_credentials(source.identity)
        tunnel = await pod.client.connect(hop.address, hop.authority, creds, hop.expected, headers)
    except (HboneTrioError, IdentityError, trio.TooSlowError, trio.BrokenResourceError) as exc:
        flags = ResponseFlags.CONNECT
        if isinstance(exc, HboneHandshakeError):
            flags = ResponseFlags.TLS_FAILURE
        elif isinstance(exc, IdentityError):
            flags = ResponseFlags.IDENTITY_ERROR
        elif isinstance(exc, HboneStatusError) and exc.status == 401:
            flags = ResponseFlags.DENY
        error = str(exc) or f"timed out after {pod.settings.credentials_timeout:g}s waiting" \
            f" for the certificate of {source.identity}"
        obs.finish(error=error, response_flags=flags)
        await abort(app)
        return
    result = await relay(app, tunnel, idle_timeout=pod.settings.idle_timeout,
                         meter=obs.follow(RelayMeter()))
    obs.finish(
        client_to_server=result.a_to_b, server_to_client=result.b_to_a, error=result.error
    )


async def _via_tcp(
    pod: PodContext, app: trio.SocketStream, source: Workload, hop: TcpHop, src_addr: str
) -> None:
    ctx = pod.ctx
    obs = Observation.start(
        ctx, _labels(source, hop, False), src_addr=src_addr, dst_addr=hostport(*hop.address)
    )
    try:
        try:
            dialed = await dial_in_pod(
                pod.netns, hop.address, connect_timeout=pod.settings.connect_timeout
            )
        except OSError as exc:
            obs.finish(error=f"connect to {hostport(*hop.address)} failed: {exc}",
                       response_flags=ResponseFlags.CONNECT)
            await abort(app)
            return
        result = await relay(app, dialed.stream, idle_timeout=pod.settings.idle_timeout,
                             meter=obs.follow(RelayMeter()))
        obs.finish(
            client_to_server=result.a_to_b, server_to_client=result.b_to_a, error=result.error
        )
    finally:
        obs.finish(error=CANCELLED)  # no-op unless cancelled before finishing

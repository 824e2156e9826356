"""Inbound plaintext (15006): non-HBONE TCP to the pod, authorized with *no* peer identity.

Who calls it: the pod proxy's accept loop on the pod's 15006 listener, once per connection
REDIRECTed there by the in-pod prerouting rule (the pod proxy closes the stream afterwards).
It hands the bytes to `relay` between the client and an app socket made inside the pod netns.

Steps (AMBIENT-INTERNALS §1.1 "Inbound plaintext", §7.1, §7.3):
1. Original destination via SO_ORIGINAL_DST (none → `connection failed`, closed).
2. Illegal ports (15001/15006/15008) → closed; this pod's Workload unknown → closed.
3. Authorization with `source_identity=None`: any policy needing a principal, namespace or
   service account cannot match, so STRICT PeerAuthentication (a DENY with
   `not_principals: [presence]`) denies, and PERMISSIVE (no such policy) allows. Denied →
   the client's connection is closed (RST) and the access line names the policy.
4. Connect to the app at the original destination with the client's IP as source
   (IP_TRANSPARENT; without it, connect unspoofed and log that); refused → closed.
5. Relay; tracked for re-authorization on policy changes. Metrics say
   `connection_security_policy="unknown"` (ztunnel's value for plaintext).
"""

from __future__ import annotations

import logging

import trio

from meshcore.authz import ConnectionAttributes, Decision, evaluate_in
from meshcore.hbone_trio import RelayMeter, relay
from meshcore.telemetry import Reporter, traffic_labels
from meshcore.telemetry.labels import ResponseFlags
from ztunnel.proxy.context import PodContext
from ztunnel.proxy.errors import IllegalDestinationError, ProxyError
from ztunnel.proxy.next_hop import hostport
from ztunnel.proxy.observe import Observation, failed, guess_inbound_service
from ztunnel.proxy.outbound import CANCELLED
from ztunnel.proxy.sockets import abort, dial_in_pod, endpoint_of, original_dst
from ztunnel.proxy.tracking import ConnectionTracker

log = logging.getLogger(__name__)


async def handle_inbound_plaintext(
    pod: PodContext, tracker: ConnectionTracker, client: trio.SocketStream
) -> None:
    """Serve one connection accepted on the pod's 15006 (see the module docstring)."""
    ctx = pod.ctx
    try:
        peer_ip, peer_port = endpoint_of(client.socket.getpeername())
        local_ip, local_port = endpoint_of(client.socket.getsockname())
    except OSError:
        return
    src_addr = hostport(peer_ip, peer_port)
    snapshot = ctx.config.current()
    local = pod.local_workload(snapshot)
    try:
        dst_ip, dst_port = original_dst(client.socket)
        if dst_port in pod.settings.illegal_ports:
            raise IllegalDestinationError(
                f"illegal call to ztunnel's own port {hostport(dst_ip, dst_port)}")
        if local is None:
            raise ProxyError(f"pod {pod.pod.display} is not in the workload state")
    except ProxyError as exc:
        failed(ctx, src_addr, hostport(local_ip, local_port), "inbound", str(exc))
        await abort(client)
        return
    dst_addr = hostport(dst_ip, dst_port)
    attrs = ConnectionAttributes(None, peer_ip, dst_ip, dst_port, local)
    decision = evaluate_in(snapshot, attrs)
    from_ip = snapshot.workloads_by_address.get((local.network, peer_ip))
    labels = traffic_labels(reporter=Reporter.DESTINATION, source=from_ip, destination=local,
                            destination_service=guess_inbound_service(snapshot, local, dst_port))
    obs = Observation.start(ctx, labels, src_addr=src_addr, dst_addr=dst_addr)
    if not decision.allowed:
        log.info("plaintext %s -> %s denied: %s", src_addr, dst_addr, decision.rejection_error)
        obs.finish(error=decision.rejection_error, response_flags=ResponseFlags.DENY,
                   decision=decision)
        await abort(client)
        return
    try:
        await _connect_and_relay(pod, tracker, client, attrs, obs, decision)
    finally:
        obs.finish(error=CANCELLED)  # no-op unless cancelled before finishing


async def _connect_and_relay(pod: PodContext, tracker: ConnectionTracker,
                             client: trio.SocketStream, attrs: ConnectionAttributes,
                             obs: Observation, decision: Decision) -> None:
    upstream = hostport(attrs.destination_ip, attrs.destination_port)
    try:
        dialed = await dial_in_pod(pod.netns, (str(attrs.destination_ip), attrs.destination_port),
                                   source_ip=attrs.source_ip,
                                   connect_timeout=pod.settings.connect_timeout)
    except OSError as exc:
        obs.finish(error=f"connect to app {upstream} failed: {exc}",
                   response_flags=ResponseFlags.CONNECT, decision=decision)
        await abort(client)
        return
    if not dialed.spoofed:
        log.info("pod %s: could not use client IP %s as the source toward %s (no"
                 " IP_TRANSPARENT); the app sees ztunnel's address instead",
                 pod.pod.display, attrs.source_ip, upstream)
    entry = tracker.register(attrs, dialed.stream)
    try:
        result = await relay(client, dialed.stream, idle_timeout=pod.settings.idle_timeout,
                             meter=obs.follow(RelayMeter()))
    finally:
        tracker.unregister(entry)
    denied_later = entry.closed_by_policy
    obs.finish(
        client_to_server=result.a_to_b, server_to_client=result.b_to_a,
        error=denied_later.rejection_error if denied_later else result.error,
        decision=denied_later or decision,
    )

"""One connection's telemetry: Istio TCP metrics (optional) and ztunnel's access-log lines.

Who calls it: the three handlers. `Observation.start(...)` when the connection's destination is
known (counts `istio_tcp_connections_opened_total`, logs `connection opened` at DEBUG);
`finish(...)` exactly once at the end with the bytes moved, the outcome flags, the error and
the authorization decision (counts closed/failed and bytes, logs `connection complete`).
Early failures before anything is known go to `failed(...)` (`connection failed`, WARN).
It hands to `meshcore.telemetry` (labels, recorders, access log) and nothing else.

`guess_inbound_service` names the Service an inbound connection to a pod IP most likely came
through (ztunnel's `guess_inbound_service`): the destination only sees `pod IP:target port`, so
the `destination_service*` labels would otherwise read `unknown` on the destination side.

With tracing configured (`ProxyContext.tracing`), each observation also owns ztunnel's span for
the connection (CLIENT outbound, SERVER inbound, parented on the CONNECT's `traceparent`); with
tracing off the handle is virtual but still yields the `traceparent` outbound sends.

Invariants: `finish` is idempotent (the first call wins); durations use trio's clock.
"""

from __future__ import annotations

import contextlib

import trio

from meshcore.authz import Decision
from meshcore.hbone_trio import RelayMeter
from meshcore.telemetry import ConnectionEntry, ConnectionRecorder, TrafficLabels
from meshcore.telemetry.labels import Reporter, ResponseFlags
from meshcore.telemetry.traceparent import TraceParent
from meshcore.telemetry.tracing import SpanHandle, label_attributes
from meshcore.wds import Service, Snapshot, Workload
from ztunnel.proxy.context import ProxyContext


def guess_inbound_service(snapshot: Snapshot, local: Workload, port: int) -> Service | None:
    """The first Service (by key) that `local` backs with a target port equal to `port`.

    A numeric target port matches directly; a named one (0 here) is resolved by the pod's own
    port map in `Workload.services`, which is what that entry already holds. None if no Service
    of the pod maps to `port` (the connection was to the pod IP on a port no Service exposes).
    """
    for entry in local.services:
        if any(p.target_port == port for p in entry.ports):
            service = snapshot.services.get(entry.service)
            if service is not None:
                return service
    return None


class Observation:
    """Telemetry of one connection (see the module docstring)."""

    def __init__(
        self,
        ctx: ProxyContext,
        labels: TrafficLabels,
        *,
        src_addr: str,
        dst_addr: str,
        dst_hbone_addr: str | None = None,
        parent: TraceParent | None = None,
    ) -> None:
        self._ctx = ctx
        self._labels = labels
        self._src_addr = src_addr
        self._dst_addr = dst_addr
        self._dst_hbone_addr = dst_hbone_addr
        self._started = trio.current_time()
        self._recorder: ConnectionRecorder | None = None
        self._done = False
        direction = "outbound" if labels.reporter == Reporter.SOURCE else "inbound"
        self._span_scope = contextlib.ExitStack()
        self.span: SpanHandle = self._span_scope.enter_context(ctx.tracing.connection_span(
            direction, parent=parent, attributes=label_attributes(labels)))
        self._trace_id: str | None = self.span.trace_id

    @classmethod
    def start(cls, ctx: ProxyContext, labels: TrafficLabels, *, src_addr: str, dst_addr: str,
              dst_hbone_addr: str | None = None, parent: TraceParent | None = None,
              ) -> Observation:
        obs = cls(ctx, labels, src_addr=src_addr, dst_addr=dst_addr,
                  dst_hbone_addr=dst_hbone_addr, parent=parent)
        if ctx.metrics is not None:
            obs._recorder = ctx.metrics.open(labels)
        ctx.access_log.connection_opened(obs._entry(labels))
        return obs

    def follow(self, meter: RelayMeter) -> RelayMeter:
        """Count the relay's bytes at every metrics scrape, not only at `finish`."""
        if self._recorder is not None:
            self._recorder.follow(meter.totals)
        return meter

    @property
    def traceparent(self) -> TraceParent:
        """The trace context to send on this connection's CONNECT (outbound)."""
        return self.span.traceparent

    def finish(
        self,
        *,
        client_to_server: int = 0,
        server_to_client: int = 0,
        error: str | None = None,
        response_flags: str = ResponseFlags.NONE,
        decision: Decision | None = None,
    ) -> None:
        if self._done:
            return
        self._done = True
        labels = self._labels.with_outcome(response_flags)
        if self._recorder is not None:
            self._recorder.set_totals(client_to_server, server_to_client)
            labels = self._recorder.close(response_flags)
        entry = self._entry(
            labels,
            client_to_server=client_to_server,
            server_to_client=server_to_client,
            error=error,
            decision=decision,
        )
        self._ctx.access_log.connection_complete(entry)
        if error:
            self.span.fail(error)
        self._span_scope.close()

    def _entry(self, labels: TrafficLabels, **extra: object) -> ConnectionEntry:
        return ConnectionEntry(
            labels=labels,
            src_addr=self._src_addr,
            dst_addr=self._dst_addr,
            dst_hbone_addr=self._dst_hbone_addr,
            duration_ms=(trio.current_time() - self._started) * 1000,
            trace_id=self._trace_id,
            **extra,  # type: ignore[arg-type]
        )


def failed(ctx: ProxyContext, src_addr: str, dst_addr: str, direction: str, error: str) -> None:
    """`connection failed` (WARN): an early failure, before the destination is known."""
    ctx.access_log.connection_failed(src_addr, dst_addr, direction, error)

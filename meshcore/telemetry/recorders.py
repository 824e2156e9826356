"""The data-path API over the traffic instruments: one recorder per connection or request.

Called by ztunnel's inbound/outbound handlers (`TcpRecorder.open` -> `ConnectionRecorder`)
and by the waypoint (`RequestRecorder.record`); built by `metrics.MeshMetrics`, which owns
the instruments. What they record goes to the OpenTelemetry SDK (aggregation) and is read by
the Prometheus renderer at scrape time.

Semantics (ztunnel `src/proxy/metrics.rs`, AMBIENT-INTERNALS §8.1):
- `istio_tcp_connections_opened_total` +1 at `open`, with the connection's labels
  (response_flags `-`); `istio_tcp_connections_closed_total` +1 at `close` with the final
  flags; `istio_tcp_connections_failed_total` +1 at `close` when the flags are not `-`.
- Bytes are counted live: `add_bytes` is a plain integer add (the data path may call it per
  read); pending bytes reach the SDK at every scrape (`MeshMetrics.render` flushes open
  connections) and at `close`, so a scrape sees the bytes of connections still open.
  `istio_tcp_received_bytes_total` counts client->server bytes and
  `istio_tcp_sent_bytes_total` server->client bytes, on every reporter (Istio's direction).
- Cardinality: each recorder group admits at most `limit` distinct label sets; a new label set
  beyond that is recorded as its `TrafficLabels.overflowed()` form (bounded labels kept,
  every other label `overflow`), and `statistics()` counts how often that happened (once per
  connection or request). Overflow forms are not admitted sets: they are bounded by the few
  values of the kept labels.
Invariants: single-threaded use (one trio loop owns a process's recorders and its admin
server); `close` is idempotent (the first call counts); every opened connection must be
closed (call `close` in `finally`) or it stays in the open set.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from opentelemetry.metrics import Counter, Histogram

from meshcore.telemetry.labels import OVERFLOW, ResponseFlags, TrafficLabels


@dataclasses.dataclass(frozen=True, slots=True)
class RecorderStatistics:
    label_sets: int
    overflowed: int
    open_connections: int = 0


class LabelCap:
    """Admit at most `limit` distinct label sets; map the rest to their overflow form."""

    __slots__ = ("limit", "overflowed", "seen")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.seen: set[TrafficLabels] = set()
        self.overflowed = 0

    def admit(self, labels: TrafficLabels) -> TrafficLabels:
        if labels in self.seen:
            return labels
        if labels.source_principal == OVERFLOW:  # already an overflow form (a real one is a URI)
            return labels
        if len(self.seen) < self.limit:
            self.seen.add(labels)
            return labels
        self.overflowed += 1
        return labels.overflowed()


@dataclasses.dataclass(frozen=True, slots=True)
class TcpInstruments:
    opened: Counter
    closed: Counter
    failed: Counter
    received_bytes: Counter  # client -> server
    sent_bytes: Counter  # server -> client


class ConnectionRecorder:
    """One tunnelled or passthrough connection's metrics. Made by `TcpRecorder.open`."""

    __slots__ = (
        "_c2s_pending", "_closed", "_owner", "_s2c_pending", "_source", "client_to_server",
        "final_labels", "labels", "server_to_client",
    )

    def __init__(self, owner: TcpRecorder, labels: TrafficLabels) -> None:
        self._owner = owner
        self.labels = labels  # as admitted (may be the overflow form)
        self.final_labels: TrafficLabels | None = None
        self.client_to_server = 0
        self.server_to_client = 0
        self._c2s_pending = 0
        self._s2c_pending = 0
        self._closed = False
        self._source: Callable[[], tuple[int, int]] | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    def add_bytes(self, client_to_server: int = 0, server_to_client: int = 0) -> None:
        """Count bytes moved since the last call (cheap: no SDK call until flush)."""
        self.client_to_server += client_to_server
        self.server_to_client += server_to_client
        self._c2s_pending += client_to_server
        self._s2c_pending += server_to_client

    def follow(self, source: Callable[[], tuple[int, int]]) -> None:
        """Read (client_to_server, server_to_client) totals from `source` at every flush: the
        relay's own counters, so bytes of a long connection show at each scrape."""
        self._source = source

    def set_totals(self, client_to_server: int, server_to_client: int) -> None:
        """Count up to these totals (what was already counted is not counted again)."""
        self.add_bytes(max(0, client_to_server - self.client_to_server),
                       max(0, server_to_client - self.server_to_client))

    def flush(self) -> None:
        """Hand pending byte counts to the SDK (called at scrape and at close)."""
        if self._source is not None and not self._closed:
            self.set_totals(*self._source())
        inst, attrs = self._owner.instruments, self.labels.attributes
        if self._c2s_pending:
            inst.received_bytes.add(self._c2s_pending, attrs)
            self._c2s_pending = 0
        if self._s2c_pending:
            inst.sent_bytes.add(self._s2c_pending, attrs)
            self._s2c_pending = 0

    def close(self, response_flags: str = ResponseFlags.NONE) -> TrafficLabels:
        """Count the close (and the failure, if `response_flags` is not `-`); idempotent.

        Returns the final label set (the open labels with the flags), for the access log.
        """
        if self.final_labels is not None:
            return self.final_labels
        self.flush()
        self._closed = True
        final = self._owner.cap.admit(self.labels.with_outcome(response_flags))
        self.final_labels = final
        inst = self._owner.instruments
        inst.closed.add(1, final.attributes)
        if final.is_failure:
            inst.failed.add(1, final.attributes)
        self._owner.open_connections.discard(self)
        return final


class TcpRecorder:
    """ztunnel's (and the waypoint's TCP) connection metrics: `open(labels)` per connection."""

    def __init__(self, instruments: TcpInstruments, limit: int) -> None:
        self.instruments = instruments
        self.cap = LabelCap(limit)
        self.open_connections: set[ConnectionRecorder] = set()

    def open(self, labels: TrafficLabels) -> ConnectionRecorder:
        """Count a connection as opened and return its recorder."""
        admitted = self.cap.admit(labels)
        recorder = ConnectionRecorder(self, admitted)
        self.instruments.opened.add(1, admitted.attributes)
        self.open_connections.add(recorder)
        return recorder

    def flush_open(self) -> None:
        for recorder in list(self.open_connections):
            recorder.flush()

    def statistics(self) -> RecorderStatistics:
        return RecorderStatistics(
            len(self.cap.seen), self.cap.overflowed, len(self.open_connections)
        )


@dataclasses.dataclass(frozen=True, slots=True)
class HttpInstruments:
    requests: Counter
    duration: Histogram  # milliseconds
    request_bytes: Histogram
    response_bytes: Histogram


class RequestRecorder:
    """The waypoint's per-request metrics (Envoy's istio stats, reporter `waypoint`)."""

    def __init__(self, instruments: HttpInstruments, limit: int) -> None:
        self.instruments = instruments
        self.cap = LabelCap(limit)

    def record(
        self,
        labels: TrafficLabels,
        *,
        duration_ms: float,
        request_bytes: int,
        response_bytes: int,
    ) -> TrafficLabels:
        """Count one finished request; `labels` must carry the outcome (`with_outcome`).

        Returns the label set as recorded (possibly the overflow form).
        """
        admitted = self.cap.admit(labels)
        attrs = admitted.attributes
        inst = self.instruments
        inst.requests.add(1, attrs)
        inst.duration.record(duration_ms, attrs)
        inst.request_bytes.record(request_bytes, attrs)
        inst.response_bytes.record(response_bytes, attrs)
        return admitted

    def statistics(self) -> RecorderStatistics:
        return RecorderStatistics(len(self.cap.seen), self.cap.overflowed)

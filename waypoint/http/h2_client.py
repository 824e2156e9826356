"""The upstream HTTP/2 client codec over h2, sans-IO (gRPC included).

`H2Client`: one pooled upstream HTTP/2 connection multiplexing requests: `send_request(req)`
→ stream id (a streamed request's body follows with `send_body` / `end_body`);
`receive_data(bytes)` → per stream the response head (`HttpResponse`), `BodyChunk`s, the
`BodyEnd` with trailers, or an `HttpProtocolError` (`status` 502, `refused` set for
REFUSED_STREAM and for streams a GOAWAY says were never processed, so retries can tell).
Who calls it: `waypoint.proxy.pool` (one per pooled upstream HTTP/2 connection).
Invariants: we never send more DATA than the backend's windows allow; response body bytes
re-open our windows only when the caller `ack`s them (consumed), so a slow client slows the
backend instead of filling memory.
"""

from __future__ import annotations

import contextlib
from typing import cast

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions

from waypoint.errors import HttpProtocolError
from waypoint.http.h2 import _Outbox, _Partial
from waypoint.http.messages import (
    DEFAULT_LIMITS,
    BodyChunk,
    BodyEnd,
    Headers,
    HttpRequest,
    HttpResponse,
    Limits,
    clean_headers,
)

Event = HttpResponse | BodyChunk | BodyEnd | HttpProtocolError


class H2Client:
    """One upstream HTTP/2 connection carrying concurrent requests, one client stream each.

    `initiate()` → preface + SETTINGS; `send_request(req)` → the new stream id (bytes in
    `data_to_send()`); `receive_data(bytes)` → `(stream_id, HttpResponse | HttpProtocolError)`
    for every stream that finished (b"" = the connection ended: every open stream fails).
    `can_open` says whether another stream may start now (peer's MAX_CONCURRENT_STREAMS, no
    GOAWAY); after a GOAWAY the streams above its last stream id fail as refused (never
    processed: safe to retry), the others may still finish (`draining`).
    """

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding="utf-8"))
        self.outbox = _Outbox(self.conn)
        self.partials: dict[int, _Partial | None] = {}  # None: waiting for the headers
        self.draining = False  # GOAWAY received: no new streams
        self.closed = False
        self.settings_received = False  # the peer's first SETTINGS (its stream limit) arrived

    def initiate(self) -> bytes:
        self.conn.initiate_connection()
        self.conn.increment_flow_control_window(16 * 1024 * 1024 - 65535)
        return self.conn.data_to_send()

    @property
    def open_streams(self) -> int:
        return len(self.partials)

    @property
    def max_streams(self) -> int:
        return int(self.conn.remote_settings.max_concurrent_streams)

    @property
    def can_open(self) -> bool:
        return not self.closed and not self.draining and self.open_streams < self.max_streams

    def send_request(self, r: HttpRequest) -> int:
        headers = [(":method", r.method), (":scheme", r.scheme), (":authority", r.authority),
                   (":path", r.path), *r.headers]
        if r.body:
            headers.append(("content-length", str(len(r.body))))
        elif r.streamed and r.length is not None:
            headers.append(("content-length", str(r.length)))
        stream_id = self.conn.get_next_available_stream_id()
        end = not r.streamed and not r.body and not r.trailers
        self.conn.send_headers(stream_id, headers, end_stream=end)
        self.partials[stream_id] = None
        if not end and not r.streamed:
            self.outbox.queue(stream_id, r.body, r.trailers)
        return stream_id

    def send_body(self, stream_id: int, data: bytes) -> None:
        """More of a streamed request body (sent as windows allow; see `queued`)."""
        if stream_id in self.partials:
            self.outbox.append(stream_id, data)

    def end_body(self, stream_id: int, trailers: Headers = ()) -> None:
        if stream_id in self.partials:
            self.outbox.end(stream_id, trailers)

    def queued(self, stream_id: int) -> int:
        return self.outbox.queued(stream_id)

    def reset(self, stream_id: int) -> None:
        """Abandon a stream (the caller was cancelled): RST_STREAM CANCEL."""
        self.partials.pop(stream_id, None)
        self.outbox.drop(stream_id)
        with contextlib.suppress(h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            self.conn.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)

    def data_to_send(self) -> bytes:
        return self.conn.data_to_send()

    def _fail_all(self, why: str, refused: bool = False,
                  above: int = 0) -> list[tuple[int, Event]]:
        out: list[tuple[int, Event]] = []
        for sid in [s for s in self.partials if s > above]:
            self.partials.pop(sid)
            self.outbox.drop(sid)
            out.append((sid, HttpProtocolError(why, status=502, refused=refused)))
        return out

    def ack(self, stream_id: int, n: int) -> None:
        """The consumer took `n` body bytes of `stream_id`: re-open the windows."""
        if n and not self.closed:
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.conn.acknowledge_received_data(n, stream_id)

    def receive_data(self, data: bytes) -> list[tuple[int, Event]]:
        """Events per stream: the head (`HttpResponse`), `BodyChunk`s (acknowledge them with
        `ack` once consumed: back-pressure), the `BodyEnd`, or an `HttpProtocolError`."""
        if data == b"":
            self.closed = True
            return self._fail_all("backend closed the HTTP/2 connection before the response "
                                  "ended")
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self.closed = True
            return self._fail_all(f"backend broke HTTP/2: {exc}")
        out: list[tuple[int, Event]] = []
        for ev in events:
            sid = getattr(ev, "stream_id", 0)
            if isinstance(ev, h2.events.ResponseReceived) and sid in self.partials:
                # The connection decodes headers to str (header_encoding); h2's stubs say bytes.
                hs = cast("tuple[tuple[str, str], ...]", tuple(ev.headers))
                status = next((v for n, v in hs if n == ":status"), "0")
                length = next((v for n, v in hs if n == "content-length"), None)
                self.partials[sid] = _Partial(())
                out.append((sid, HttpResponse(
                    int(status) if status.isdigit() else 0, clean_headers(hs),
                    length=int(length) if length and length.isdigit() else None)))
                if ev.stream_ended is not None:
                    out.append((sid, self._done(sid, ())))
            elif isinstance(ev, h2.events.DataReceived):
                padding = ev.flow_controlled_length - len(ev.data)
                if padding:
                    self.conn.acknowledge_received_data(padding, sid)
                if self.partials.get(sid) is None:
                    self.conn.acknowledge_received_data(len(ev.data), sid)
                    continue
                if ev.data:
                    out.append((sid, BodyChunk(ev.data)))
                if ev.stream_ended is not None:
                    out.append((sid, self._done(sid, ())))
            elif isinstance(ev, h2.events.TrailersReceived) and self.partials.get(sid):
                out.append((sid, self._done(sid, clean_headers(
                    tuple(ev.headers)))))  # type: ignore[arg-type]
            elif isinstance(ev, h2.events.StreamEnded) and self.partials.get(sid):
                out.append((sid, self._done(sid, ())))
            elif isinstance(ev, h2.events.StreamReset) and sid in self.partials:
                self.partials.pop(sid)
                self.outbox.drop(sid)
                out.append((sid, HttpProtocolError(
                    f"backend reset the stream ({ev.error_code!r})", status=502,
                    refused=ev.error_code == h2.errors.ErrorCodes.REFUSED_STREAM)))
            elif isinstance(ev, h2.events.ConnectionTerminated):
                out += self._goaway(ev)
            elif isinstance(ev, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
                self.settings_received |= isinstance(ev, h2.events.RemoteSettingsChanged)
                self.outbox.flush_all()
        return out

    def _goaway(self, ev: h2.events.ConnectionTerminated) -> list[tuple[int, Event]]:
        self.draining = True
        last = ev.last_stream_id if ev.last_stream_id is not None else 0
        out = self._fail_all(f"backend sent GOAWAY ({ev.error_code!r})", refused=True,
                             above=last)
        if ev.error_code == h2.errors.ErrorCodes.NO_ERROR and self.partials:
            # RFC 9113 §6.8: streams up to last_stream_id may still complete. h2 4.x closes
            # its state machine on any GOAWAY; reopen it so their frames are accepted.
            self.conn.state_machine.state = h2.connection.ConnectionState.CLIENT_OPEN
        else:
            self.closed = True
            out += self._fail_all(f"backend sent GOAWAY ({ev.error_code!r})")
        return out

    def _done(self, stream_id: int, trailers: Headers) -> BodyEnd:
        """The response ended. A request not sent to its end yet (body still coming, or
        waiting for window) is reset: nothing more of it goes out and the stream stops
        counting against the peer's MAX_CONCURRENT_STREAMS (Envoy resets the upstream
        request when its response completes first; RFC 9113 §8.1 allows the early end)."""
        self.partials.pop(stream_id)
        stream = self.conn.streams.get(stream_id)
        if stream is not None and not stream.closed:
            self.outbox.drop(stream_id)
            with contextlib.suppress(h2.exceptions.StreamClosedError,
                                     h2.exceptions.ProtocolError):
                self.conn.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
        return BodyEnd(trailers)

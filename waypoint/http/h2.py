"""The downstream HTTP/2 server codec over the h2 library, sans-IO (and the shared outbox).

`H2Server` (used by `waypoint.proxy.downstream` for tunnels that start with the HTTP/2
preface): `initiate()` gives our SETTINGS; `receive_data(bytes)` returns, per stream (many at
once: multiplexing), a whole `HttpRequest` when its body came with its head (up to
`Limits.inline_body`), else a streamed head followed by `BodyChunk`s and a `BodyEnd` (with the
trailers); `StreamCancelled` (client reset) and `RequestFailed`s: a stream-level problem
(headers too large: 431, body too large: 413) or a connection-level protocol violation
(`stream_id` None: GOAWAY is queued, the tunnel closes). Responses: `send_response(sid, resp)`
(whole) or `start_response` / `send_data` / `end_response` (streamed; `queued(sid)` is what
still waits for the client's window). `data_to_send()` drains what is ready.
`H2Client` (the upstream side) is in `waypoint.http.h2_client`.
Invariants: we never send more DATA than the peer's windows allow; inline body bytes are
acknowledged as they are buffered, streamed ones only when the handler consumed them (`ack`):
flow control is the back-pressure.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from waypoint.http.messages import (
    DEFAULT_LIMITS,
    BodyChunk,
    BodyEnd,
    Headers,
    HttpRequest,
    HttpResponse,
    Limits,
    RequestFailed,
    StreamCancelled,
    clean_headers,
)

ServerEvent = HttpRequest | BodyChunk | BodyEnd | RequestFailed | StreamCancelled


class _Pending:
    __slots__ = ("chunks", "ended", "size", "trailers")

    def __init__(self) -> None:
        self.chunks: collections.deque[memoryview] = collections.deque()
        self.size = 0
        self.ended = False
        self.trailers: Headers = ()


class _Outbox:
    """Per-stream pending body chunks and the end (with trailers), sent as the flow-control
    windows allow. `queued(stream_id)` is what waits for window (back-pressure for callers)."""

    def __init__(self, conn: h2.connection.H2Connection) -> None:
        self.conn = conn
        self.pending: dict[int, _Pending] = {}

    def queue(self, stream_id: int, body: bytes, trailers: Headers) -> None:
        """The whole rest of a body, then the end."""
        self.append(stream_id, body)
        self.end(stream_id, trailers)

    def append(self, stream_id: int, data: bytes) -> None:
        p = self.pending.setdefault(stream_id, _Pending())
        if data:
            p.chunks.append(memoryview(data))
            p.size += len(data)
        self.flush(stream_id)

    def end(self, stream_id: int, trailers: Headers = ()) -> None:
        p = self.pending.setdefault(stream_id, _Pending())
        p.ended, p.trailers = True, trailers
        self.flush(stream_id)

    def queued(self, stream_id: int) -> int:
        p = self.pending.get(stream_id)
        return p.size if p is not None else 0

    def flush(self, stream_id: int) -> None:
        p = self.pending.get(stream_id)
        if p is None:
            return
        try:
            while p.chunks:
                body = p.chunks[0]
                window = self.conn.local_flow_control_window(stream_id)
                n = min(window, self.conn.max_outbound_frame_size, len(body))
                if n <= 0:
                    return
                self.conn.send_data(stream_id, body[:n].tobytes())
                p.size -= n
                if n == len(body):
                    p.chunks.popleft()
                else:
                    p.chunks[0] = body[n:]
            if not p.ended:
                return
            if p.trailers:
                self.conn.send_headers(stream_id, list(p.trailers), end_stream=True)
            else:
                self.conn.end_stream(stream_id)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            pass  # the peer reset it meanwhile: nothing more to send
        del self.pending[stream_id]

    def flush_all(self) -> None:
        for sid in list(self.pending):
            self.flush(sid)

    def drop(self, stream_id: int) -> None:
        self.pending.pop(stream_id, None)


class _Partial:
    __slots__ = ("body", "headers", "size", "streamed", "trailers")

    def __init__(self, headers: Headers) -> None:
        self.headers = headers
        self.body = bytearray()
        self.trailers: Headers = ()
        self.size = 0  # body bytes received
        self.streamed = False  # the head went out; body bytes go out as chunks


class H2Server:
    """One downstream HTTP/2 connection (inside one HBONE tunnel)."""

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=False, header_encoding="utf-8", validate_inbound_headers=True))
        self.conn.local_settings = h2.settings.Settings(client=False, initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: limits.max_concurrent_streams,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: limits.max_header_bytes,
            h2.settings.SettingCodes.ENABLE_PUSH: 0,
        })
        self.outbox = _Outbox(self.conn)
        self.streams: dict[int, _Partial] = {}
        self.closed = False

    def initiate(self) -> bytes:
        self.conn.initiate_connection()
        return self.conn.data_to_send()

    def data_to_send(self) -> bytes:
        return self.conn.data_to_send()

    def receive_data(self, data: bytes) -> list[ServerEvent]:
        """Whole requests, or streamed heads with their `BodyChunk`s (acknowledge each with
        `ack` once consumed: flow control is the back-pressure) and `BodyEnd`; client resets
        (`StreamCancelled`) and failures."""
        out: list[ServerEvent] = []
        if self.closed:
            return out
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self.closed = True  # h2 queued a GOAWAY with the right error code
            out.append(RequestFailed(None, f"HTTP/2 protocol error: {exc}"))
            return out
        touched: list[int] = []
        for ev in events:
            sid = getattr(ev, "stream_id", 0)
            if isinstance(ev, h2.events.RequestReceived):
                headers = tuple(ev.headers)
                size = sum(len(n) + len(v) + 32 for n, v in headers)  # RFC 9113 §6.5.2
                if size > self.limits.max_header_bytes:
                    out.append(RequestFailed(431, f"request headers of {size} bytes are "
                                             f"larger than {self.limits.max_header_bytes}",
                                             sid, close=False))
                    continue
                self.streams[sid] = _Partial(headers)  # type: ignore[arg-type]
                if ev.stream_ended is not None:
                    out.append(self._complete(sid))
                else:
                    touched.append(sid)
            elif isinstance(ev, h2.events.DataReceived):
                p = self.streams.get(sid)
                if p is None or not p.streamed:  # inline bodies are small: take them now
                    self.conn.acknowledge_received_data(ev.flow_controlled_length, sid)
                elif ev.flow_controlled_length > len(ev.data):  # padding
                    self.conn.acknowledge_received_data(
                        ev.flow_controlled_length - len(ev.data), sid)
                if p is None:
                    continue
                p.size += len(ev.data)
                if p.size > self.limits.max_request_body:
                    del self.streams[sid]
                    out.append(RequestFailed(413, "request body is larger than "
                                             f"{self.limits.max_request_body} bytes",
                                             sid, close=False))
                elif p.streamed:
                    out.append(BodyChunk(ev.data, sid))
                else:
                    p.body += ev.data
                    if len(p.body) > self.limits.inline_body:
                        out += self._start_stream(sid)
            elif isinstance(ev, h2.events.TrailersReceived):
                p = self.streams.get(sid)
                if p is not None:
                    p.trailers = tuple(ev.headers)  # type: ignore[arg-type]
            elif isinstance(ev, h2.events.StreamEnded):
                p = self.streams.get(sid)
                if p is not None and p.streamed:
                    del self.streams[sid]
                    out.append(BodyEnd(clean_headers(p.trailers), sid))
                elif p is not None:
                    out.append(self._complete(sid))
            elif isinstance(ev, h2.events.StreamReset):
                self.streams.pop(sid, None)
                self.outbox.drop(sid)
                out.append(StreamCancelled(sid))
            elif isinstance(ev, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
                self.outbox.flush_all()
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.closed = True
        for sid in touched:  # heads whose body did not (fully) arrive with them: stream them
            p = self.streams.get(sid)
            if p is not None and not p.streamed:
                out += self._start_stream(sid)
        return out

    def _start_stream(self, stream_id: int) -> list[ServerEvent]:
        p = self.streams[stream_id]
        head = self._complete(stream_id, keep=True)
        if isinstance(head, RequestFailed):
            self.streams.pop(stream_id, None)
            return [head]
        length = next((v for n, v in p.headers if n == "content-length"), "")
        p.streamed = True
        out: list[ServerEvent] = [dataclasses.replace(
            head, body=b"", trailers=(), streamed=True,
            length=int(length) if length.isdigit() else None)]
        if p.body:
            out.append(BodyChunk(bytes(p.body), stream_id))  # already acknowledged
            p.body = bytearray()
        return out

    def ack(self, stream_id: int, n: int) -> None:
        """The handler consumed `n` bytes of a streamed body: re-open the windows."""
        if n and not self.closed:
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.conn.acknowledge_received_data(n, stream_id)

    def _complete(self, stream_id: int, keep: bool = False) -> HttpRequest | RequestFailed:
        p = self.streams[stream_id] if keep else self.streams.pop(stream_id)
        pseudo = {n: v for n, v in p.headers if n.startswith(":")}
        method = pseudo.get(":method", "")
        if method == "CONNECT":
            self.reset(stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
            return RequestFailed(None, "CONNECT inside the tunnel is not supported", stream_id,
                                 close=False)
        authority = pseudo.get(":authority") or next(
            (v for n, v in p.headers if n == "host"), "")
        return HttpRequest(method, pseudo.get(":path", "/"), authority,
                           clean_headers(p.headers), bytes(p.body),
                           clean_headers(p.trailers), pseudo.get(":scheme", "http"), "HTTP/2",
                           stream_id)

    def send_response(self, stream_id: int, resp: HttpResponse) -> None:
        """Queue `resp` on `stream_id` (ignored if the client reset the stream meanwhile)."""
        headers = [(":status", str(resp.status)), *resp.headers]
        if resp.body or not resp.trailers:
            headers.append(("content-length", str(len(resp.body))))
        end = not resp.body and not resp.trailers
        try:
            self.conn.send_headers(stream_id, headers, end_stream=end)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            return
        if not end:
            self.outbox.queue(stream_id, resp.body, resp.trailers)

    def start_response(self, stream_id: int, head: HttpResponse) -> None:
        """Queue a streamed response's headers (`head.length` as content-length if known);
        body through `send_data`, then `end_response`."""
        headers = [(":status", str(head.status)), *head.headers]
        if head.length is not None:
            headers.append(("content-length", str(head.length)))
        with contextlib.suppress(h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            self.conn.send_headers(stream_id, headers, end_stream=False)

    def send_data(self, stream_id: int, data: bytes) -> None:
        """Queue body bytes; `queued(stream_id)` tells how much still waits for window."""
        if stream_id in self.conn.streams:
            self.outbox.append(stream_id, data)

    def end_response(self, stream_id: int, trailers: Headers = ()) -> None:
        if stream_id in self.conn.streams:
            self.outbox.end(stream_id, trailers)

    def queued(self, stream_id: int) -> int:
        return self.outbox.queued(stream_id)

    def reset(self, stream_id: int,
              code: h2.errors.ErrorCodes = h2.errors.ErrorCodes.CANCEL) -> None:
        self.outbox.drop(stream_id)
        self.streams.pop(stream_id, None)
        with contextlib.suppress(h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            self.conn.reset_stream(stream_id, code)

    def goaway(self) -> None:
        if not self.closed:
            self.closed = True
            self.conn.close_connection()

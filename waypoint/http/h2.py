"""HTTP/2 codecs over the h2 library, sans-IO: the downstream server and the upstream client.

`H2Server` (used by `waypoint.proxy.downstream` for tunnels that start with the HTTP/2
preface): `initiate()` gives our SETTINGS; `receive_data(bytes)` returns complete
`HttpRequest`s (one per stream, many at once: multiplexing), `StreamCancelled` (client reset)
and `RequestFailed`s: a stream-level problem (headers too large: 431, body too large: 413; that
stream is answered and ends) or
a connection-level protocol violation (`stream_id` None: GOAWAY is queued, the tunnel closes).
`send_response(stream_id, resp)` queues headers, body (as flow control allows) and trailers;
`data_to_send()` drains what is ready. More body goes out as the peer opens windows.

`H2Client` (used by `waypoint.proxy.upstream`, gRPC included): one request on a fresh
HTTP/2 connection: `start()` → bytes; `receive_data(bytes)` → the `HttpResponse` once the
stream ended (trailers kept), else None; a reset or GOAWAY raises `HttpProtocolError`
(`status` 502, `refused` set for REFUSED_STREAM so retries can tell).
Invariants: we never send more DATA than the peer's windows allow; every received DATA byte
is acknowledged (window re-opened) as it is buffered.
"""

from __future__ import annotations

import contextlib
from typing import cast

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from waypoint.errors import HttpProtocolError
from waypoint.http.messages import (
    DEFAULT_LIMITS,
    Headers,
    HttpRequest,
    HttpResponse,
    Limits,
    RequestFailed,
    StreamCancelled,
    clean_headers,
)


class _Outbox:
    """Per-stream pending body and trailers, sent as the flow-control windows allow."""

    def __init__(self, conn: h2.connection.H2Connection) -> None:
        self.conn = conn
        self.pending: dict[int, tuple[memoryview, Headers]] = {}

    def queue(self, stream_id: int, body: bytes, trailers: Headers) -> None:
        self.pending[stream_id] = (memoryview(body), trailers)
        self.flush(stream_id)

    def flush(self, stream_id: int) -> None:
        if stream_id not in self.pending:
            return
        body, trailers = self.pending[stream_id]
        try:
            while body:
                window = self.conn.local_flow_control_window(stream_id)
                n = min(window, self.conn.max_outbound_frame_size, len(body))
                if n <= 0:
                    self.pending[stream_id] = (body, trailers)
                    return
                self.conn.send_data(stream_id, body[:n].tobytes())
                body = body[n:]
            if trailers:
                self.conn.send_headers(stream_id, list(trailers), end_stream=True)
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
    __slots__ = ("body", "headers", "trailers")

    def __init__(self, headers: Headers) -> None:
        self.headers = headers
        self.body = bytearray()
        self.trailers: Headers = ()


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

    def receive_data(self, data: bytes) -> list[HttpRequest | RequestFailed | StreamCancelled]:
        out: list[HttpRequest | RequestFailed | StreamCancelled] = []
        if self.closed:
            return out
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self.closed = True  # h2 queued a GOAWAY with the right error code
            out.append(RequestFailed(None, f"HTTP/2 protocol error: {exc}"))
            return out
        for ev in events:
            if isinstance(ev, h2.events.RequestReceived):
                headers = tuple(ev.headers)
                size = sum(len(n) + len(v) + 32 for n, v in headers)  # RFC 9113 §6.5.2
                if size > self.limits.max_header_bytes:
                    out.append(RequestFailed(431, f"request headers of {size} bytes are "
                                             f"larger than {self.limits.max_header_bytes}",
                                             ev.stream_id, close=False))
                    continue
                self.streams[ev.stream_id] = _Partial(headers)  # type: ignore[arg-type]
                if ev.stream_ended is not None:
                    out.append(self._complete(ev.stream_id))
            elif isinstance(ev, h2.events.DataReceived):
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                p = self.streams.get(ev.stream_id)
                if p is None:
                    continue
                p.body += ev.data
                if len(p.body) > self.limits.max_request_body:
                    del self.streams[ev.stream_id]
                    out.append(RequestFailed(413, "request body is larger than "
                                             f"{self.limits.max_request_body} bytes",
                                             ev.stream_id, close=False))
                    continue
                if ev.stream_ended is not None:
                    out.append(self._complete(ev.stream_id))
            elif isinstance(ev, h2.events.TrailersReceived):
                p = self.streams.get(ev.stream_id)
                if p is not None:
                    p.trailers = tuple(ev.headers)  # type: ignore[arg-type]
                    out.append(self._complete(ev.stream_id))
            elif isinstance(ev, h2.events.StreamEnded):
                if ev.stream_id in self.streams:
                    out.append(self._complete(ev.stream_id))
            elif isinstance(ev, h2.events.StreamReset):
                self.streams.pop(ev.stream_id, None)
                self.outbox.drop(ev.stream_id)
                out.append(StreamCancelled(ev.stream_id))
            elif isinstance(ev, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
                self.outbox.flush_all()
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.closed = True
        return out

    def _complete(self, stream_id: int) -> HttpRequest | RequestFailed:
        p = self.streams.pop(stream_id)
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


class H2Client:
    """One upstream HTTP/2 request/response exchange on a fresh connection (stream 1)."""

    def __init__(self, request: HttpRequest, limits: Limits = DEFAULT_LIMITS) -> None:
        self.request = request
        self.limits = limits
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding="utf-8"))
        self.outbox = _Outbox(self.conn)
        self.stream_id = 1
        self._partial: _Partial | None = None
        self._status = 0

    def start(self) -> bytes:
        r = self.request
        self.conn.initiate_connection()
        self.conn.increment_flow_control_window(16 * 1024 * 1024 - 65535)
        headers = [(":method", r.method), (":scheme", r.scheme), (":authority", r.authority),
                   (":path", r.path), *r.headers]
        if r.body:
            headers.append(("content-length", str(len(r.body))))
        self.stream_id = self.conn.get_next_available_stream_id()
        end = not r.body and not r.trailers
        self.conn.send_headers(self.stream_id, headers, end_stream=end)
        if not end:
            self.outbox.queue(self.stream_id, r.body, r.trailers)
        return self.conn.data_to_send()

    def data_to_send(self) -> bytes:
        return self.conn.data_to_send()

    def receive_data(self, data: bytes) -> HttpResponse | None:
        if data == b"":
            raise HttpProtocolError("backend closed the HTTP/2 connection before the response "
                                    "ended", status=502)
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            raise HttpProtocolError(f"backend broke HTTP/2: {exc}", status=502) from exc
        for ev in events:
            if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == self.stream_id:
                # The connection decodes headers to str (header_encoding); h2's stubs say bytes.
                hs = cast("tuple[tuple[str, str], ...]", tuple(ev.headers))
                status = next((v for n, v in hs if n == ":status"), "0")
                self._status = int(status) if status.isdigit() else 0
                self._partial = _Partial(clean_headers(hs))
                if ev.stream_ended is not None:
                    return self._done()
            elif isinstance(ev, h2.events.DataReceived):
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                if self._partial is not None and ev.stream_id == self.stream_id:
                    self._partial.body += ev.data
                    if len(self._partial.body) > self.limits.max_response_body:
                        raise HttpProtocolError("backend response body is larger than "
                                                f"{self.limits.max_response_body} bytes",
                                                status=502)
                    if ev.stream_ended is not None:
                        return self._done()
            elif isinstance(ev, h2.events.TrailersReceived) and self._partial is not None:
                self._partial.trailers = tuple(ev.headers)  # type: ignore[arg-type]
                return self._done()
            elif isinstance(ev, h2.events.StreamEnded) and self._partial is not None:
                return self._done()
            elif isinstance(ev, h2.events.StreamReset) and ev.stream_id == self.stream_id:
                raise HttpProtocolError(
                    f"backend reset the stream ({ev.error_code!r})", status=502,
                    refused=ev.error_code == h2.errors.ErrorCodes.REFUSED_STREAM)
            elif isinstance(ev, h2.events.ConnectionTerminated):
                raise HttpProtocolError(f"backend sent GOAWAY ({ev.error_code!r})", status=502)
            elif isinstance(ev, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
                self.outbox.flush_all()
        return None

    def _done(self) -> HttpResponse:
        assert self._partial is not None
        p = self._partial
        return HttpResponse(self._status, p.headers, bytes(p.body), clean_headers(p.trailers))

"""HTTP/1.1 codecs over h11, sans-IO: the downstream server side and the upstream client side.

`H1Server` is used by `waypoint.proxy.downstream` for a tunnel whose bytes sniffed as HTTP/1.x:
`receive_data(bytes)` returns complete `HttpRequest`s (keep-alive: one at a time; h11 pauses
until the response is sent) or a `RequestFailed` (malformed: 400; headers too large: 431; body
too large: 413), after which the tunnel is closed. `send_response(resp)` (a whole local answer),
`start_response(head)` / `send_data(bytes)` / `end_response(trailers)` (a streamed one) and
`send_error(...)` return the bytes to write; `keep_alive` says whether another request may
follow. A response whose head goes out before the request body ended carries
`connection: close` and the connection closes after it (Envoy's HTTP connection manager does
the same: it does not wait for the rest of a body nobody reads).

`H1Client` is used by `waypoint.proxy.pool` for one pooled upstream connection (keep-alive):
`start(request)` returns the request bytes; `receive_data(bytes)` (b"" at EOF) returns the
response as it arrives (head, `BodyChunk`s, `BodyEnd`); a broken response raises
`HttpProtocolError`; `reusable` says whether the next request may use the same connection.
A streamed request body (`send_body`, `end_body`) may be sent while the response arrives.
Invariants: header names lower-case on the way out of this module (see `messages`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import h11

from waypoint.errors import HttpProtocolError
from waypoint.http.messages import (
    DEFAULT_LIMITS,
    BodyChunk,
    BodyEnd,
    Headers,
    HttpRequest,
    HttpResponse,
    Limits,
    RequestFailed,
    clean_headers,
)

ServerEvent = HttpRequest | BodyChunk | BodyEnd | RequestFailed


def _decode(headers: Iterable[tuple[bytes, bytes]]) -> Headers:
    return tuple((n.decode("latin-1").lower(), v.decode("latin-1")) for n, v in headers)


def _encode(headers: Headers) -> list[tuple[str, str]]:
    return [(n, v) for n, v in headers]


class H1Server:
    """One downstream HTTP/1.1 connection (inside one HBONE tunnel)."""

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_header_bytes)
        self._head: h11.Request | None = None  # held until its body is known to be inline
        self._body = bytearray()
        self._length: int | None = None
        self._received = 0
        self.failed = False
        self._chunked = False

    @property
    def keep_alive(self) -> bool:
        return not self.failed and self.conn.our_state is h11.IDLE

    @property
    def request_complete(self) -> bool:
        """Whether the current request's body was received to its end."""
        return self.conn.their_state is not h11.SEND_BODY

    def receive_data(self, data: bytes | None) -> list[ServerEvent]:
        """Feed tunnel bytes (b"" at EOF; None: only parse what is already buffered, e.g.
        a pipelined request after a response). Out come: a whole `HttpRequest` (its body
        arrived with it), or a streamed head followed, now or in later calls, by its
        `BodyChunk`s and `BodyEnd`; or one `RequestFailed`."""
        if self.failed:
            return []
        if data is not None:
            self.conn.receive_data(data)
        out: list[ServerEvent] = []
        while True:
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError as exc:
                self.failed = True
                out.append(RequestFailed(exc.error_status_hint, f"bad HTTP/1.1 request: {exc}"))
                return out
            if event is h11.NEED_DATA or event is h11.PAUSED:
                if self._head is not None:  # the body did not come with the head: stream it
                    out += self._start_stream()
                return out
            if isinstance(event, h11.ConnectionClosed):
                return out
            if isinstance(event, h11.Request):
                size = len(event.target) + sum(len(n) + len(v) + 4 for n, v in event.headers)
                if size > self.limits.max_header_bytes:  # h11 only bounds incomplete heads
                    self.failed = True
                    out.append(RequestFailed(431, f"request headers of {size} bytes are larger "
                                             f"than {self.limits.max_header_bytes}"))
                    return out
                length = dict(_decode(event.headers)).get("content-length", "")
                self._length = int(length) if length.isdigit() else None
                if self._length is not None and self._length > self.limits.max_request_body:
                    self.failed = True
                    out.append(RequestFailed(413, f"request body of {length} bytes is larger "
                                             f"than {self.limits.max_request_body}"))
                    return out
                self._head = event
                self._body = bytearray()
                self._received = 0
            elif isinstance(event, h11.Data):
                self._received += len(event.data)
                if self._received > self.limits.max_request_body:
                    self.failed = True
                    out.append(RequestFailed(413, "request body is larger than "
                                             f"{self.limits.max_request_body} bytes"))
                    return out
                if self._head is None:
                    out.append(BodyChunk(bytes(event.data)))
                else:
                    self._body += event.data
                    if len(self._body) > self.limits.inline_body:
                        out += self._start_stream()
            elif isinstance(event, h11.EndOfMessage):
                trailers = _decode(event.headers)
                if self._head is None:
                    out.append(BodyEnd(trailers))
                else:
                    out.append(self._request(self._head, bytes(self._body), trailers))
                    self._head = None

    def _start_stream(self) -> list[ServerEvent]:
        """Emit the held head as streamed; its body so far follows as one chunk."""
        assert self._head is not None
        out: list[ServerEvent] = [dataclasses.replace(
            self._request(self._head, b"", ()), streamed=True, length=self._length)]
        self._head = None
        if self._body:
            out.append(BodyChunk(bytes(self._body)))
        self._body = bytearray()
        return out

    def _request(self, head: h11.Request, body: bytes, trailers: Headers) -> HttpRequest:
        raw = _decode(head.headers)
        host = next((v for n, v in raw if n == "host"), "")
        target = head.target.decode("latin-1")
        scheme = "http"
        if target.startswith(("http://", "https://")):  # absolute-form
            scheme, _, rest = target.partition("://")
            host_part, slash, path = rest.partition("/")
            host = host or host_part
            target = slash + path or "/"
        return HttpRequest(head.method.decode("ascii"), target, host, clean_headers(raw), body,
                           trailers, scheme, f"HTTP/{head.http_version.decode('ascii')}")

    def send_response(self, resp: HttpResponse, *, close: bool = False) -> bytes:
        """The bytes of `resp`; afterwards the next request may be read (unless closing)."""
        headers = list(_encode(resp.headers))
        chunked = bool(resp.trailers) and self.conn.their_http_version == b"1.1"
        if chunked:
            headers.append(("transfer-encoding", "chunked"))
        elif resp.status not in (204, 304) and resp.status >= 200:
            headers.append(("content-length", str(len(resp.body))))
        if close or not self.request_complete:
            headers.append(("connection", "close"))
        out = self.conn.send(h11.Response(status_code=resp.status, headers=headers,
                                          reason=b""))
        if resp.body:
            out += self.conn.send(h11.Data(data=resp.body))
        trailers = list(_encode(resp.trailers)) if chunked else []
        out += self.conn.send(h11.EndOfMessage(headers=trailers))
        if (self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE
                and not close):
            self.conn.start_next_cycle()
        return out

    def start_response(self, head: HttpResponse) -> bytes:
        """The head of a streamed response: content-length when `head.length` is known (and
        for HEAD requests, h11 sends no body either way), else chunked (HTTP/1.1 clients:
        trailers can follow) or until close (HTTP/1.0). Then `send_data`, `end_response`.
        Before the request body ended: `connection: close` (the rest of the body is not
        waited for; h11 then ends the connection after this response)."""
        headers = list(_encode(head.headers))
        if not self.request_complete:
            headers.append(("connection", "close"))
        self._chunked = False
        if head.length is not None:
            headers.append(("content-length", str(head.length)))
        elif (head.status >= 200 and head.status not in (204, 304)
              and self.conn.their_http_version == b"1.1"):
            headers.append(("transfer-encoding", "chunked"))
            self._chunked = True
        return self.conn.send(h11.Response(status_code=head.status, headers=headers,
                                           reason=b""))

    def send_data(self, data: bytes) -> bytes:
        return self.conn.send(h11.Data(data=data)) if data else b""

    def end_response(self, trailers: Headers = ()) -> bytes:
        """The end of a streamed response (trailers only when chunked); afterwards the next
        request may be read if the connection stays open."""
        out = self.conn.send(h11.EndOfMessage(
            headers=list(_encode(trailers)) if self._chunked else []))
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
        return out

    def send_error(self, status: int, reason: str) -> bytes:
        """An error response after a failure, then the connection closes; b"" if too late."""
        if self.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return b""
        self.failed = True
        body = (reason + "\n").encode()
        try:
            out = self.conn.send(h11.Response(status_code=status, headers=[
                ("content-type", "text/plain"), ("content-length", str(len(body))),
                ("connection", "close")], reason=b""))
            return out + self.conn.send(h11.Data(data=body)) + self.conn.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            return b""


class H1Client:
    """One upstream HTTP/1.1 connection: exchanges one after another (keep-alive).

    `start(request)` returns the request bytes; `receive_data(bytes)` (b"" at EOF) returns the
    response as it arrives: head, `BodyChunk`s, `BodyEnd`. After a complete exchange
    `reusable` says whether the connection may carry the next request (both sides DONE, no
    `Connection: close`, not HTTP/1.0, not delimited by EOF); `start` on a reusable
    connection begins the next cycle.
    `response_started` tells whether any response byte arrived for the current request (a
    connection found dead before that is "stale", see `waypoint.proxy.pool`).
    """

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        self.conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=limits.max_header_bytes)
        self.exchanges = 0
        self.response_started = False
        self._chunked_request = False

    def data_to_send(self) -> bytes:
        return b""  # everything went out with start()

    @property
    def reusable(self) -> bool:
        return self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE

    def start(self, r: HttpRequest) -> bytes:
        if self.exchanges:
            if not self.reusable:
                raise HttpProtocolError("upstream HTTP/1.1 connection is not reusable",
                                        status=502)
            self.conn.start_next_cycle()
        self.exchanges += 1
        self.response_started = False
        headers = [("host", r.authority), *_encode(r.headers)]
        self._chunked_request = not (r.streamed and r.length is not None)
        if r.streamed and r.length is not None:
            headers.append(("content-length", str(r.length)))
        elif r.trailers or r.streamed:
            headers.append(("transfer-encoding", "chunked"))
        elif r.body or r.method not in ("GET", "HEAD", "DELETE", "OPTIONS", "TRACE"):
            headers.append(("content-length", str(len(r.body))))
        out = self.conn.send(h11.Request(method=r.method, target=r.path, headers=headers))
        if r.streamed:
            return out  # the body follows: send_body(), end_body()
        if r.body:
            out += self.conn.send(h11.Data(data=r.body))
        out += self.conn.send(h11.EndOfMessage(headers=list(_encode(r.trailers))))
        return out

    def send_body(self, data: bytes) -> bytes:
        """A chunk of a streamed request body (also while the response arrives)."""
        try:
            return self.conn.send(h11.Data(data=data)) if data else b""
        except h11.LocalProtocolError as exc:
            raise HttpProtocolError(f"cannot send the request body upstream: {exc}",
                                    status=502) from exc

    def end_body(self, trailers: Headers = ()) -> bytes:
        """The end of a streamed body; trailers only go with chunked encoding."""
        try:
            return self.conn.send(h11.EndOfMessage(
                headers=list(_encode(trailers)) if self._chunked_request else []))
        except h11.LocalProtocolError as exc:
            raise HttpProtocolError(f"cannot end the request body upstream: {exc}",
                                    status=502) from exc

    def receive_data(self, data: bytes) -> list[HttpResponse | BodyChunk | BodyEnd]:
        """Feed the backend's bytes (b"" at EOF): the response head (`HttpResponse`, empty
        body), then `BodyChunk`s as they arrive, then `BodyEnd` with the trailers."""
        if data:
            self.response_started = True
        self.conn.receive_data(data)
        out: list[HttpResponse | BodyChunk | BodyEnd] = []
        while True:
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise HttpProtocolError(f"backend sent a bad HTTP/1.1 response: {exc}",
                                        status=502) from exc
            if event is h11.NEED_DATA:
                if data == b"":
                    raise HttpProtocolError("backend closed before the response ended", status=502)
                return out
            if event is h11.PAUSED:
                return out
            if isinstance(event, h11.InformationalResponse):
                continue
            if isinstance(event, h11.Response):
                raw = _decode(event.headers)
                length = next((v for n, v in raw if n == "content-length"), None)
                out.append(HttpResponse(event.status_code, clean_headers(raw),
                                        length=int(length) if length and length.isdigit()
                                        else None))
            elif isinstance(event, h11.Data):
                out.append(BodyChunk(bytes(event.data)))
            elif isinstance(event, h11.EndOfMessage):
                out.append(BodyEnd(_decode(event.headers)))
                return out
            elif isinstance(event, h11.ConnectionClosed):
                raise HttpProtocolError("backend closed before the response ended", status=502)

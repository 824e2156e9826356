"""HTTP/1.1 codecs over h11, sans-IO: the downstream server side and the upstream client side.

`H1Server` is used by `waypoint.proxy.downstream` for a tunnel whose bytes sniffed as HTTP/1.x:
`receive_data(bytes)` returns complete `HttpRequest`s (keep-alive: one at a time; h11 pauses
until the response is sent) or a `RequestFailed` (malformed: 400; headers too large: 431; body
too large: 413), after which the tunnel is closed. `send_response(resp)` / `send_error(...)`
return the bytes to write; `keep_alive` says whether another request may follow.

`H1Client` is used by `waypoint.proxy.upstream` for one request on a fresh tunnel:
`start()` returns the request bytes; `receive_data(bytes)` (b"" at EOF) returns the
`HttpResponse` once complete, else None; a broken response raises `HttpProtocolError`.
Invariants: header names lower-case on the way out of this module (see `messages`).
"""

from __future__ import annotations

from collections.abc import Iterable

import h11

from waypoint.errors import HttpProtocolError
from waypoint.http.messages import (
    DEFAULT_LIMITS,
    Headers,
    HttpRequest,
    HttpResponse,
    Limits,
    RequestFailed,
    clean_headers,
)


def _decode(headers: Iterable[tuple[bytes, bytes]]) -> Headers:
    return tuple((n.decode("latin-1").lower(), v.decode("latin-1")) for n, v in headers)


def _encode(headers: Headers) -> list[tuple[str, str]]:
    return [(n, v) for n, v in headers]


class H1Server:
    """One downstream HTTP/1.1 connection (inside one HBONE tunnel)."""

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_header_bytes)
        self._head: h11.Request | None = None
        self._body = bytearray()
        self.failed = False

    @property
    def keep_alive(self) -> bool:
        return not self.failed and self.conn.our_state is h11.IDLE

    def receive_data(self, data: bytes | None) -> list[HttpRequest | RequestFailed]:
        """Feed tunnel bytes (b"" at EOF; None: only parse what is already buffered, e.g.
        a pipelined request after a response); complete requests or one failure come out."""
        if self.failed:
            return []
        if data is not None:
            self.conn.receive_data(data)
        out: list[HttpRequest | RequestFailed] = []
        while True:
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError as exc:
                self.failed = True
                out.append(RequestFailed(exc.error_status_hint, f"bad HTTP/1.1 request: {exc}"))
                return out
            if event is h11.NEED_DATA or event is h11.PAUSED:
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
                length = dict(_decode(event.headers)).get("content-length", "0")
                if length.isdigit() and int(length) > self.limits.max_request_body:
                    self.failed = True
                    out.append(RequestFailed(413, f"request body of {length} bytes is larger "
                                             f"than {self.limits.max_request_body}"))
                    return out
                self._head = event
                self._body = bytearray()
            elif isinstance(event, h11.Data):
                self._body += event.data
                if len(self._body) > self.limits.max_request_body:
                    self.failed = True
                    out.append(RequestFailed(413, "request body is larger than "
                                             f"{self.limits.max_request_body} bytes"))
                    return out
            elif isinstance(event, h11.EndOfMessage):
                assert self._head is not None
                out.append(self._request(self._head, bytes(self._body), _decode(event.headers)))
                self._head = None

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
        if close:
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
    """One upstream HTTP/1.1 request/response exchange on a fresh connection."""

    def __init__(self, request: HttpRequest, limits: Limits = DEFAULT_LIMITS) -> None:
        self.request = request
        self.limits = limits
        self.conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=limits.max_header_bytes)
        self._status = 0
        self._headers: Headers = ()
        self._body = bytearray()

    def data_to_send(self) -> bytes:
        return b""  # everything went out with start()

    def start(self) -> bytes:
        r = self.request
        headers = [("host", r.authority), *_encode(r.headers)]
        if r.trailers:
            headers.append(("transfer-encoding", "chunked"))
        elif r.body or r.method not in ("GET", "HEAD", "DELETE", "OPTIONS", "TRACE"):
            headers.append(("content-length", str(len(r.body))))
        out = self.conn.send(h11.Request(method=r.method, target=r.path, headers=headers))
        if r.body:
            out += self.conn.send(h11.Data(data=r.body))
        out += self.conn.send(h11.EndOfMessage(headers=list(_encode(r.trailers))))
        return out

    def receive_data(self, data: bytes) -> HttpResponse | None:
        """Feed the backend's bytes (b"" at EOF); the response once complete."""
        self.conn.receive_data(data)
        while True:
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise HttpProtocolError(f"backend sent a bad HTTP/1.1 response: {exc}",
                                        status=502) from exc
            if event is h11.NEED_DATA:
                if data == b"":
                    raise HttpProtocolError("backend closed before the response ended", status=502)
                return None
            if isinstance(event, h11.InformationalResponse):
                continue
            if isinstance(event, h11.Response):
                self._status = event.status_code
                self._headers = clean_headers(_decode(event.headers))
            elif isinstance(event, h11.Data):
                self._body += event.data
                if len(self._body) > self.limits.max_response_body:
                    raise HttpProtocolError("backend response body is larger than "
                                            f"{self.limits.max_response_body} bytes", status=502)
            elif isinstance(event, h11.EndOfMessage):
                return HttpResponse(self._status, self._headers, bytes(self._body),
                                    _decode(event.headers))
            elif isinstance(event, h11.ConnectionClosed):
                raise HttpProtocolError("backend closed before the response ended", status=502)

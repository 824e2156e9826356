"""Whole HTTP messages as the waypoint handles them, protocol sniffing, header hygiene. Pure.

Used by the codecs in this package (which build and serialize them) and by
`waypoint.proxy.handler` (which authorizes, routes and forwards them). Bodies stream: a
request whose body is complete when its head is parsed (and small: `Limits.inline_body`)
comes whole, any other comes as a head (`streamed`) followed by `BodyChunk`s and a `BodyEnd`;
backend responses always come as a head, chunks and an end. So uploads, server-sent events
and gRPC streams flow through as they arrive.

Invariants: header names are lower-case; pseudo-headers never appear in `headers`;
hop-by-hop headers (RFC 9110 §7.6.1) are removed on the way in, so a message can be re-encoded
as HTTP/1.1 or HTTP/2 unchanged.
"""

from __future__ import annotations

import dataclasses

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding",
                        "upgrade", "te", "host", "http2-settings", "content-length"})
Headers = tuple[tuple[str, str], ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what a peer may send (Envoy-like defaults)."""

    max_header_bytes: int = 60 * 1024  # 431 above (Envoy: max_request_headers_kb 60)
    max_request_body: int = 1024 * 1024 * 1024  # 413 (declared) / reset (streamed) above
    inline_body: int = 64 * 1024  # bodies complete with their head up to this: not streamed
    max_concurrent_streams: int = 100


DEFAULT_LIMITS = Limits()


@dataclasses.dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    path: str  # path and query ("*" or an absolute URI's path for odd requests)
    authority: str
    headers: Headers = ()
    body: bytes = b""
    trailers: Headers = ()
    scheme: str = "http"
    protocol: str = "HTTP/1.1"  # or "HTTP/2"
    stream_id: int = 1  # HTTP/2 stream, 1 for HTTP/1.1
    # True: only the head is here, the body follows as `BodyChunk`s and a `BodyEnd` (it did
    # not arrive with the head, or is larger than `Limits.inline_body`); False: `body` and
    # `trailers` are complete.
    streamed: bool = False
    length: int | None = None  # the declared content-length of a streamed body

    def header(self, name: str) -> str | None:
        values = [v for n, v in self.headers if n == name]
        return ",".join(values) if values else None

    @property
    def is_grpc(self) -> bool:
        return (self.header("content-type") or "").startswith("application/grpc")


@dataclasses.dataclass(frozen=True, slots=True)
class HttpResponse:
    """A response; from a backend it is the head only (`body` empty, the body streams
    separately, see `waypoint.proxy.pool.UpstreamResponse`), `length` its declared
    content-length (None: unknown, chunked or until close). Local answers carry `body`."""

    status: int
    headers: Headers = ()
    body: bytes = b""
    trailers: Headers = ()
    length: int | None = None

    def header(self, name: str) -> str | None:
        values = [v for n, v in self.headers if n == name]
        return ",".join(values) if values else None

    @property
    def grpc_status(self) -> int | None:
        """`grpc-status` from the trailers (or headers, trailers-only responses)."""
        for n, v in (*self.trailers, *self.headers):
            if n == "grpc-status" and v.strip().isdigit():
                return int(v)
        return None

    @classmethod
    def local(cls, status: int, text: str = "", headers: Headers = ()) -> HttpResponse:
        """A response the waypoint makes itself (plain text body, like Envoy's local replies)."""
        body = (text + "\n").encode() if text else b""
        hs = (*headers, ("content-type", "text/plain")) if body else headers
        return cls(status, hs, body)


@dataclasses.dataclass(frozen=True, slots=True)
class BodyChunk:
    """Part of a streamed body (`stream_id`: the HTTP/2 stream on the server side)."""

    data: bytes
    stream_id: int = 1


@dataclasses.dataclass(frozen=True, slots=True)
class BodyEnd:
    """A streamed body ended, with these trailers."""

    trailers: Headers = ()
    stream_id: int = 1


@dataclasses.dataclass(frozen=True, slots=True)
class RequestFailed:
    """The peer sent something we refuse: answer `status` (None: just reset/close)."""

    status: int | None
    reason: str
    stream_id: int | None = None  # HTTP/2: that stream only; None: the whole tunnel
    close: bool = True


@dataclasses.dataclass(frozen=True, slots=True)
class StreamCancelled:
    """HTTP/2: the client reset a stream; stop working on it."""

    stream_id: int


def clean_headers(headers: Headers) -> Headers:
    """Lower-case names; drop pseudo-headers and hop-by-hop headers (and those `connection`
    names, RFC 9110 §7.6.1); keep `te: trailers` (gRPC needs it end to end)."""
    lowered = tuple((n.lower(), v) for n, v in headers)
    named = {t.strip().lower() for n, v in lowered if n == "connection" for t in v.split(",")}
    out = []
    for n, v in lowered:
        if n.startswith(":"):
            continue
        if n == "te" and v.strip().lower() == "trailers":
            out.append((n, "trailers"))
            continue
        if n in HOP_BY_HOP or n in named:
            continue
        out.append((n, v))
    return tuple(out)


def sniff(first: bytes) -> str | None:
    """"h2" (HTTP/2 prior knowledge preface), "http1" (a request line's method token), "tcp"
    (anything else), or None when more bytes are needed to tell."""
    if not first:
        return None
    n = min(len(first), len(H2_PREFACE))
    if first[:n] == H2_PREFACE[:n]:
        return "h2" if len(first) >= len(H2_PREFACE) else None
    token = first.split(b" ", 1)
    if len(token) == 1:
        return None if len(first) < 16 and first.isalpha() and first.isupper() else "tcp"
    method = token[0]
    return "http1" if method and method.isalpha() and method.isupper() else "tcp"

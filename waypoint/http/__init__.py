"""The waypoint's HTTP layer, sans-IO: whole-message HTTP/1.1 (h11) and HTTP/2 (h2) codecs.

Servers (`H1Server`, `H2Server`) take the bytes of a tunnel and hand out complete
`HttpRequest`s or protocol failures, and write responses as head, body chunks and end;
clients (`H1Client`, `H2Client`) turn an `HttpRequest` into bytes and the backend's bytes into
a response head, `BodyChunk`s and a `BodyEnd` (streamed). No trio, no sockets: the trio
adapters live in `waypoint.proxy`. See docs/waypoint.md "The proxy".
"""

from waypoint.http.h1 import H1Client, H1Server
from waypoint.http.h2 import H2Server
from waypoint.http.h2_client import H2Client
from waypoint.http.messages import (
    H2_PREFACE,
    BodyChunk,
    BodyEnd,
    HttpRequest,
    HttpResponse,
    Limits,
    RequestFailed,
    StreamCancelled,
    sniff,
)

__all__ = [
    "H2_PREFACE",
    "BodyChunk",
    "BodyEnd",
    "H1Client",
    "H1Server",
    "H2Client",
    "H2Server",
    "HttpRequest",
    "HttpResponse",
    "Limits",
    "RequestFailed",
    "StreamCancelled",
    "sniff",
]

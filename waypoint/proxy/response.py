"""A backend's response as it streams: the head, then body chunks, then trailers.

Who makes them: `waypoint.proxy.pool` (one per exchange: `H1Response` owns its keep-alive
connection until the body ended, `H2Response` one stream of a multiplexed connection) and
`UpstreamResponse.whole` for answers already in memory. Who reads them:
`waypoint.proxy.handler`, which decides retries on `head`, then copies `read()` chunks
downstream as they come (back-pressure: nothing is read ahead beyond one chunk for HTTP/1.1
and the stream's flow-control window for HTTP/2) and closes it.
Invariants: `read()` returns b"" once, at the end, after which `trailers` and `complete` are
final; `aclose()` before the end abandons the exchange (HTTP/1.1: the connection is closed,
never reused; HTTP/2: RST_STREAM CANCEL for that stream only); a response that ends while
the request body is still being sent stops that upload (Envoy resets the upstream request
when its response completes first: HTTP/1.1 closes the connection, HTTP/2 resets the
stream); `stop_upload()` stops sending the request body and returns once that stopped
(before a retry reads the body again; the response stays readable); errors mid-body raise
`UpstreamError` (flag UPE/UC).
"""

from __future__ import annotations

import collections

import trio

from waypoint.errors import HttpProtocolError, UpstreamError
from waypoint.http import BodyChunk, BodyEnd, HttpResponse
from waypoint.http.messages import Headers
from waypoint.proxy.body import BodyAborted


class UpstreamResponse:
    def __init__(self, head: HttpResponse) -> None:
        self.head = head
        self.trailers: Headers = ()
        self.complete = False
        self.body_bytes = 0

    @classmethod
    def whole(cls, response: HttpResponse) -> UpstreamResponse:
        return _Whole(response)

    async def read(self) -> bytes:
        raise NotImplementedError

    def ready(self) -> bool:
        """Whether `read()` would return at once (a chunk or the end is already here)."""
        return True

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()

    async def stop_upload(self) -> None:
        """Stop sending the request body (nothing to stop here: it was sent whole)."""
        await trio.lowlevel.checkpoint()

    async def drain(self) -> None:
        """Read to the end, discarding (mirrors: the connection stays reusable)."""
        while await self.read():
            pass

    def _took(self, data: bytes) -> bytes:
        self.body_bytes += len(data)
        return data


class _Whole(UpstreamResponse):
    def __init__(self, response: HttpResponse) -> None:
        super().__init__(response)
        self._body = response.body
        self.trailers = response.trailers

    async def read(self) -> bytes:
        await trio.lowlevel.checkpoint()
        data, self._body = self._body, b""
        if not data:
            self.complete = True
        return self._took(data)


def upstream_error(host: str, exc: BaseException) -> UpstreamError:
    if isinstance(exc, HttpProtocolError):
        return UpstreamError(f"{host}: {exc}", reset="refused-stream" if exc.refused else "reset",
                             flags="UC" if exc.refused else "UPE", upstream=host)
    return UpstreamError(f"{host}: connection to the backend broke: {exc!r}", reset="reset",
                         flags="UC", upstream=host)


class H2Stream:
    """The reader's side of one upstream HTTP/2 stream (filled by the connection's reader)."""

    __slots__ = ("body_error", "chunks", "ended", "error", "head", "head_event", "more",
                 "pump", "pump_done", "trailers")

    def __init__(self) -> None:
        self.head: HttpResponse | None = None
        self.head_event = trio.Event()
        self.chunks: collections.deque[bytes] = collections.deque()
        self.ended = False
        self.trailers: Headers = ()
        self.error: HttpProtocolError | None = None
        self.more = trio.Event()
        self.pump = trio.CancelScope()  # the task copying a streamed request body
        self.pump_done = trio.Event()  # that task exited (set at once when there is none)
        self.body_error: BodyAborted | None = None  # the client's body broke off

    def feed(self, event: HttpResponse | BodyChunk | BodyEnd | HttpProtocolError) -> bool:
        """Take one event; True when the stream is finished (no more events)."""
        if isinstance(event, HttpResponse):
            self.head = event
            self.head_event.set()
            return False
        if isinstance(event, BodyChunk):
            self.chunks.append(event.data)
        elif isinstance(event, BodyEnd):
            self.ended, self.trailers = True, event.trailers
        else:
            self.error = event
            self.head_event.set()
        self.more.set()
        return self.ended or self.error is not None

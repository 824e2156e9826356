"""Request bodies as the handler reads them: streamed from the client, kept for retries.

Who makes them: `waypoint.proxy.downstream` (`H1Body` pulls the rest of a streamed body off
the HTTP/1.1 tunnel when read; `QueueBody` is filled by the HTTP/2 connection's loop and
acknowledges what is read, so flow control is the back-pressure) and the handler
(`ReplayBody` over either, or over a whole in-memory body). Who reads them:
`waypoint.proxy.pool` (one `reader()` per attempt, copying chunks upstream as they come) and
mirrors (`ReplayBody.whole()` once the body ended, if it was kept).

Retries (Envoy's router): the body read so far is kept up to `limit` bytes (1 MiB, Istio's
per_connection_buffer_limit); a new attempt replays it and then continues from the client.
Once more than `limit` was read, nothing is kept: `replayable` is False and no retry or
mirror happens. Invariants: `read()` returns b"" once at the end (then `trailers` are
final); a client that resets or sends too much makes `read()` raise `BodyAborted`.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

import trio

from waypoint.errors import WaypointError
from waypoint.http import BodyChunk, BodyEnd, H1Server, RequestFailed
from waypoint.http.messages import Headers

RETRY_BUFFER = 1024 * 1024  # Istio's per_connection_buffer_limit_bytes
READ_SIZE = 64 * 1024


class BodyAborted(WaypointError):
    """The client's request body broke off (reset, tunnel closed, over the size limit)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status  # 413 when over the size limit


class Signal:
    """A re-armable wake-up: `fire()` wakes every current `wait()`er."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def fire(self) -> None:
        self._event.set()
        self._event = trio.Event()

    async def wait(self) -> None:
        await self._event.wait()


class H1Body:
    """The rest of a streamed HTTP/1.1 request body, read from the tunnel on demand."""

    def __init__(self, stream: trio.abc.Stream, server: H1Server) -> None:
        self.stream, self.server = stream, server
        self.queue: collections.deque[BodyChunk | BodyEnd | RequestFailed] = collections.deque()
        self.trailers: Headers = ()
        self.ended = False

    async def read(self) -> bytes:
        while not self.queue:
            if self.ended:
                await trio.lowlevel.checkpoint()
                return b""
            data = bytes(await self.stream.receive_some(READ_SIZE))
            if not data:
                raise BodyAborted("the client closed before the request body ended")
            for ev in self.server.receive_data(data):
                assert isinstance(ev, BodyChunk | BodyEnd | RequestFailed)
                self.queue.append(ev)
        ev = self.queue.popleft()
        if isinstance(ev, RequestFailed):
            raise BodyAborted(ev.reason, ev.status)
        if isinstance(ev, BodyEnd):
            self.trailers, self.ended = ev.trailers, True
            return b""
        return ev.data


class QueueBody:
    """A streamed HTTP/2 request body: the connection loop `feed`s it, `read` acknowledges
    (`ack` re-opens the client's window at once; the connection sends the WINDOW_UPDATE from
    its own task). Cancel-safe: a read cancelled while waiting loses nothing (the HTTP/1.1
    upstream's body pump is stopped when the response ends first, then a retry reads on)."""

    def __init__(self, ack: Callable[[int], None]) -> None:
        self.ack = ack
        self.chunks: collections.deque[bytes] = collections.deque()
        self.trailers: Headers = ()
        self.ended = False
        self.error: BodyAborted | None = None
        self._more = trio.Event()

    def feed(self, ev: BodyChunk | BodyEnd | BodyAborted) -> None:
        if isinstance(ev, BodyChunk):
            self.chunks.append(ev.data)
        elif isinstance(ev, BodyEnd):
            self.trailers, self.ended = ev.trailers, True
        else:
            self.error = ev
        self._more.set()

    async def read(self) -> bytes:
        while True:
            if self.chunks:
                data = self.chunks.popleft()
                self.ack(len(data))
                await trio.lowlevel.cancel_shielded_checkpoint()  # no cancel: data is taken
                return data
            if self.error is not None:
                raise self.error
            if self.ended:
                await trio.lowlevel.checkpoint()
                return b""
            self._more = trio.Event()
            await self._more.wait()


class ReplayBody:
    """A request body for the attempts of one request (and its mirrors)."""

    def __init__(self, source: H1Body | QueueBody | None, whole: bytes = b"",
                 trailers: Headers = (), limit: int = RETRY_BUFFER) -> None:
        self.source = source
        self.limit = limit
        self.kept: list[bytes] = [whole] if whole else []
        self.received = len(whole)
        self.trailers = trailers
        self.ended = source is None
        self.replayable = True
        self.done = trio.Event()  # the body ended (or broke off)
        if self.ended:
            self.done.set()

    def reader(self) -> BodyReader:
        """A reader from the start (replaying what was kept), for one attempt."""
        return BodyReader(self)

    def whole(self) -> bytes | None:
        """The complete body if it ended and was kept (mirrors), else None."""
        return b"".join(self.kept) if self.ended and self.replayable else None

    async def _pull(self) -> bytes:
        assert self.source is not None
        try:
            data = await self.source.read()
        except BodyAborted:
            self.done.set()
            raise
        if not data:
            self.ended, self.trailers = True, self.source.trailers
            self.done.set()
            return b""
        self.received += len(data)
        if self.replayable:
            if self.received > self.limit:
                self.replayable = False
                self.kept.clear()
            else:
                self.kept.append(data)
        return data


class BodyReader:
    """One attempt's view: the kept chunks again, then what still comes from the client."""

    def __init__(self, body: ReplayBody) -> None:
        self.body = body
        self.pos = 0  # index into body.kept
        # A reader made after bytes were read and dropped cannot send the whole body.
        self.valid = body.replayable or body.received == 0

    @property
    def trailers(self) -> Headers:
        return self.body.trailers

    async def read(self) -> bytes:
        b = self.body
        if not self.valid:
            raise BodyAborted("the request body was not kept (over the retry buffer)")
        if b.replayable and self.pos < len(b.kept):
            self.pos += 1
            await trio.lowlevel.checkpoint()
            return b.kept[self.pos - 1]
        if b.ended:
            await trio.lowlevel.checkpoint()
            return b""
        data = await b._pull()
        self.pos = len(b.kept)
        return data

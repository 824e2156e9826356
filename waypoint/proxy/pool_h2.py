"""The upstream pool's HTTP/2 half: one multiplexed connection per endpoint key.

Who calls it: `waypoint.proxy.pool.UpstreamPool.exchange` for keys whose protocol is "h2"
(gRPC and h2c backends). A connection carries concurrent streams up to the peer's
MAX_CONCURRENT_STREAMS (until the peer's SETTINGS arrived, only the stream that opened it);
when every connection is full or draining another is dialed (one dial at a time per key).
One reader task per connection feeds `H2Client` and hands each stream's events to its
`H2Stream`; a streamed request body is copied by a pump task concurrently with the response
(bidirectional streams). GOAWAY: streams above its last stream id fail as refused (retriable:
never processed), the rest finish, then the connection closes. A response that ends before
its request body was sent resets the stream at once (Envoy does; RFC 9113 §8.1 allows the
early response), so the stream's slot is free for the next request. A cancelled or abandoned
request resets its stream only. The reaper closes connections idle for `idle_timeout`.
All tasks live in the pool's nursery.
"""

from __future__ import annotations

import trio

from waypoint.errors import HttpProtocolError, UpstreamError
from waypoint.http import H2Client, HttpRequest, Limits
from waypoint.proxy.body import BodyAborted, BodyReader, Signal
from waypoint.proxy.poolbase import (
    BROKEN,
    PUMP_HIGH_WATER,
    READ_SIZE,
    OpenStream,
    PoolConfig,
    PoolCounters,
    PoolKey,
    close_quietly,
)
from waypoint.proxy.response import H2Stream, UpstreamResponse, upstream_error

SEND_STALL = 20.0  # like meshcore.hbone_trio's tunnels: a peer that does not read is gone


class _H2Conn:
    __slots__ = ("codec", "idle_since", "lock", "ready", "scope", "stream", "waiters",
                 "window")

    def __init__(self, stream: trio.abc.Stream, codec: H2Client) -> None:
        self.stream = stream
        self.codec = codec
        self.lock = trio.Lock()
        self.ready = trio.Event()  # the peer's SETTINGS arrived (or the connection ended)
        self.window = Signal()  # fired after every read (WINDOW_UPDATEs may have come)
        self.waiters: dict[int, H2Stream] = {}
        self.scope = trio.CancelScope()
        self.idle_since = trio.current_time()

    async def flush(self) -> None:
        """Write what the codec queued. The write is shielded: its caller (a body pump, a
        request) may be cancelled, and a cut write would lose frames of other streams and
        corrupt the connection; a backend that reads nothing for `SEND_STALL` seconds
        breaks the connection instead (every stream on it fails)."""
        async with self.lock:
            data = self.codec.data_to_send()
            if not data:
                return
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + SEND_STALL
                await self.stream.send_all(data)
            if scope.cancelled_caught:
                self.scope.cancel()  # the reader ends, failing every stream, and closes it
                raise trio.BrokenResourceError(f"HTTP/2 backend did not read for {SEND_STALL}s")


class H2Pool:
    def __init__(self, nursery: trio.Nursery, limits: Limits, config: PoolConfig,
                 counters: PoolCounters) -> None:
        self.nursery = nursery
        self.limits = limits
        self.config = config
        self.counters = counters
        self._conns: dict[PoolKey, list[_H2Conn]] = {}
        self._dial_locks: dict[PoolKey, trio.Lock] = {}
        self._reaper = False

    def pick(self, key: PoolKey) -> _H2Conn | None:
        for conn in self._conns.get(key, ()):
            if conn.codec.can_open:
                return conn
        return None

    async def connection(self, key: PoolKey, open_stream: OpenStream) -> _H2Conn:
        """A connection with room for one more stream. Until the peer's SETTINGS arrive a new
        connection carries only the stream that opened it (its limit is unknown)."""
        while True:
            conn = self.pick(key)
            if conn is None:
                lock = self._dial_locks.setdefault(key, trio.Lock())
                async with lock:
                    conn = self.pick(key) or await self._dial(key, open_stream)
            if conn.codec.settings_received or not conn.codec.open_streams:
                return conn
            await conn.ready.wait()

    async def _dial(self, key: PoolKey, open_stream: OpenStream) -> _H2Conn:
        stream = await open_stream()
        conn = _H2Conn(stream, H2Client(self.limits))
        try:
            await stream.send_all(conn.codec.initiate())
        except BROKEN as exc:
            await close_quietly(stream)
            raise UpstreamError(f"{key[0]}: HTTP/2 connection broke at once: {exc!r}",
                                reset="connect-failure", flags="UF",
                                upstream=key[0]) from exc
        self.counters.opened += 1
        self._conns.setdefault(key, []).append(conn)
        self.nursery.start_soon(self._reader, key, conn)
        if not self._reaper:
            self._reaper = True
            self.nursery.start_soon(self._reap)
        return conn

    async def exchange(self, key: PoolKey, open_stream: OpenStream, request: HttpRequest,
                       reader: BodyReader | None) -> UpstreamResponse:
        host = key[0]
        conn = await self.connection(key, open_stream)
        st = H2Stream()
        sid = conn.codec.send_request(request)
        conn.waiters[sid] = st
        self.counters.h2_streams += 1
        if reader is not None:
            self.nursery.start_soon(self._pump, conn, sid, st, reader)
        else:
            st.pump_done.set()
        try:
            await conn.flush()
            await st.head_event.wait()
            if st.body_error is not None:
                raise st.body_error
        except BROKEN as exc:
            conn.waiters.pop(sid, None)
            raise upstream_error(host, exc) from exc
        except BaseException:
            self.abandon(conn, sid)
            raise
        if st.head is None:
            assert st.error is not None
            raise upstream_error(host, st.error)
        return H2Response(self, conn, sid, st, host)

    async def _pump(self, conn: _H2Conn, sid: int, st: H2Stream, reader: BodyReader) -> None:
        """Copy a streamed request body to stream `sid` while the response comes back;
        waits while more than `PUMP_HIGH_WATER` bytes are queued for the backend's window."""
        codec = conn.codec
        with st.pump:
            try:
                while chunk := await reader.read():
                    codec.send_body(sid, chunk)
                    await conn.flush()
                    while codec.queued(sid) > PUMP_HIGH_WATER and sid in codec.partials:
                        await conn.window.wait()
                codec.end_body(sid, reader.trailers)
                await conn.flush()
            except BodyAborted as exc:
                st.body_error = exc
                st.head_event.set()
                st.more.set()
                self.abandon(conn, sid)
            except BROKEN:
                pass  # the reader fails the stream
            finally:
                st.pump_done.set()

    def abandon(self, conn: _H2Conn, sid: int) -> None:
        """Cancelled or closed early: reset this stream only."""
        st = conn.waiters.get(sid)
        if st is not None:
            st.pump.cancel()
        if conn.waiters.pop(sid, None) is not None:
            conn.codec.reset(sid)
            self.nursery.start_soon(self._flush_quietly, conn)

    async def _flush_quietly(self, conn: _H2Conn) -> None:
        try:
            await conn.flush()
        except BROKEN:
            conn.scope.cancel()

    async def _reader(self, key: PoolKey, conn: _H2Conn) -> None:
        codec = conn.codec
        why = "connection closed"
        try:
            with conn.scope:
                while True:
                    data = bytes(await conn.stream.receive_some(READ_SIZE))
                    for sid, event in codec.receive_data(data):
                        st = conn.waiters.get(sid)
                        if st is not None and st.feed(event):
                            del conn.waiters[sid]
                            st.pump.cancel()  # over (the codec reset a request still open)
                    if codec.settings_received:
                        conn.ready.set()
                    conn.window.fire()
                    if not codec.partials:
                        conn.idle_since = trio.current_time()
                    await conn.flush()
                    if codec.closed or (codec.draining and not codec.partials):
                        break
        except BROKEN as exc:
            why = f"connection broke: {exc!r}"
        finally:
            conns = self._conns.get(key, [])
            if conn in conns:
                conns.remove(conn)
                if not conns:
                    del self._conns[key]
            for sid, st in conn.waiters.items():
                st.feed(HttpProtocolError(f"backend HTTP/2 {why} (stream {sid})", status=502))
            conn.waiters.clear()
            codec.closed = True
            conn.ready.set()
            await close_quietly(conn.stream)

    async def _reap(self) -> None:
        """Close HTTP/2 connections without streams for `idle_timeout`."""
        while True:
            await trio.sleep(self.config.idle_timeout / 4)
            now = trio.current_time()
            for conns in list(self._conns.values()):
                for conn in conns:
                    if (not conn.codec.partials
                            and now - conn.idle_since >= self.config.idle_timeout):
                        self.counters.closed_idle += 1
                        conn.scope.cancel()

    def statistics(self) -> dict[str, dict[str, int]]:
        return {f"{host} {proto}": {"connections": len(conns),
                                    "streams": sum(c.codec.open_streams for c in conns)}
                for (host, proto, _), conns in self._conns.items()}


class H2Response(UpstreamResponse):
    """One stream's body as the connection's reader delivers it; consumed bytes re-open the
    flow-control window (so a slow client slows the backend, nothing piles up here)."""

    def __init__(self, pool: H2Pool, conn: _H2Conn, sid: int, st: H2Stream,
                 host: str) -> None:
        assert st.head is not None
        super().__init__(st.head)
        self._pool, self._conn, self._sid, self._st, self._host = pool, conn, sid, st, host

    async def read(self) -> bytes:
        st = self._st
        while True:
            if st.chunks:
                data = st.chunks.popleft()
                self._conn.codec.ack(self._sid, len(data))
                try:
                    await self._conn.flush()
                except BROKEN as exc:
                    raise upstream_error(self._host, exc) from exc
                return self._took(data)
            if st.ended:
                self.trailers, self.complete = st.trailers, True
                await trio.lowlevel.checkpoint()
                return b""
            if st.body_error is not None:
                raise st.body_error
            if st.error is not None:
                raise upstream_error(self._host, st.error)
            st.more = trio.Event()
            await st.more.wait()

    def ready(self) -> bool:
        st = self._st
        return bool(st.chunks) or st.ended or st.error is not None or st.body_error is not None

    async def aclose(self) -> None:
        self._st.pump.cancel()  # the response is over: the request body is not needed
        if not self.complete:
            self._pool.abandon(self._conn, self._sid)
        await trio.lowlevel.checkpoint()

    async def stop_upload(self) -> None:
        self._st.pump.cancel()
        with trio.CancelScope(shield=True), trio.move_on_after(1):
            await self._st.pump_done.wait()

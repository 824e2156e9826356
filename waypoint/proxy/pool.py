"""Upstream HTTP connection pool: keep-alive HTTP/1.1 and multiplexed HTTP/2 per endpoint.

Who calls it: `waypoint.proxy.upstream.Upstreams.attempt` (one `exchange` per attempt and per
mirror). What it hands to: an `UpstreamResponse` once the response head arrived (its body
streams from the connection; `H1Response` gives the connection back when the body ended), or
an `UpstreamError` (no response head). It opens connections through the `open_stream`
callable it is given (an HBONE tunnel to `<pod IP>:15008`, or TCP for non-mesh pods) and owns
them in its nursery.

Pool key: (endpoint `ip:port`, protocol, expected identity); like Envoy's per-host pools.
* HTTP/1.1: one request at a time per connection. After a complete exchange that h11 says
  can continue (both sides DONE: no `Connection: close`, not HTTP/1.0, not EOF-delimited)
  the connection goes idle (LIFO, at most `max_idle_per_host`, else closed). An idle
  connection has a watcher task reading it: EOF, an error, unexpected bytes or
  `idle_timeout` close it and drop it from the pool. Never reused: after an error, an
  incomplete exchange, a cancelled attempt (timeouts included) or `Connection: close`.
* Stale connections: a *reused* connection that fails before any response byte (the peer
  closed it while idle and we raced the watcher) is retried once on a fresh connection,
  not counted as a retry nor fed to outlier detection, when the request was not written
  (the first send failed, so the peer was gone before any byte reached the app) or the method
  is idempotent (RFC 9110 §9.2.2: GET HEAD OPTIONS TRACE PUT DELETE). Otherwise the error
  goes to the retry policy like any reset.
* A streamed request body (HTTP/1.1) is copied upstream after the head by a `_Pump` task,
  chunk by chunk as the client sends it, while this task reads the response (Envoy's router
  does the same): a backend answering early (413, 401 before the upload ended) is seen at
  once, and one echoing the upload as it reads it does not stall. A response that ends
  before the whole request body was written stops the pump; the rest is never sent and the
  connection is closed (h11 cannot start a new cycle, and the backend may still expect it).
  The client's body breaking off (`BodyAborted`) interrupts the response read with it.
* HTTP/2 is `waypoint.proxy.pool_h2` (multiplexed, one connection per key while it has room).
Invariants: a connection is either idle (in `_idle`, watched) or owned by one exchange
(HTTP/1.1), with at most one pump writing its request body; it is reusable only if that pump
finished (the whole request went out) and the response was read to its end; the pump has
exited before the connection is closed or the body read again (a retry); single trio thread,
so choosing a connection and reserving it has no await in between. Closing the pool (leaving
its nursery) closes every connection.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
from collections.abc import Callable

import trio

from waypoint.errors import HttpProtocolError, UpstreamError
from waypoint.http import BodyChunk, BodyEnd, H1Client, HttpRequest, HttpResponse, Limits
from waypoint.proxy.body import BodyAborted, BodyReader
from waypoint.proxy.pool_h2 import H2Pool
from waypoint.proxy.poolbase import (
    BROKEN,
    IDEMPOTENT,
    READ_SIZE,
    OpenStream,
    PoolConfig,
    PoolCounters,
    PoolKey,
    close_quietly,
)
from waypoint.proxy.response import UpstreamResponse, upstream_error

__all__ = ["PoolConfig", "PoolCounters", "PoolKey", "UpstreamPool"]

log = logging.getLogger("waypoint.pool")


class _Stale(Exception):  # an internal signal, never leaves this module
    def __init__(self, error: UpstreamError, unwritten: bool) -> None:
        super().__init__(str(error))
        self.error = error
        self.unwritten = unwritten


class _Pump:
    """Writes one exchange's streamed request body (in the pool's nursery) while the exchange's
    task reads the response; the reads go through `receive` so that the client's body breaking
    off (`BodyAborted`) interrupts them."""

    def __init__(self, conn: _H1Conn, reader: BodyReader) -> None:
        self.conn, self.reader = conn, reader
        self.scope = trio.CancelScope()  # cancelled when the exchange ends first
        self.done = trio.Event()
        self.finished = False  # the whole body and its end were written
        self.error: BodyAborted | None = None
        self._reading: trio.CancelScope | None = None

    async def run(self) -> None:
        conn, reader = self.conn, self.reader
        try:
            with self.scope:
                while chunk := await reader.read():
                    await conn.stream.send_all(conn.codec.send_body(chunk))
                await conn.stream.send_all(conn.codec.end_body(reader.trailers))
                self.finished = True
        except BodyAborted as exc:
            self.error = exc
            if self._reading is not None:
                self._reading.cancel()
        except (*BROKEN, HttpProtocolError):
            pass  # the backend closed or reset: the response read sees it (or has its answer)
        finally:
            self.done.set()

    async def receive(self) -> bytes:
        """One read of the response; raises `BodyAborted` once the client's body broke off."""
        if self.error is None:
            with trio.CancelScope() as self._reading:
                return bytes(await self.conn.stream.receive_some(READ_SIZE))
            self._reading = None
        assert self.error is not None
        raise self.error

    async def stop(self) -> None:
        """The exchange is over: the rest of the body is not sent; wait for the task to exit
        (bounded, shielded: the caller may itself be cancelled)."""
        self.scope.cancel()
        with trio.CancelScope(shield=True), trio.move_on_after(1):
            await self.done.wait()


class _H1Conn:
    __slots__ = ("codec", "idle_since", "poisoned", "pump", "scope", "stream", "taken",
                 "watch_done")

    def __init__(self, stream: trio.abc.Stream, codec: H1Client) -> None:
        self.stream = stream
        self.codec = codec
        self.idle_since = 0.0
        self.scope: trio.CancelScope | None = None
        self.watch_done: trio.Event | None = None
        self.taken = True
        self.poisoned = False  # the watcher saw EOF/data/error after the connection was taken
        self.pump: _Pump | None = None  # the current exchange's request body writer

    async def receive(self) -> bytes:
        if self.pump is not None:
            return await self.pump.receive()
        return bytes(await self.stream.receive_some(READ_SIZE))


class UpstreamPool:
    def __init__(self, nursery: trio.Nursery, limits: Limits,
                 config: PoolConfig | None = None) -> None:
        self.nursery = nursery
        self.limits = limits
        self.config = config or PoolConfig()
        self.counters = PoolCounters()
        self._idle: dict[PoolKey, list[_H1Conn]] = {}
        self._busy: collections.Counter[PoolKey] = collections.Counter()
        self.h2 = H2Pool(nursery, limits, self.config, self.counters)

    async def exchange(self, key: PoolKey, open_stream: OpenStream, request: HttpRequest,
                       body: Callable[[], BodyReader] | None = None) -> UpstreamResponse:
        """Send `request` on a pooled connection for `key` (HTTP/2 when key[1] is "h2") and
        return the response once its head arrived; its body streams from it (the caller must
        read it to the end or `aclose()` it). A `streamed` request's body comes from a
        `body()` reader, copied upstream as it arrives by a pump task, concurrently with the
        response (an early answer is returned at once; bidirectional streams work). Raises
        `UpstreamError` (no response head; connect failures come from `open_stream`) or
        `BodyAborted` (the client's body broke off)."""
        reader = body() if body is not None and request.streamed else None
        if key[1] == "h2":
            return await self.h2.exchange(key, open_stream, request, reader)
        conn = self._take_idle(key)
        if conn is not None:
            try:
                return await self._h1_exchange(key, conn, request, reader, reused=True)
            except _Stale as stale:
                if not (stale.unwritten or request.method in IDEMPOTENT):
                    raise stale.error from None
                if reader is not None:
                    assert body is not None
                    reader = body()  # from the start again, if it was kept
                    if not reader.valid:
                        raise stale.error from None
                self.counters.stale_retries += 1
                log.debug("stale connection to %s: %s; retrying on a fresh one", key[0],
                          stale.error)
        conn = _H1Conn(await open_stream(), H1Client(self.limits))
        self.counters.opened += 1
        try:
            return await self._h1_exchange(key, conn, request, reader, reused=False)
        except _Stale as stale:  # cannot happen on a fresh connection, but be exact
            raise stale.error from None

    # ---- HTTP/1.1 ------------------------------------------------------------------------
    def _take_idle(self, key: PoolKey) -> _H1Conn | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        conn = idle.pop()
        if not idle:
            del self._idle[key]
        conn.taken = True
        if conn.scope is not None:
            conn.scope.cancel()
        self.counters.reused += 1
        return conn

    async def _h1_exchange(self, key: PoolKey, conn: _H1Conn, request: HttpRequest,
                           reader: BodyReader | None, *, reused: bool) -> UpstreamResponse:
        host = key[0]
        owned = False
        self._busy[key] += 1
        try:
            data = conn.codec.start(request)
            try:
                await conn.stream.send_all(data)
            except BROKEN as exc:
                err = upstream_error(host, exc)
                if reused:
                    raise _Stale(err, unwritten=True) from exc
                raise err from exc
            if conn.watch_done is not None:
                if not conn.watch_done.is_set():  # (a set Event's wait() still yields)
                    await conn.watch_done.wait()  # the watcher stopped reading
                if conn.poisoned:
                    raise _Stale(UpstreamError(f"{host}: idle connection closed by the peer",
                                               reset="reset", flags="UC", upstream=host),
                                 unwritten=False)
            if reader is not None:  # a streamed body: written while the response is read
                conn.pump = _Pump(conn, reader)
                self.nursery.start_soon(conn.pump.run)
            events: collections.deque[HttpResponse | BodyChunk | BodyEnd] = collections.deque()
            while not events:
                try:
                    events.extend(conn.codec.receive_data(await conn.receive()))
                except (*BROKEN, HttpProtocolError) as exc:
                    err = upstream_error(host, exc)
                    if reused and not conn.codec.response_started:
                        raise _Stale(err, unwritten=False) from exc
                    raise err from exc
            head = events.popleft()
            assert isinstance(head, HttpResponse)
            owned = True
            return H1Response(self, key, conn, head, events)
        finally:
            if not owned:
                await self._h1_done(key, conn, reusable=False)

    async def _h1_done(self, key: PoolKey, conn: _H1Conn, *, reusable: bool) -> None:
        """The exchange on `conn` is over: keep it idle if reusable, else close it. A request
        body still being written (the response ended first) is cut off: not reusable."""
        self._busy[key] -= 1
        if not self._busy[key]:
            del self._busy[key]
        pump, conn.pump = conn.pump, None
        if pump is not None:
            reusable = reusable and pump.finished
            if not pump.finished and pump.error is None:
                self.counters.cut_uploads += 1
            if not pump.done.is_set():
                await pump.stop()
        if reusable:
            self._release(key, conn)
        else:
            await close_quietly(conn.stream)

    def _release(self, key: PoolKey, conn: _H1Conn) -> None:
        idle = self._idle.setdefault(key, [])
        if len(idle) >= self.config.max_idle_per_host:
            self.nursery.start_soon(close_quietly, conn.stream)
            return
        conn.taken = False
        conn.poisoned = False
        conn.idle_since = trio.current_time()
        conn.scope = trio.CancelScope(deadline=conn.idle_since + self.config.idle_timeout)
        conn.watch_done = trio.Event()
        idle.append(conn)
        self.nursery.start_soon(self._watch, key, conn, conn.scope, conn.watch_done)

    async def _watch(self, key: PoolKey, conn: _H1Conn, scope: trio.CancelScope,
                     done: trio.Event) -> None:
        """Read an idle connection: anything but being taken (cancel) ends it."""
        try:
            with scope:
                with contextlib.suppress(*BROKEN):
                    await conn.stream.receive_some(1)  # EOF, stray bytes: unusable either way
                if conn.taken:
                    conn.poisoned = True
                    return
                why = "closed by the peer or sent stray bytes"
            if conn.taken:
                return  # cancelled because an exchange took it: the normal case
            if scope.cancelled_caught:
                why = f"idle for {self.config.idle_timeout}s"
            idle = self._idle.get(key, [])
            if conn in idle:
                idle.remove(conn)
                if not idle:
                    del self._idle[key]
            self.counters.closed_idle += 1
            log.debug("idle connection to %s %s: closed", key[0], why)
            await close_quietly(conn.stream)
        finally:
            done.set()

    # ---- HTTP/2 --------------------------------------------------------------------------
    # ---- admin ---------------------------------------------------------------------------
    def statistics(self) -> dict[str, object]:
        hosts: dict[str, dict[str, int]] = {}
        for (host, proto, _), idle in self._idle.items():
            hosts.setdefault(f"{host} {proto}", {})["idle"] = len(idle)
        for (host, proto, _), n in self._busy.items():
            hosts.setdefault(f"{host} {proto}", {})["busy"] = n
        hosts.update(self.h2.statistics())
        return {**dataclasses.asdict(self.counters), "hosts": dict(sorted(hosts.items()))}


class H1Response(UpstreamResponse):
    """Streams the body off the connection; at its end the connection returns to the pool."""

    def __init__(self, pool: UpstreamPool, key: PoolKey, conn: _H1Conn, head: HttpResponse,
                 events: collections.deque[HttpResponse | BodyChunk | BodyEnd]) -> None:
        super().__init__(head)
        self._pool, self._key, self._conn, self._events = pool, key, conn, events
        self._done = False

    async def read(self) -> bytes:
        if self.complete:
            await trio.lowlevel.checkpoint()
            return b""
        while not self._events:
            try:
                self._events.extend(self._conn.codec.receive_data(await self._conn.receive()))
            except (*BROKEN, HttpProtocolError) as exc:
                await self._finish(reusable=False)
                raise upstream_error(self._key[0], exc) from exc
            except BodyAborted:
                await self._finish(reusable=False)
                raise
        event = self._events.popleft()
        if isinstance(event, BodyChunk):
            return self._took(event.data)
        assert isinstance(event, BodyEnd)
        self.trailers, self.complete = event.trailers, True
        await self._finish(reusable=self._conn.codec.reusable and not self._events)
        return b""

    def ready(self) -> bool:
        return self.complete or bool(self._events)

    async def stop_upload(self) -> None:
        """Stop writing the request body (the connection will not be reused)."""
        pump = self._conn.pump
        if pump is not None and not pump.done.is_set():
            await pump.stop()
        else:
            await trio.lowlevel.checkpoint()

    async def _finish(self, *, reusable: bool) -> None:
        if not self._done:
            self._done = True
            await self._pool._h1_done(self._key, self._conn, reusable=reusable)

    async def aclose(self) -> None:
        await self._finish(reusable=False)



"""Serve what is inside one HBONE tunnel: HTTP/1.1, HTTP/2 (gRPC included) or plain TCP.

Who calls it: `waypoint.proxy.server` runs `serve_tunnel(stream, ctx)` for every admitted
CONNECT (the stream is the HBONE tunnel itself). It hands each complete request to
`RequestHandler.handle` with a `send` callback that writes the answer back.

Protocol: the Service port's `app_protocol` decides when it says HTTP or TCP; otherwise the
first bytes are sniffed (`waypoint.http.sniff`: the HTTP/2 preface, an HTTP/1 method token,
else TCP; a client that sends nothing for `sniff_timeout` is treated as TCP, for
server-first protocols).
Fault isolation: a malformed HTTP/1.1 request gets its 400/431/413 and this tunnel closes; an
HTTP/2 connection error sends GOAWAY and closes this tunnel; a stream error resets that stream
only. Nothing here touches other tunnels. HTTP/1.1 keeps the tunnel open between requests
(keep-alive, one request at a time); HTTP/2 runs requests concurrently, one task each.
A request body not read to its end (an early response): HTTP/1.1 answers `connection: close`
and closes the tunnel after the response; HTTP/2 resets the stream (NO_ERROR) and returns the
unread DATA's window to the connection. Body reads re-open the client's window at once and
leave the WINDOW_UPDATE to a task of the tunnel; HTTP/2 writes are shielded (their callers
may be cancelled: a cut write would corrupt the connection), bounded by `SEND_STALL`.
TCP: L4 authorization (the L7 policies evaluated without HTTP attributes), then a plain relay
to an endpoint chosen like an HTTP attempt's (Istio's tcp_proxy on a waypoint).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable

import h2.errors
import trio

from meshcore.hbone_trio import relay
from meshcore.wds import Endpoint
from meshcore.wds.workload import AppProtocol
from waypoint.errors import UpstreamError
from waypoint.http import (
    BodyChunk,
    BodyEnd,
    H1Server,
    H2Server,
    HttpRequest,
    HttpResponse,
    Limits,
    RequestFailed,
    sniff,
)
from waypoint.http.messages import Headers
from waypoint.proxy.body import BodyAborted, H1Body, QueueBody, ReplayBody, Signal
from waypoint.proxy.context import TunnelContext
from waypoint.proxy.handler import RequestHandler
from waypoint.proxy.upstream import host_key

log = logging.getLogger("waypoint.downstream")
READ_SIZE = 64 * 1024
SEND_STALL = 20.0  # like meshcore.hbone_trio's tunnels: a peer that does not read is gone


class _Replay(trio.abc.Stream):
    """A stream that first returns already-read bytes (the sniffed prefix), then the rest."""

    def __init__(self, inner: trio.abc.Stream, first: bytes) -> None:
        self.inner = inner
        self.first = first

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self.first:
            data, self.first = self.first, b""
            await trio.lowlevel.checkpoint()
            return data
        return await self.inner.receive_some(max_bytes)

    async def send_eof(self) -> None:
        send_eof = getattr(self.inner, "send_eof", None)
        if send_eof is not None:
            await send_eof()

    async def aclose(self) -> None:
        await self.inner.aclose()


class _H1Writer:
    """Writes one response on an HTTP/1.1 connection (the handler's `ResponseWriter`)."""

    def __init__(self, stream: trio.abc.Stream, server: H1Server) -> None:
        self.stream, self.server = stream, server
        self.aborted = False
        self.pending = bytearray()

    async def whole(self, response: HttpResponse) -> None:
        await self.stream.send_all(self.server.send_response(response))

    async def head(self, response: HttpResponse, *, flush: bool = True) -> None:
        await self._write(self.server.start_response(response), flush)

    async def data(self, data: bytes, *, flush: bool = True) -> None:
        await self._write(self.server.send_data(data), flush)

    async def end(self, trailers: Headers) -> None:
        await self._write(self.server.end_response(trailers), True)

    async def _write(self, out: bytes, flush: bool) -> None:
        """`flush=False`: more is ready at once, so keep it for one write (one TLS record
        and one syscall per response instead of one per part)."""
        self.pending += out
        if flush and self.pending:
            out, self.pending = bytes(self.pending), bytearray()
            await self.stream.send_all(out)

    async def abort(self) -> None:
        """The body broke off: the client must see an incomplete response, so close."""
        self.aborted = True
        if self.pending:
            out, self.pending = bytes(self.pending), bytearray()
            await self.stream.send_all(out)


class _H2Writer:
    """Writes one response on an HTTP/2 stream; body chunks wait while more than
    `HIGH_WATER` bytes are queued for the client's flow-control window (back-pressure)."""

    HIGH_WATER = 64 * 1024

    def __init__(self, server: H2Server, stream_id: int, flush: Callable[[], Awaitable[None]],
                 window: Signal) -> None:
        self.server, self.stream_id, self.flush, self.window = server, stream_id, flush, window

    async def whole(self, response: HttpResponse) -> None:
        self.server.send_response(self.stream_id, response)
        await self.flush()

    async def head(self, response: HttpResponse, *, flush: bool = True) -> None:
        self.server.start_response(self.stream_id, response)
        if flush:
            await self.flush()

    async def data(self, data: bytes, *, flush: bool = True) -> None:
        self.server.send_data(self.stream_id, data)
        if not flush:  # more is ready at once: one write for all of it
            return
        await self.flush()
        while self.server.queued(self.stream_id) > self.HIGH_WATER:
            await self.window.wait()
            if self.server.closed:
                raise trio.BrokenResourceError("the HTTP/2 connection closed")

    async def end(self, trailers: Headers) -> None:
        self.server.end_response(self.stream_id, trailers)
        await self.flush()

    async def abort(self) -> None:
        self.server.reset(self.stream_id)
        await self.flush()


class Downstream:
    def __init__(self, handler: RequestHandler, limits: Limits | None = None,
                 sniff_timeout: float = 5.0) -> None:
        self.handler = handler
        self.limits = limits or Limits()
        self.sniff_timeout = sniff_timeout

    def declared_protocol(self, ctx: TunnelContext) -> str | None:
        """"tcp" / "http" when the Service port says so, None when it must be sniffed."""
        if ctx.service is None:
            return None
        port = ctx.service.port(ctx.port)
        if port is None:
            return None
        if port.app_protocol in (AppProtocol.TCP, AppProtocol.TLS):
            return "tcp"
        if port.app_protocol in (AppProtocol.HTTP11, AppProtocol.HTTP2, AppProtocol.GRPC):
            return "http"
        return None

    async def serve_tunnel(self, stream: trio.abc.HalfCloseableStream,
                           ctx: TunnelContext) -> None:
        try:
            kind, first = await self._sniff(stream, ctx)
            if kind == "h2":
                await self._serve_h2(stream, ctx, first)
            elif kind == "http1":
                await self._serve_h1(stream, ctx, first)
            elif kind == "tcp":
                await self._serve_tcp(stream, ctx, first)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            log.debug("tunnel %s from %s ended: %r", ctx.authority, ctx.peer_identity, exc)
        except Exception:  # a bug in one tunnel must not take the waypoint down
            log.exception("tunnel %s from %s failed", ctx.authority, ctx.peer_identity)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await trio.aclose_forcefully(stream)

    async def _sniff(self, stream: trio.abc.Stream, ctx: TunnelContext) -> tuple[str, bytes]:
        declared = self.declared_protocol(ctx)
        if declared == "tcp":
            return "tcp", b""
        first = b""
        with trio.move_on_after(self.sniff_timeout if declared is None else float("inf")):
            while True:
                data = await stream.receive_some(READ_SIZE)
                if not data:
                    return ("closed" if not first else (sniff(first) or "http1")), first
                first += data
                kind = sniff(first)
                if kind is not None:
                    if kind == "tcp" and declared == "http":
                        kind = "http1"  # let h11 answer 400
                    return kind, first
        return "tcp", first

    # ---- HTTP/1.1 ---------------------------------------------------------------------
    async def _serve_h1(self, stream: trio.abc.Stream, ctx: TunnelContext,
                        first: bytes) -> None:
        server = H1Server(self.limits)
        pending: bytes | None = first
        while True:
            outputs = server.receive_data(pending)
            pending = None
            for i, out in enumerate(outputs):
                if isinstance(out, RequestFailed):
                    log.info("tunnel %s from %s: %s", ctx.authority, ctx.peer_identity,
                             out.reason)
                    await stream.send_all(server.send_error(out.status or 400, out.reason))
                    return
                assert isinstance(out, HttpRequest)
                body = None
                if out.streamed:  # the rest of the body is read from the tunnel on demand
                    source = H1Body(stream, server)
                    source.queue.extend(e for e in outputs[i + 1:]
                                        if isinstance(e, BodyChunk | BodyEnd | RequestFailed))
                    body = ReplayBody(source)
                writer = _H1Writer(stream, server)
                await self.handler.handle(ctx, out, writer, body)
                # `Connection: close`, HTTP/1.0, a request body not read to its end (h11
                # knows) or a response body that broke off: close.
                if writer.aborted or not server.keep_alive:
                    return
                pending = None  # more requests may already be buffered in h11
                break
            else:
                if server.failed:
                    return
                data = await stream.receive_some(READ_SIZE)
                pending = bytes(data)
                if not data:
                    server.receive_data(b"")
                    return

    # ---- HTTP/2 -----------------------------------------------------------------------
    async def _serve_h2(self, stream: trio.abc.Stream, ctx: TunnelContext,
                        first: bytes) -> None:
        server = H2Server(self.limits)
        lock = trio.Lock()

        async def flush() -> None:
            """Write what h2 queued, shielded: the caller (a request task) may be cancelled
            (timeouts, resets) and a cut write would corrupt the connection; a client that
            reads nothing for `SEND_STALL` seconds closes the tunnel instead."""
            async with lock:
                data = server.data_to_send()
                if not data:
                    return
                with trio.CancelScope(shield=True) as scope:
                    scope.deadline = trio.current_time() + SEND_STALL
                    await stream.send_all(data)
                if scope.cancelled_caught:
                    nursery.cancel_scope.cancel()
                    raise trio.BrokenResourceError(f"client did not read for {SEND_STALL}s")

        ack_flush_pending = False

        def ack(stream_id: int, n: int) -> None:
            """A streamed body was read: re-open the client's window now, send it from a task
            of its own (the reader may be cancelled, a cut write would corrupt the
            connection). One pending flush at a time carries every ack made before it."""
            nonlocal ack_flush_pending
            server.ack(stream_id, n)
            if not ack_flush_pending:
                ack_flush_pending = True
                nursery.start_soon(ack_flush)

        async def ack_flush() -> None:
            nonlocal ack_flush_pending
            ack_flush_pending = False
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await flush()

        async def one(req: HttpRequest, cancel: trio.CancelScope) -> None:
            sid = req.stream_id
            body = ReplayBody(bodies[sid]) if sid in bodies else None
            with cancel, contextlib.suppress(trio.BrokenResourceError,
                                             trio.ClosedResourceError):
                await self.handler.handle(ctx, req, _H2Writer(server, sid, flush, window),
                                          body)
                if sid in bodies and not bodies[sid].ended:  # answered before the body
                    server.reset(sid, h2.errors.ErrorCodes.NO_ERROR)  # ended: stop sending
                    await flush()
            scopes.pop(sid, None)
            unread = bodies.pop(sid, None)
            if unread is not None and unread.chunks:  # never read: give the connection
                server.ack(sid, sum(map(len, unread.chunks)))  # window back
                unread.chunks.clear()
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await flush()

        await stream.send_all(server.initiate())
        scopes: dict[int, trio.CancelScope] = {}
        bodies: dict[int, QueueBody] = {}
        window = Signal()
        async with trio.open_nursery() as nursery:
            data = first
            while True:
                for out in server.receive_data(data):
                    if isinstance(out, HttpRequest):
                        scopes[out.stream_id] = scope = trio.CancelScope()
                        if out.streamed:  # before its chunks (maybe in this same batch)
                            bodies[out.stream_id] = QueueBody(
                                functools.partial(ack, out.stream_id))
                        nursery.start_soon(one, out, scope)
                    elif isinstance(out, BodyChunk | BodyEnd):
                        if out.stream_id in bodies:
                            bodies[out.stream_id].feed(out)
                        elif isinstance(out, BodyChunk):
                            server.ack(out.stream_id, len(out.data))  # nobody reads it
                    elif isinstance(out, RequestFailed):
                        log.info("tunnel %s from %s: %s", ctx.authority, ctx.peer_identity,
                                 out.reason)
                        if out.stream_id in bodies:  # a streamed body over the limit
                            bodies[out.stream_id].feed(BodyAborted(out.reason, out.status))
                        elif out.stream_id is not None and out.status is not None:
                            server.send_response(out.stream_id,
                                                 HttpResponse.local(out.status, out.reason))
                    else:  # StreamCancelled
                        if out.stream_id in bodies:
                            bodies[out.stream_id].feed(BodyAborted("the client reset it"))
                        if out.stream_id in scopes:
                            scopes.pop(out.stream_id).cancel()
                await flush()
                window.fire()  # the client may have opened flow-control windows
                if server.closed:
                    nursery.cancel_scope.cancel()
                    return
                data = bytes(await stream.receive_some(READ_SIZE))
                if not data:
                    for body in bodies.values():
                        if not body.ended:
                            body.feed(BodyAborted("the client closed the tunnel"))
                    break  # the client is done sending; let in-flight requests finish

    # ---- TCP --------------------------------------------------------------------------
    async def _serve_tcp(self, stream: trio.abc.HalfCloseableStream, ctx: TunnelContext,
                         first: bytes) -> None:
        state = self.handler.state()
        decision = self.handler.authorize(ctx, None, state)
        if not decision.allowed:
            log.info("TCP to %s from %s denied: %s", ctx.authority, ctx.peer_identity, decision)
            return
        upstreams = self.handler.upstreams
        if ctx.service is not None:
            endpoint = upstreams.choose(state.wds, ctx.service, ctx.port)
        else:
            assert ctx.workload is not None
            endpoint = Endpoint(ctx.workload, ctx.dest_ip, ctx.port)
        if endpoint is None:
            log.info("TCP to %s: no healthy upstream", ctx.authority)
            return
        try:
            upstream = await upstreams.open_stream(endpoint, host_key(endpoint))
        except UpstreamError as exc:
            log.info("TCP to %s: %s", ctx.authority, exc)
            return
        if first:
            await upstream.send_all(first)
        result = await relay(stream, upstream)
        log.debug("TCP %s via %s: %s", ctx.authority, host_key(endpoint), result)

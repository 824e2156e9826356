"""Drive one HBONE connection (TLS + the sans-IO core) with trio; tunnels as trio streams.

Who calls it: `client.dial_hbone` and `server.serve_hbone` build an `HboneTrioConnection` over a
handshaken `TlsStream` and run `run()` in a nursery they own; the pool (`pool.py`) opens client
tunnels with `open_tunnel_nowait`; the server receives `TunnelStream`s (`tunnel.py`) through
`on_request`. Tunnels are handed to `relay.relay`.

Tasks per connection (all inside `run()`): a reader that reads TLS, feeds `receive_data`, and
dispatches events to per-stream `TunnelStream`s; a writer that flushes `data_to_send()` whenever
the reader queued control frames; a PING keepalive. Request handlers (server) run in the same
nursery, so they end with the connection.

Invariants:
- Only the reader calls `receive_data`; every `data_to_send()` batch is written under one lock
  (`flush`), so frames leave in queue order.
- `TunnelStream.send_all` returns only after the bytes it queued were written to TLS, because
  the core's frames alias the caller's buffer (zero copy).
- The reader never waits on socket writes (it only wakes the writer): a peer that stops reading
  cannot stall our reads, and flow control bounds what we buffer.
- When the connection dies every TunnelStream sees BrokenResourceError; nothing hangs.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence

import trio

from meshcore import hbone
from meshcore.hbone import ErrorCode, HboneConnection, HboneSettings, Role
from meshcore.hbone_trio.errors import ConnectionLostError
from meshcore.hbone_trio.tls_stream import TlsStream
from meshcore.hbone_trio.tunnel import TunnelStream
from meshcore.identity import SpiffeId

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class KeepaliveConfig:
    """PING keepalive (ztunnel: first after 10 s, every 10 s, drop after 20 s without PONG)."""

    interval: float = 10.0
    timeout: float = 20.0


@dataclasses.dataclass(frozen=True)
class ConnectionStatistics:
    role: str
    peer_identity: SpiffeId | None
    open_tunnels: int
    goaway_received: bool
    closed: bool
    core: hbone.HboneStatistics


class HboneTrioConnection:
    """One live HBONE connection; see the module docstring."""

    def __init__(
        self,
        tls: TlsStream,
        role: Role,
        *,
        settings: HboneSettings | None = None,
        peer_identity: SpiffeId | None = None,
        keepalive: KeepaliveConfig | None = KeepaliveConfig(),
        on_request: Callable[[TunnelStream, hbone.RequestReceived], None] | None = None,
        label: str = "",
    ) -> None:
        self.tls = tls
        self.role = role
        self.peer_identity = peer_identity
        self.label = label
        self.core = HboneConnection(role, settings or HboneSettings())
        self._keepalive = keepalive
        self._on_request = on_request
        self.tunnels: dict[int, TunnelStream] = {}
        self._send_lock = trio.Lock()
        self._wake_writer = trio.Event()
        self._window_lot = trio.lowlevel.ParkingLot()
        self._ping_acked = trio.Event()
        self._closed = False
        self._closed_event = trio.Event()
        self._failure: BaseException | None = None
        self._idle = trio.Event()
        self._idle.set()
        self._busy = trio.Event()
        self.goaway_received = False
        self._nursery: trio.Nursery | None = None
        self.core.initiate()

    # ----------------------------------------------------------------- lifecycle

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve the connection until it ends; closes the TLS stream on the way out."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._writer)
                if self._keepalive is not None:
                    nursery.start_soon(self._keepalive_loop)
                task_status.started()
                try:
                    await self.flush()
                    await self._reader()
                except (
                    trio.BrokenResourceError,
                    trio.ClosedResourceError,
                    hbone.HboneError,
                ) as exc:
                    self._fail(exc)
                nursery.cancel_scope.cancel()
        finally:
            self._fail(ConnectionLostError(f"HBONE connection {self.label} ended"))
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await self.tls.aclose()

    @property
    def usable(self) -> bool:
        """True if a new tunnel may be opened here (live, no GOAWAY, under the peer's limit)."""
        return not self._closed and self.core.can_open_stream

    @property
    def closed(self) -> bool:
        return self._closed

    def start_soon(self, fn: Callable[..., object], *args: object) -> None:
        """Run a task in the connection's nursery (request handlers; they end with it)."""
        assert self._nursery is not None, "run() has not started"
        self._nursery.start_soon(fn, *args)  # type: ignore[arg-type]

    async def aclose(self, error_code: ErrorCode = ErrorCode.NO_ERROR) -> None:
        """GOAWAY then close: open tunnels break. For a graceful drain use `drain()` first."""
        if not self._closed:
            try:
                self.core.close(error_code)
                with trio.move_on_after(1):
                    await self.flush()
            except (hbone.HboneError, trio.BrokenResourceError, trio.ClosedResourceError):
                pass
        self._fail(ConnectionLostError(f"HBONE connection {self.label} was closed"))
        await self.tls.aclose()

    async def drain(self) -> None:
        """Send GOAWAY (no new streams) and wait until the open tunnels finish."""
        if not self._closed and not self.core.statistics().goaway_sent:
            self.core.close(ErrorCode.NO_ERROR)
            self._wake_writer.set()
        await self.wait_idle()

    async def wait_idle(self) -> None:
        """Return when no tunnel is open on this connection (or it is closed)."""
        await self._idle.wait()

    async def wait_busy(self) -> None:
        await self._busy.wait()

    async def wait_closed(self) -> None:
        """Return once the connection has ended (for any reason)."""
        await self._closed_event.wait()

    def _fail(self, exc: BaseException) -> None:
        if self._closed:
            return
        self._closed = True
        self._closed_event.set()
        self._failure = exc
        for tunnel in list(self.tunnels.values()):
            tunnel._on_connection_lost(exc)
        self.tunnels.clear()
        self._window_lot.unpark_all()
        self._wake_writer.set()
        self._idle.set()
        self._busy.set()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    def statistics(self) -> ConnectionStatistics:
        return ConnectionStatistics(
            role=self.role.name.lower(),
            peer_identity=self.peer_identity,
            open_tunnels=len(self.tunnels),
            goaway_received=self.goaway_received,
            closed=self._closed,
            core=self.core.statistics(),
        )

    # ----------------------------------------------------------------- client side

    def open_tunnel_nowait(
        self, authority: str, headers: Sequence[tuple[str, str]] = ()
    ) -> TunnelStream:
        """Queue a CONNECT; the returned stream's `wait_response()` gives the status.

        Raises hbone.TooManyStreamsError if the connection cannot take another stream.
        """
        self._check_alive()
        sid = self.core.open_connect(authority, headers)
        tunnel = TunnelStream(self, sid)
        self._add(tunnel)
        self._wake_writer.set()
        return tunnel

    def _add(self, tunnel: TunnelStream) -> None:
        self.tunnels[tunnel.stream_id] = tunnel
        if self._idle.is_set():
            self._idle = trio.Event()
            self._busy.set()

    def _forget(self, tunnel: TunnelStream) -> None:
        if self.tunnels.pop(tunnel.stream_id, None) is not None and not self.tunnels:
            self._idle.set()
            self._busy = trio.Event()
            if self.goaway_received:
                self._fail(ConnectionLostError(f"HBONE peer {self.label} drained after GOAWAY"))

    def _check_alive(self) -> None:
        if self._closed:
            raise ConnectionLostError(
                f"HBONE connection {self.label} is closed: {self._failure!r}"
            ) from self._failure

    # ----------------------------------------------------------------- I/O tasks

    async def flush(self, *, checkpoint: bool = True) -> None:
        """Write everything the core has queued (one TLS batch per lock holder).

        With `checkpoint=False` a flush that never had to wait has no schedule point (for
        callers that reach one right after; see `TlsStream.send_many`).
        """
        lock = self._send_lock
        try:
            lock.acquire_nowait()  # uncontended: no extra scheduler round
        except trio.WouldBlock:
            await lock.acquire()
        try:
            if self._closed:
                raise ConnectionLostError(f"HBONE connection {self.label} is closed")
            bufs = self.core.data_to_send()
            if bufs or self.tls.has_unsent:
                try:
                    await self.tls.send_many(bufs, checkpoint=checkpoint)
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    self._fail(exc)
                    raise ConnectionLostError(
                        f"HBONE connection {self.label} failed while sending: {exc!r}"
                    ) from exc
        finally:
            lock.release()

    def try_flush_nowait(self) -> bool:
        """Write what the core queued without waiting, if the TLS stream is idle.

        True if everything reached the socket. False if it could not start (another task is
        sending) or the socket was full: then the rest is encrypted but unsent and a later
        `flush()` writes it first. Either way the core's buffers are no longer referenced.
        """
        if self._closed or self._send_lock.locked() or not self.tls.can_send_nowait:
            return False
        bufs = self.core.data_to_send()
        if not bufs and not self.tls.has_unsent:
            return True
        try:
            return self.tls.send_many_nowait(bufs)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._fail(exc)
            raise ConnectionLostError(
                f"HBONE connection {self.label} failed while sending: {exc!r}"
            ) from exc

    async def _writer(self) -> None:
        while not self._closed:
            await self._wake_writer.wait()
            self._wake_writer = trio.Event()
            if self._closed:
                return
            try:
                await self.flush()
            except ConnectionLostError:
                return

    async def _reader(self) -> None:
        core = self.core
        while True:
            data = await self.tls.receive_some()
            if not data:
                raise ConnectionLostError(f"HBONE peer {self.label} closed the connection")
            try:
                events = core.receive_data(memoryview(data))
            except hbone.RemoteProtocolError as exc:
                log.info("HBONE peer %s broke HTTP/2: %s", self.label, exc)
                for event in exc.events:
                    self._dispatch(event)  # type: ignore[arg-type]
                with trio.move_on_after(1):
                    await self.flush()
                raise
            for event in events:
                self._dispatch(event)
            # Control frames (WINDOW_UPDATE, PING ack, SETTINGS ack): written right here if
            # the socket takes them without waiting, else by the writer task.
            if core.bytes_to_send() and not self.try_flush_nowait():
                self._wake_writer.set()

    def _dispatch(self, event: hbone.Event) -> None:
        if isinstance(event, hbone.DataReceived):
            tunnel = self.tunnels.get(event.stream_id)
            if tunnel is not None:
                tunnel._on_data(event.data)
            elif event.flow_controlled_length:
                self.core.acknowledge_received_data(event.stream_id, event.flow_controlled_length)
        elif isinstance(event, hbone.WindowUpdated | hbone.RemoteSettingsChanged):
            self._window_lot.unpark_all()
        elif isinstance(event, hbone.StreamEnded):
            tunnel = self.tunnels.get(event.stream_id)
            if tunnel is not None:
                tunnel._on_eof()
        elif isinstance(event, hbone.StreamReset):
            tunnel = self.tunnels.get(event.stream_id)
            if tunnel is not None:
                tunnel._on_reset(event)
        elif isinstance(event, hbone.ResponseReceived):
            tunnel = self.tunnels.get(event.stream_id)
            if tunnel is not None:
                tunnel._on_response(event)
        elif isinstance(event, hbone.RequestReceived):
            tunnel = TunnelStream(self, event.stream_id)
            self._add(tunnel)
            if self._on_request is None:
                self.core.reset_stream(event.stream_id, ErrorCode.REFUSED_STREAM)
                self._forget(tunnel)
            else:
                self._on_request(tunnel, event)
        elif isinstance(event, hbone.PingAcknowledged):
            self._ping_acked.set()
        elif isinstance(event, hbone.ConnectionTerminated):
            self.goaway_received = True
            if event.error_code != ErrorCode.NO_ERROR:
                log.info("HBONE peer %s sent GOAWAY %s", self.label, event.error_code)
            if not self.tunnels:
                raise ConnectionLostError(f"HBONE peer {self.label} sent GOAWAY")

    async def _keepalive_loop(self) -> None:
        assert self._keepalive is not None
        while True:
            await trio.sleep(self._keepalive.interval)
            self._ping_acked = trio.Event()
            try:
                self.core.ping()
            except hbone.HboneError:
                return
            self._wake_writer.set()
            with trio.move_on_after(self._keepalive.timeout):
                await self._ping_acked.wait()
            if not self._ping_acked.is_set():
                log.info("HBONE peer %s missed PING for %ss", self.label, self._keepalive.timeout)
                self._fail(
                    ConnectionLostError(
                        f"HBONE peer {self.label} did not answer PING within"
                        f" {self._keepalive.timeout}s"
                    )
                )
                return

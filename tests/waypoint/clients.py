"""HTTP clients for the waypoint tests: h11 (keep-alive) and h2 (multiplexed) over a stream."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import h2.config
import h2.connection
import h2.events
import h11
import trio

Response = tuple[int, dict[str, str], bytes]


async def h1_exchange(stream: trio.abc.Stream,
                      requests: Sequence[tuple[str, str, str, Sequence[tuple[str, str]], bytes]],
                      ) -> list[Response]:
    """Send requests one after another on one HTTP/1.1 connection (keep-alive) with h11."""
    conn = h11.Connection(h11.CLIENT)
    out: list[Response] = []
    for method, path, authority, headers, body in requests:
        hs = [("host", authority), *headers]
        if body:
            hs.append(("content-length", str(len(body))))
        data = conn.send(h11.Request(method=method, target=path, headers=hs))
        data += conn.send(h11.Data(data=body)) if body else b""
        await stream.send_all(data + conn.send(h11.EndOfMessage()))
        status, rh, rb = 0, {}, b""
        while True:
            ev = conn.next_event()
            if ev is h11.NEED_DATA:
                conn.receive_data(bytes(await stream.receive_some(65536)))
                continue
            if isinstance(ev, h11.Response):
                status = ev.status_code
                rh = {n.decode(): v.decode() for n, v in ev.headers}
            elif isinstance(ev, h11.Data):
                rb += ev.data
            elif isinstance(ev, h11.EndOfMessage):
                break
            elif isinstance(ev, h11.ConnectionClosed):
                raise AssertionError("connection closed before the response ended")
        out.append((status, rh, rb))
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
    return out


@dataclasses.dataclass
class H2Result:
    status: int = 0
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    body: bytes = b""
    trailers: dict[str, str] = dataclasses.field(default_factory=dict)
    reset: int | None = None


class H2Session:
    """An HTTP/2 client connection (h2 library) over one stream, used for several exchanges."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        self.goaway = False

    async def exchange(self, requests: Sequence[tuple[list[tuple[str, str]], bytes]],
                       raw: bytes = b"") -> list[H2Result]:
        """Send all requests concurrently (then `raw` bytes); wait for every answer, or for
        GOAWAY / EOF (with no requests: for GOAWAY / EOF)."""
        conn = self.conn
        ids = []
        results: dict[int, H2Result] = {}
        done: set[int] = set()
        for headers, body in requests:
            sid = conn.get_next_available_stream_id()
            ids.append(sid)
            results[sid] = H2Result()
            conn.send_headers(sid, headers, end_stream=not body)
            if body:
                await self._send_body(sid, body, results, done)
        await self.stream.send_all(conn.data_to_send() + raw)
        while (len(done) < len(ids) or not ids) and not self.goaway:
            data = await self.stream.receive_some(65536)
            if not data:
                break
            self._events(bytes(data), results, done)
            pending = conn.data_to_send()
            if pending:
                await self.stream.send_all(pending)
        return [results[s] for s in ids]

    async def _send_body(self, sid: int, body: bytes, results: dict[int, H2Result],
                         done: set[int]) -> None:
        view = memoryview(body)
        while view:
            if results[sid].status or sid in done or self.goaway:
                return  # answered before the body was sent (e.g. 413)
            window = self.conn.local_flow_control_window(sid)
            n = min(window, self.conn.max_outbound_frame_size, len(view))
            if n <= 0:  # wait for the peer to open the window (or answer early)
                await self.stream.send_all(self.conn.data_to_send())
                data = await self.stream.receive_some(65536)
                if not data:
                    return
                self._events(bytes(data), results, done)
                continue
            self.conn.send_data(sid, view[:n].tobytes(), end_stream=n == len(view))
            view = view[n:]

    def _events(self, data: bytes, results: dict[int, H2Result], done: set[int]) -> None:
        for ev in self.conn.receive_data(data):
            r = results.get(getattr(ev, "stream_id", 0) or 0)
            if isinstance(ev, h2.events.ResponseReceived) and r is not None:
                hs = dict(ev.headers)  # type: ignore[arg-type]
                r.status = int(hs.pop(":status"))
                r.headers = hs
                if ev.stream_ended is not None:
                    done.add(ev.stream_id)
            elif isinstance(ev, h2.events.DataReceived):
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                if r is not None:
                    r.body += ev.data
            elif isinstance(ev, h2.events.TrailersReceived) and r is not None:
                r.trailers = dict(ev.headers)  # type: ignore[arg-type]
            elif isinstance(ev, h2.events.StreamEnded) and r is not None:
                done.add(ev.stream_id)
            elif isinstance(ev, h2.events.StreamReset) and r is not None:
                r.reset = ev.error_code  # (a late reset of an earlier exchange's stream: not ours)
                done.add(ev.stream_id)
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.goaway = True



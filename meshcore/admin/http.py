"""A minimal HTTP/1.1 server (h11 over trio) for a proxy's admin, metrics and readiness ports.

ztunnel and the waypoint each expose `/config_dump`, `/logging`, `/metrics`, `/healthz/ready`
(REFERENCE §1). These are low-rate endpoints, so the server is deliberately simple: one request
per connection iteration, keep-alive honoured, bodies up to 64 KiB, handlers are plain
callables returning an `AdminResponse` (sync, computed from immutable snapshots; they must
not block). Handlers that need the request body (`POST /logging?level=debug`) get the query
string and body bytes.

Callers: `ztunnel.app`, `waypoint.app`. `serve_admin(routes, host, port, task_status=...)`
reports the bound port through `task_status.started(port)`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

import h11
import trio

log = logging.getLogger("meshcore.admin")
MAX_BODY = 64 * 1024
IDLE_TIMEOUT = 30.0


@dataclasses.dataclass(frozen=True, slots=True)
class AdminRequest:
    method: str
    path: str
    query: Mapping[str, str]
    body: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class AdminResponse:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"

    @classmethod
    def json(cls, value: Any, status: int = 200) -> AdminResponse:
        body = json.dumps(value, indent=2, sort_keys=True, default=str).encode() + b"\n"
        return cls(status, body, "application/json")

    @classmethod
    def text(cls, text: str, status: int = 200) -> AdminResponse:
        return cls(status, text.encode())


Route = Callable[[AdminRequest], AdminResponse]


async def serve_admin(
    routes: Mapping[str, Route],
    host: str,
    port: int,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `routes` (exact paths) on host:port until cancelled."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()[1]
    log.debug("admin endpoint listening on %s:%d", host, bound)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, _handler(routes), listeners)
        task_status.started(bound)


def _handler(routes: Mapping[str, Route]) -> Callable[[trio.abc.Stream], Any]:
    async def handle(stream: trio.abc.Stream) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=16 * 1024)
        try:
            while True:
                with trio.move_on_after(IDLE_TIMEOUT) as idle:
                    request = await _read_request(conn, stream)
                if idle.cancelled_caught or request is None:
                    return
                response = _dispatch(routes, request)
                await _send(conn, stream, response)
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (h11.RemoteProtocolError, trio.BrokenResourceError, ValueError) as exc:
            log.debug("admin connection dropped: %s", exc)
        finally:
            await trio.aclose_forcefully(stream)

    return handle


async def _read_request(conn: h11.Connection, stream: trio.abc.Stream) -> AdminRequest | None:
    target = b""
    method = b""
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = bytes(await stream.receive_some(16 * 1024))
            conn.receive_data(data)
            if not data and conn.their_state is h11.IDLE:
                return None
            continue
        if isinstance(event, h11.Request):
            method, target = event.method, event.target
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_BODY:
                raise ValueError("admin request body too large")
        elif isinstance(event, h11.EndOfMessage):
            url = urllib.parse.urlsplit(target.decode("ascii", "replace"))
            query = dict(urllib.parse.parse_qsl(url.query))
            return AdminRequest(method.decode(), url.path, query, bytes(body))
        elif isinstance(event, h11.ConnectionClosed):
            return None


def _dispatch(routes: Mapping[str, Route], request: AdminRequest) -> AdminResponse:
    route = routes.get(request.path)
    if route is None:
        known = "\n".join(sorted(routes))
        return AdminResponse.text(f"no such endpoint {request.path}; known:\n{known}\n", 404)
    try:
        return route(request)
    except Exception:  # an admin bug must not take the proxy down; it is logged with its trace
        log.exception("admin handler for %s failed", request.path)
        return AdminResponse.text("internal error; see the proxy log\n", 500)


async def _send(conn: h11.Connection, stream: trio.abc.Stream, response: AdminResponse) -> None:
    headers = [
        ("content-type", response.content_type),
        ("content-length", str(len(response.body))),
    ]
    data = conn.send(h11.Response(status_code=response.status, headers=headers))
    data += conn.send(h11.Data(data=response.body)) or b""
    data += conn.send(h11.EndOfMessage()) or b""
    await stream.send_all(data)

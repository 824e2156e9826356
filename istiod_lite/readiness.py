"""istiod-lite's readiness endpoint (`GET /ready`, 15021 by default): 200 once the first config
snapshot is being served, 503 before. Kubernetes probes and the sandbox poll it.

A deliberately tiny asyncio HTTP/1.1 responder (h11): one request per connection, no bodies.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import h11


async def serve_readiness(
    host: str, port: int, is_ready: Callable[[], bool]
) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await asyncio.wait_for(reader.read(4096), 10)
                    conn.receive_data(data)
                    if not data:
                        return
                    continue
                if isinstance(event, h11.Request):
                    path = event.target.split(b"?")[0]
                    if path not in (b"/ready", b"/healthz/ready"):
                        status, body = 404, b"try /ready\n"
                    elif is_ready():
                        status, body = 200, b"ready\n"
                    else:
                        status, body = 503, b"not ready: no config snapshot served yet\n"
                    headers = [("content-type", "text/plain"), ("content-length", str(len(body))),
                               ("connection", "close")]
                    writer.write(conn.send(h11.Response(status_code=status, headers=headers)))
                    writer.write(conn.send(h11.Data(data=body)) or b"")
                    writer.write(conn.send(h11.EndOfMessage()) or b"")
                    await writer.drain()
                    return
        except (h11.RemoteProtocolError, TimeoutError, ConnectionError):
            return
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port)

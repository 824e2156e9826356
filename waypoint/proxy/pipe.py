"""An in-process, bounded, half-closeable byte pipe (a connected pair of trio streams).

Who calls it: `waypoint.proxy.listener` hands one end to `serve_hbone` as the tunnel's
"upstream" (so the HBONE server's `relay` moves the tunnel's bytes) and serves HTTP on the
other end. Invariants: at most `max_chunks` unread chunks per direction (back-pressure);
`send_eof` makes the other side's `receive_some` return b"" after the buffered data;
closing one end makes the peer's sends raise `BrokenResourceError`.
"""

from __future__ import annotations

import trio


class PipeEnd(trio.abc.HalfCloseableStream):
    def __init__(self, send: trio.MemorySendChannel[bytes],
                 receive: trio.MemoryReceiveChannel[bytes]) -> None:
        self._send = send
        self._receive = receive
        self._leftover = b""

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            await trio.lowlevel.checkpoint()
            return
        await self._send.send(bytes(data))

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def send_eof(self) -> None:
        await self._send.aclose()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._leftover:
            await trio.lowlevel.checkpoint()
            chunk = self._leftover
        else:
            try:
                chunk = await self._receive.receive()
            except trio.EndOfChannel:
                return b""
        if max_bytes is not None and len(chunk) > max_bytes:
            self._leftover = chunk[max_bytes:]
            return chunk[:max_bytes]
        self._leftover = b""
        return chunk

    async def aclose(self) -> None:
        await self._send.aclose()
        await self._receive.aclose()


def pipe_pair(max_chunks: int = 16) -> tuple[PipeEnd, PipeEnd]:
    a_to_b_send, a_to_b_recv = trio.open_memory_channel[bytes](max_chunks)
    b_to_a_send, b_to_a_recv = trio.open_memory_channel[bytes](max_chunks)
    return PipeEnd(a_to_b_send, b_to_a_recv), PipeEnd(b_to_a_send, a_to_b_recv)

"""The one crossing between trio (the data plane) and asyncio (grpclib, our gRPC stack).

ztunnel and the waypoint are trio programs, but their control-plane clients (xDS, CA) use
grpclib, which is asyncio. `open_asyncio_bridge()` starts one asyncio event loop on a
dedicated thread for the lifetime of a trio nursery; trio code then:

- `await bridge.call(fn, *args)`: run the coroutine `fn(*args)` on the asyncio loop and
  wait for its result in trio (cancelling the trio side cancels the asyncio task);
- `bridge.start_soon(fn, *args)`: run a long-lived coroutine (an xDS stream) on the loop;
  it reports back into trio through `bridge.to_trio(sync_fn, *args)`, which schedules
  `sync_fn(*args)` on the trio thread (for example `send_channel.send_nowait(snapshot)`).

Invariants: no trio object is touched from the asyncio thread except through `to_trio`;
no asyncio object is touched from trio except through this class. Data crossing is immutable.
Shutdown cancels every asyncio task, then stops the loop and joins the thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import trio

T = TypeVar("T")


class AsyncioBridge:
    """Handle to the asyncio loop thread; create with `open_asyncio_bridge()`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, trio_token: trio.lowlevel.TrioToken):
        self._loop = loop
        self._trio_token = trio_token
        self._background: set[concurrent.futures.Future[Any]] = set()

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run `fn(*args)` on the asyncio loop and return its result (or raise its error)."""
        future = asyncio.run_coroutine_threadsafe(_as_coroutine(fn, *args), self._loop)
        done = trio.Event()
        future.add_done_callback(lambda _f: self._trio_token.run_sync_soon(done.set))
        try:
            await done.wait()
        except trio.Cancelled:
            future.cancel()
            raise
        return future.result()

    def start_soon(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run a long-lived coroutine on the loop; it is cancelled when the bridge closes."""
        future = asyncio.run_coroutine_threadsafe(_as_coroutine(fn, *args), self._loop)
        self._background.add(future)
        future.add_done_callback(self._background.discard)

    def to_trio(self, fn: Callable[..., object], *args: Any) -> None:
        """From the asyncio thread: schedule the sync `fn(*args)` on the trio thread."""
        self._trio_token.run_sync_soon(fn, *args)

    def _cancel_all(self) -> None:
        for task in asyncio.all_tasks(self._loop):
            task.cancel()


async def _as_coroutine(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    return await fn(*args)


@contextlib.asynccontextmanager
async def open_asyncio_bridge() -> AsyncIterator[AsyncioBridge]:
    """Start the asyncio thread; on exit cancel its tasks, stop the loop and join the thread."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def run_loop() -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        loop.run_forever()
        # Let cancelled tasks run their cleanup before the loop closes.
        pending = asyncio.all_tasks(loop)
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

    thread = threading.Thread(target=run_loop, name="asyncio-grpc-bridge", daemon=True)
    thread.start()
    await trio.to_thread.run_sync(ready.wait)
    bridge = AsyncioBridge(loop, trio.lowlevel.current_trio_token())
    try:
        yield bridge
    finally:
        loop.call_soon_threadsafe(bridge._cancel_all)
        loop.call_soon_threadsafe(loop.stop)
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(thread.join)

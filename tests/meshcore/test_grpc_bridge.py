"""The trio <-> asyncio bridge runs coroutines on the loop thread and reports back into trio."""

import asyncio
import threading

import pytest
import trio

from meshcore.grpc_bridge import open_asyncio_bridge

pytestmark = pytest.mark.trio


async def test_call_returns_result_from_loop_thread() -> None:
    """call() runs the coroutine on the asyncio thread and returns its value."""
    async def where() -> str:
        await asyncio.sleep(0)
        return threading.current_thread().name

    async with open_asyncio_bridge() as bridge:
        assert await bridge.call(where) == "asyncio-grpc-bridge"


async def test_call_propagates_errors() -> None:
    """An exception raised on the loop reaches the trio caller."""
    async def boom() -> None:
        raise KeyError("x")

    async with open_asyncio_bridge() as bridge:
        with pytest.raises(KeyError):
            await bridge.call(boom)


async def test_background_task_reports_into_trio_and_is_cancelled_on_close() -> None:
    """start_soon() tasks push values into trio with to_trio() and are cancelled on exit."""
    send, recv = trio.open_memory_channel[int](10)
    cancelled = threading.Event()

    async with open_asyncio_bridge() as bridge:
        async def producer() -> None:
            try:
                for i in range(3):
                    bridge.to_trio(send.send_nowait, i)
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled.set()
                raise

        bridge.start_soon(producer)
        assert [await recv.receive() for _ in range(3)] == [0, 1, 2]
    assert cancelled.is_set()


async def test_trio_cancellation_cancels_the_asyncio_call() -> None:
    """Cancelling the trio caller cancels the coroutine on the loop."""
    cancelled = threading.Event()

    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async with open_asyncio_bridge() as bridge:
        with trio.move_on_after(0.2):
            await bridge.call(forever)
        await trio.to_thread.run_sync(cancelled.wait, 5)
    assert cancelled.is_set()

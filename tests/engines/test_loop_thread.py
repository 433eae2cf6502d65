"""engines/loop_thread.LoopThread: the private loop both async-backed engines own."""
from __future__ import annotations

import asyncio
import concurrent.futures
import threading

import pytest

from costtax.engines.loop_thread import LoopThread

pytestmark = pytest.mark.unit


async def _where():
    await asyncio.sleep(0)
    return threading.current_thread().name


def test_call_and_run_execute_on_the_private_loop_from_anywhere():
    lt = LoopThread("costtax-test-loop")
    try:
        assert lt.call(_where(), timeout=5) == "costtax-test-loop"  # from synchronous code
        assert asyncio.run(lt.run(_where())) == "costtax-test-loop"  # from another event loop

        async def nested():  # already on the private loop: awaited there, no bridge
            return await lt.run(_where())

        assert lt.call(nested(), timeout=5) == "costtax-test-loop"
    finally:
        lt.stop(timeout=5)
    assert not lt.thread.is_alive() and lt.loop.is_closed()


def test_a_blocking_call_from_the_loop_thread_is_refused_not_deadlocked():
    lt = LoopThread("costtax-test-loop")
    try:
        async def inner():
            coro = _where()
            try:
                lt.call(coro)
            except RuntimeError as exc:
                return str(exc)

        assert "deadlock" in lt.call(inner(), timeout=5)
    finally:
        lt.stop(timeout=5)


def test_stop_cancels_what_is_still_running():
    lt = LoopThread("costtax-test-loop")
    started = threading.Event()

    async def forever():
        started.set()
        await asyncio.sleep(3600)

    fut = lt.submit(forever())
    assert started.wait(5)
    lt.stop(timeout=5)
    with pytest.raises(concurrent.futures.CancelledError):
        fut.result(timeout=5)
    assert not lt.thread.is_alive()

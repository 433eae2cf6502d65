"""A private asyncio event loop running forever in a daemon thread: the engines that talk to an
async backend (in-process vLLM's AsyncLLM, the OpenAI-compatible HTTP client) own one, so their
work is awaitable from any event loop (the profiler's) and callable from synchronous code."""
from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any, Coroutine


class LoopThread:
    """A private asyncio event loop running forever in a daemon thread."""

    def __init__(self, name: str):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def in_loop_thread(self) -> bool:
        return threading.current_thread() is self.thread

    def submit(self, coro: Coroutine) -> concurrent.futures.Future:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, coro: Coroutine, timeout: float | None = None) -> Any:
        """Run `coro` on the private loop and wait for it (never from the loop's own thread)."""
        if self.in_loop_thread():
            coro.close()
            raise RuntimeError("blocking call on the engine's own event loop thread would deadlock")
        return self.submit(coro).result(timeout)

    async def run(self, coro: Coroutine) -> Any:
        """Await ``coro`` on this loop from any event loop (no bridge when already on it)."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            return await coro
        return await asyncio.wrap_future(self.submit(coro))

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel the loop's tasks, stop it, join the thread (up to ``timeout`` s each), close it."""
        async def cancel_all():
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self.loop.is_closed():
            return
        try:
            self.submit(cancel_all()).result(timeout)
        except Exception:
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout)
        if not self.thread.is_alive():
            self.loop.close()

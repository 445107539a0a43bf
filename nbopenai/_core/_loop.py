"""One private event loop per session, running in a daemon thread.

Why a thread rather than ``nest_asyncio``: inside Jupyter a loop is already running, so a plain
``asyncio.run`` fails. ``nest_asyncio`` patches asyncio globally for every library in the kernel;
a loop of our own changes nothing outside nbopenai, behaves the same in a kernel, terminal IPython
and a plain script, and lives as long as the session, which matters because an ``AsyncOpenAI``
client (and its connection pool) is bound to the loop it first ran on: ``asyncio.run`` per call
would build a fresh loop and strand the pool. The same loop polls background jobs while the kernel
stays free for other cells.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["LoopThread"]

T = TypeVar("T")


class LoopThread:
    """A daemon thread running an asyncio loop; ``run`` blocks the caller until a coroutine ends."""

    def __init__(self, name: str = "nbopenai-loop") -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                ready = threading.Event()
                loop = asyncio.new_event_loop()

                def serve() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                self._thread = threading.Thread(target=serve, name=self._name, daemon=True)
                self._thread.start()
                ready.wait()
                self._loop = loop
            return self._loop

    @property
    def running(self) -> bool:
        """True once the loop thread has started (and until ``close``)."""
        return self._loop is not None and not self._loop.is_closed()

    def in_loop_thread(self) -> bool:
        return self._thread is not None and threading.current_thread() is self._thread

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on the loop and return at once."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and wait for it.

        On ``KeyboardInterrupt`` (Jupyter's stop button) the coroutine is cancelled, we wait until
        it has finished unwinding (so whatever it completed is safely recorded), then re-raise.
        """
        if self.in_loop_thread():
            raise RuntimeError("LoopThread.run called from its own loop; await the coroutine instead")
        unwound = threading.Event()

        async def tracked() -> T:
            try:
                return await coro
            finally:
                unwound.set()

        future = self.submit(tracked())
        try:
            return future.result()
        except KeyboardInterrupt:
            # The concurrent future reports "cancelled" at once; the task unwinds later.
            future.cancel()
            unwound.wait(timeout=30)
            raise

    def close(self) -> None:
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
            if self._thread is not None:
                self._thread.join(timeout=5)
            loop.close()

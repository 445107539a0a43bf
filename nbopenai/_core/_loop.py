"""One private event loop per session, running in a daemon thread.

Why a thread rather than ``nest_asyncio``: inside Jupyter a loop is already running, so a plain
``asyncio.run`` fails. ``nest_asyncio`` patches asyncio globally for every library in the kernel;
a loop of our own changes nothing outside nbopenai, behaves the same in a kernel, terminal IPython
and a plain script, and lives as long as the session, which matters because an ``AsyncOpenAI``
client (and its connection pool) is bound to the loop it first ran on: ``asyncio.run`` per call
would build a fresh loop and strand the pool. The same loop polls background jobs while the kernel
stays free for other cells.

Waiting for a coroutine (``LoopThread.run``) is where the stop button must work, and Python does not
make that automatic: ``_thread.interrupt_main`` (an in-process stop) and a SIGINT that the OS hands to
another thread wake no thread blocked on a lock, so a wait that never wakes never stops; and
the ``KeyboardInterrupt`` is raised in whatever code the main thread runs next, which may be a
``__del__`` or a weakref callback of garbage collected mid-wait, where Python prints "Exception ignored"
and drops it. So a wait sleeps in short slices, and while it waits it records each press
(``_StopButton``) and raises the interrupt itself if the press never reached it.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import asyncio
    import concurrent.futures

__all__ = ["LoopThread"]

T = TypeVar("T")

_SLICE_S = 0.1  # how long a wait sleeps before looking again: a press that woke nothing is seen within this
_UNWIND_TIMEOUT_S = 30.0  # how long an interrupted wait gives the coroutine to unwind before re-raising anyway


class LoopThread:
    """A daemon thread running an asyncio loop; ``run`` blocks the caller until a coroutine ends."""

    def __init__(self, name: str = "nbopenai-loop") -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        import asyncio  # noqa: PLC0415 - with the first loop, not with `import nbopenai` (~10 ms)

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
        loop = self.loop
        import asyncio  # noqa: PLC0415 - loaded by ``loop`` already

        return asyncio.run_coroutine_threadsafe(coro, loop)

    def run(
        self,
        coro: Coroutine[Any, Any, T],
        *,
        tick: Callable[[], None] | None = None,
        interval: float = _SLICE_S,
    ) -> T:
        """Run ``coro`` on the loop and wait for it, calling ``tick()`` every ``interval`` seconds from this thread.

        On ``KeyboardInterrupt`` (Jupyter's stop button, or ``tick`` raising it) the coroutine is
        cancelled, we wait until it has finished unwinding (so whatever it completed is safely
        recorded), then re-raise; the same for any other error out of ``tick``, so no coroutine
        goes on with nobody waiting for it. A press is seen within ``interval`` even when it woke
        nothing or its interrupt was lost on the way (see the module docstring).
        """
        if self.in_loop_thread():
            raise RuntimeError("LoopThread.run called from its own loop; await the coroutine instead")
        unwound = threading.Event()

        async def tracked() -> T:
            try:
                return await coro
            finally:
                unwound.set()

        import concurrent.futures  # noqa: PLC0415 - loaded with asyncio by the first loop; not with `import nbopenai`

        with _StopButton() as button:
            future = self.submit(tracked())
            try:
                button.armed = True  # a press before this line (the future not yet ours to cancel) waits for the check
                while True:
                    button.check()
                    try:
                        result = future.result(timeout=interval)
                    except concurrent.futures.TimeoutError:
                        if tick is not None:
                            tick()
                        continue
                    button.check()  # pressed in its last slice and lost: the cell still stops (Run All)
                    return result
            except BaseException:
                # Interrupted, or tick failed (when the coroutine itself failed, it has ended: both calls are no-ops).
                # The concurrent future reports "cancelled" at once; the task unwinds later.
                future.cancel()
                unwound.wait(timeout=_UNWIND_TIMEOUT_S)
                raise

    def drain(self, timeout: float = _UNWIND_TIMEOUT_S) -> None:
        """Cancel every task on the loop and wait (up to ``timeout``) until each has unwound.

        Stopping the loop under a task drops it: a poll sleeping between requests never runs its
        ``except``/``finally`` (a background job's ledger row is lost, "Task was destroyed but it is
        pending!"), and one submitted just before the stop, not yet started, is never run at all
        ("coroutine ... was never awaited"). Draining first lets each one end as a cancelled task does.
        """
        if not self.running or self.in_loop_thread():  # never started, closed, or we would wait for ourselves
            return
        import asyncio  # noqa: PLC0415 - loaded by the running loop already
        import concurrent.futures  # noqa: PLC0415 - the same

        async def cancel_the_others() -> None:
            # One round first: a task created just before this one takes its first step, so cancelling
            # it raises inside its body (its handlers run) instead of discarding a coroutine never begun.
            await asyncio.sleep(0)
            me = asyncio.current_task()
            while pending := [task for task in asyncio.all_tasks() if task is not me and not task.done()]:
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)  # unwinding may start more: go again

        try:
            self.submit(cancel_the_others()).result(timeout=timeout)
        except concurrent.futures.TimeoutError:  # a task that will not unwind: the loop is stopped under it anyway
            pass

    def close(self) -> None:
        self.drain()
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
            if self._thread is not None:
                self._thread.join(timeout=5)
            loop.close()


class _StopButton:
    """While the main thread waits: remembers a press whose ``KeyboardInterrupt`` was raised but never arrived.

    The SIGINT handler in place (ipykernel's ``default_int_handler`` while a cell runs, or the
    user's own) is wrapped, not replaced: it still decides whether a press interrupts, and a press
    counts only if it raised ``KeyboardInterrupt``. Until ``armed`` the interrupt is only recorded
    (``check`` raises it), so it cannot come out between scheduling the coroutine and the wait that
    cancels it. No handler is installed off the main thread (Python runs handlers only there) or when
    SIGINT is ignored or left to the OS (then no press interrupts).
    """

    def __init__(self) -> None:
        self.pressed = False
        self.armed = False
        self._previous: Callable[[int, Any], Any] | None = None

    def __enter__(self) -> _StopButton:
        if threading.current_thread() is threading.main_thread():
            previous = signal.getsignal(signal.SIGINT)
            if callable(previous):
                self._previous = previous  # before the handler is in: a press may arrive the next instant
                try:
                    signal.signal(signal.SIGINT, self._handle)
                except ValueError:  # signals are not ours to set here (a sub-interpreter): wait as Python would
                    self._previous = None
        return self

    def __exit__(self, *exc_info: object) -> None:
        # Only our own handler is put back: one set meanwhile (by code the wait ran, say) stays.
        if self._previous is not None and signal.getsignal(signal.SIGINT) == self._handle:
            signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum: int, frame: Any) -> None:
        try:
            self._previous(signum, frame)  # type: ignore[misc]
        except KeyboardInterrupt:
            self.pressed = True
            if self.armed:
                raise

    def check(self) -> None:
        """Raise the ``KeyboardInterrupt`` of a press that never reached the wait."""
        if self.pressed:
            raise KeyboardInterrupt

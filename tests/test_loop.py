"""The session's loop thread: a wait for a coroutine stops when the stop button is pressed, however it arrives."""

from __future__ import annotations

import _thread
import asyncio
import gc
import signal
import threading

import pytest

from nbopenai._core._loop import LoopThread


@pytest.fixture
def loop_thread():
    thread = LoopThread(name="test-loop")
    yield thread
    thread.close()


class Sleeper:
    """A coroutine that sleeps half a minute unless cancelled, and says which it was."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.outcome: str | None = None

    async def __call__(self) -> str:
        self.started.set()
        try:
            await asyncio.sleep(30)  # only a wait that missed the press sits this out
        except asyncio.CancelledError:
            self.outcome = "cancelled"
            raise
        self.outcome = "slept"
        return "slept"


def press_once_started(sleeper: Sleeper, press) -> threading.Thread:
    """Press the stop button from another thread once ``sleeper`` runs."""

    def run() -> None:
        sleeper.started.wait()
        press()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


PRESSES = {
    # An in-process stop: it sets the flag Python checks, and wakes no thread blocked on a lock.
    "interrupt_main": lambda: _thread.interrupt_main(signal.SIGINT),
    # A real SIGINT the OS hands to a thread other than the main one: that thread's wait is the one cut short.
    "SIGINT to another thread": lambda: signal.pthread_kill(threading.get_ident(), signal.SIGINT),
}


@pytest.mark.parametrize("press", PRESSES)
def test_a_press_that_wakes_nothing_stops_the_wait_and_cancels_the_coroutine(loop_thread, press):
    sleeper = Sleeper()
    presser = press_once_started(sleeper, PRESSES[press])
    with pytest.raises(KeyboardInterrupt):
        loop_thread.run(sleeper())
    presser.join()
    assert sleeper.outcome == "cancelled"  # and it had unwound before the interrupt came out
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the wait put the handler back


def test_a_sigint_handler_that_does_not_interrupt_is_still_obeyed(loop_thread):
    started, heard = threading.Event(), threading.Event()

    async def until_heard() -> bool:
        started.set()
        return await asyncio.to_thread(heard.wait, 30)

    def listen(signum, frame) -> None:
        heard.set()

    def press() -> None:
        started.wait()
        _thread.interrupt_main(signal.SIGINT)

    previous = signal.signal(signal.SIGINT, listen)
    try:
        presser = threading.Thread(target=press, daemon=True)
        presser.start()
        assert loop_thread.run(until_heard()) is True  # the handler ran during the wait, which it chose not to stop
        assert signal.getsignal(signal.SIGINT) is listen
    finally:
        signal.signal(signal.SIGINT, previous)
    presser.join()


def test_close_unwinds_a_coroutine_submitted_just_before_it(recwarn):
    """A coroutine submitted while the loop was busy, then the loop closed: it still runs and unwinds.

    The loop is held by a callback until ``close`` has queued its first call, so the submitted
    coroutine has not started when the loop is told to close. Stopping the loop there dropped the
    task before its first step ("coroutine ... was never awaited", a job's poll and its ledger row lost).
    """
    thread = LoopThread(name="test-close")
    loop, busy, gate, closing = thread.loop, threading.Event(), threading.Event(), threading.Event()

    def hold() -> None:
        busy.set()
        gate.wait()

    loop.call_soon_threadsafe(hold)  # the loop is busy, as on a loaded machine
    busy.wait(timeout=30)  # inside it: what is submitted now waits for the loop's next round
    ran = []

    async def poll() -> None:
        try:
            await asyncio.sleep(30)
        finally:
            ran.append("unwound")

    future = thread.submit(poll())
    queue = loop.call_soon_threadsafe

    def queued_by_close(callback, *args, **kwargs):
        handle = queue(callback, *args, **kwargs)
        closing.set()
        return handle

    loop.call_soon_threadsafe = queued_by_close  # tells us when close has queued its first call
    closer = threading.Thread(target=thread.close)
    closer.start()
    closing.wait(timeout=30)
    gate.set()
    closer.join(timeout=60)
    assert not closer.is_alive() and loop.is_closed()
    assert ran == ["unwound"] and future.done()
    del future, poll
    gc.collect()
    assert not [w for w in recwarn if "never awaited" in str(w.message)]


def test_a_press_the_instant_the_wrapper_is_installed_is_recorded(loop_thread, monkeypatch):
    """A press can arrive between installing the wrapping handler and the next line: the wrapper must
    already know the handler it wraps (it called None: TypeError, and the press was lost)."""
    install = signal.signal

    def install_then_press(signum, handler):  # noqa: ANN001, ANN202
        previous = install(signum, handler)
        if callable(handler) and getattr(handler, "__self__", None) is not None:  # our wrapper, just installed
            handler(signum, None)
        return previous

    monkeypatch.setattr(signal, "signal", install_then_press)
    with pytest.raises(KeyboardInterrupt):  # recorded, then raised by the wait's first check
        loop_thread.run(Sleeper()())

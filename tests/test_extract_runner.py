"""Live extraction against the offline server: statuses, retries, never losing a row, cache, interrupt."""

from __future__ import annotations

import _thread
import asyncio
import gc
import signal
import sys
import threading

import pandas as pd
import pytest
from _byte_server import ByteServer, json_reply
from pydantic import BaseModel, field_validator

import nbopenai
from nbopenai import UsageError
from nbopenai._extract import extract
from nbopenai._extract._runner import AdaptiveLimit


class Person(BaseModel):
    name: str
    age: int | None


class Picky(BaseModel):
    name: str
    age: int | None

    @field_validator("age")
    @classmethod
    def ancient(cls, value: int | None) -> int | None:
        if value is not None and value < 1000:
            raise ValueError("must be at least 1000")
        return value


class Buggy(BaseModel):
    name: str

    @field_validator("name")
    @classmethod
    def crash(cls, value: str) -> str:
        raise TypeError("a bug in the validator")  # not a ValueError: Pydantic lets it through


class Never(BaseModel):
    name: str

    @field_validator("name")
    @classmethod
    def refuse(cls, value: str) -> str:
        raise ValueError("never valid")


TEXTS = [f"Ada Lovelace is {30 + i} years old." for i in range(8)]


def model_requests(server) -> list:
    return [r for r in server.requests if r.path == "/v1/responses"]


@pytest.fixture
def fast(session):
    """The session with retries that wait a few milliseconds."""
    session.configure(backoff_base=0.001, backoff_max=0.01)
    return session


def run(session, texts=TEXTS, schema=Person, **options):
    options.setdefault("progress", False)
    return extract(session, schema, texts, **options)


# ---- the adaptive limit (pure asyncio) ----------------------------------------------------------


def test_limit_halves_on_a_rate_limit_once_per_wave_and_creeps_back():
    async def scenario() -> list[int]:
        limit = AdaptiveLimit(8, min_samples=4)
        epochs = [await limit.acquire() for _ in range(4)]
        seen = [limit.limit]
        for epoch in epochs:  # four 429s from one wave: one cut
            limit.release()
            limit.rate_limited(epoch)
        seen.append(limit.limit)
        fresh = await limit.acquire()
        limit.release()
        limit.rate_limited(fresh)  # a 429 on a request sent after the cut: cut again
        seen.append(limit.limit)
        for _ in range(2):  # limit 2: two successes raise it by one
            limit.succeeded()
        seen.append(limit.limit)
        for _ in range(100):
            limit.succeeded()
        seen.append(limit.limit)
        return seen

    assert asyncio.run(scenario()) == [8, 4, 2, 3, 8]


def test_scattered_rate_limits_do_not_cut_the_limit():
    async def scenario() -> int:
        limit = AdaptiveLimit(50)
        for n in range(1000):  # one answer in ten is a 429, each from a fresh wave
            epoch = await limit.acquire()
            limit.release()
            if n % 10 == 9:
                limit.rate_limited(epoch)
            else:
                limit.succeeded()
        return limit.limit

    assert asyncio.run(scenario()) == 50


def test_a_few_early_rate_limits_are_not_yet_a_storm():
    async def scenario() -> int:
        limit = AdaptiveLimit(50)  # min_samples 10: three 429s alone prove nothing
        for _ in range(3):
            limit.rate_limited(await limit.acquire())
            limit.release()
        return limit.limit

    assert asyncio.run(scenario()) == 50


def test_limit_makes_holders_wait_and_survives_cancelled_waiters():
    async def scenario() -> tuple[int, int]:
        limit = AdaptiveLimit(1)
        await limit.acquire()
        cancelled = asyncio.ensure_future(limit.acquire())
        waiting = asyncio.ensure_future(limit.acquire())
        await asyncio.sleep(0)
        cancelled.cancel()
        await asyncio.sleep(0)
        limit.release()
        await asyncio.wait_for(waiting, 1)
        return limit.in_flight, len(limit._waiters)

    assert asyncio.run(scenario()) == (1, 0)


def test_freed_slots_go_to_waiters_in_order_rows_under_way_first():
    async def scenario() -> list[str]:
        limit = AdaptiveLimit(1)
        await limit.acquire()
        order: list[str] = []

        async def take(name: str, first: bool = False) -> None:
            await limit.acquire(first=first)
            order.append(name)
            await asyncio.sleep(0)
            limit.release()

        tasks = [asyncio.ensure_future(take("new 1")), asyncio.ensure_future(take("new 2"))]
        await asyncio.sleep(0)
        tasks.append(asyncio.ensure_future(take("retry 1", first=True)))
        await asyncio.sleep(0)
        tasks.append(asyncio.ensure_future(take("retry 2", first=True)))
        await asyncio.sleep(0)
        limit.release()
        tasks.append(asyncio.ensure_future(take("holder again")))  # released, asks again: queues behind
        await asyncio.gather(*tasks)
        return order

    assert asyncio.run(scenario()) == ["retry 1", "retry 2", "new 1", "new 2", "holder again"]


def test_a_slot_handed_over_as_its_waiter_is_cancelled_is_passed_on():
    async def scenario() -> tuple[int, int]:
        limit = AdaptiveLimit(1)
        await limit.acquire()
        doomed = asyncio.ensure_future(limit.acquire())
        waiting = asyncio.ensure_future(limit.acquire())
        await asyncio.sleep(0)
        limit.release()  # handed to `doomed`...
        doomed.cancel()  # ...which is cancelled before it runs
        await asyncio.wait_for(waiting, 1)
        return limit.in_flight, len(limit._waiters)

    assert asyncio.run(scenario()) == (1, 0)


# ---- rows -------------------------------------------------------------------------------------


def test_one_row_per_input_aligned_to_the_index(session, local_server):
    texts = pd.Series(TEXTS[:3], index=pd.Index(["a", "b", "c"], name="doc"))
    frame = run(session, texts)
    assert frame.index.equals(texts.index)
    assert list(frame["_status"]) == ["ok"] * 3
    assert list(frame["age"]) == [30, 31, 32]
    assert frame["_input_tokens"].gt(0).all() and frame["_response_id"].str.startswith("resp_").all()
    assert frame.attrs["totals"]["requests"] == 3 and frame.attrs["schema"] == "Person"
    assert len(model_requests(local_server)) == 3


def test_the_request_is_strict_structured_output(session, local_server):
    run(session, TEXTS[:1], instructions="Extract the person.")
    body = model_requests(local_server)[0].body
    assert body["text"]["format"]["type"] == "json_schema" and body["text"]["format"]["strict"] is True
    assert body["instructions"] == "Extract the person." and body["input"] == TEXTS[0]


def test_a_single_text_and_a_missing_value(session, local_server):
    assert len(run(session, "Ada Lovelace is 36.")) == 1
    frame = run(session, pd.Series(["Alan Turing is 41.", None, float("nan")]), cache=False)
    assert list(frame["_status"]) == ["ok", "error", "error"]
    assert "missing" in frame.loc[1, "_error"]
    assert len(model_requests(local_server)) == 2


def test_error_after_retries_keeps_the_row(fast, local_server):
    # While the first row backs off, its slot serves the next row: the first two requests (rows 0
    # and 1) fail, and whichever of them retries first meets the third 500 and runs out of attempts.
    local_server.inject("server_error", count=3)
    frame = run(fast, TEXTS[:3], concurrency=1, max_attempts=2)
    assert sorted(frame["_status"]) == ["error", "ok", "ok"]
    failed = frame[frame["_status"] == "error"].iloc[0]
    assert failed["_attempts"] == 2 and "HTTP 500" in failed["_error"]
    assert frame.loc[2, "_status"] == "ok" and frame.loc[2, "_attempts"] == 1


def test_a_bad_request_is_not_retried(fast, local_server):
    local_server.inject("bad_request", message="no such thing")
    frame = run(fast, TEXTS[:2], concurrency=1)
    assert list(frame["_status"]) == ["error", "ok"]
    assert frame.loc[0, "_attempts"] == 1 and "no such thing" in frame.loc[0, "_error"]


def test_incomplete(fast, local_server):
    local_server.inject("incomplete")
    frame = run(fast, TEXTS[:2], concurrency=1)
    assert list(frame["_status"]) == ["incomplete", "ok"]
    assert "max_output_tokens" in frame.loc[0, "_error"]


def test_invalid_answers_are_reasked_with_the_error(fast, local_server):
    frame = run(fast, TEXTS[:1], schema=Picky)
    # The demo model reads the number in the re-ask ("at least 1000") and answers 1000: valid.
    assert frame.loc[0, "_status"] == "ok" and frame.loc[0, "age"] == 1000
    assert frame.loc[0, "_attempts"] == 2
    bodies = [r.body for r in model_requests(local_server)]
    assert len(bodies) == 2
    assert bodies[1]["input"][0] == {"role": "user", "content": TEXTS[0]}
    assert bodies[1]["input"][1]["role"] == "assistant"  # the rejected answer is shown back
    assert "at least 1000" in bodies[1]["input"][-1]["content"]
    assert frame.loc[0, "_input_tokens"] == fast.usage()["input_tokens"].sum()  # both attempts counted


def test_answers_still_invalid_after_the_reasks_are_kept_as_invalid(fast, local_server):
    frame = run(fast, TEXTS[:2], schema=Never, validation_retries=2)
    assert list(frame["_status"]) == ["invalid", "invalid"]
    assert list(frame["_attempts"]) == [3, 3]
    assert frame.loc[0, "_error"] == "name: Value error, never valid"
    assert len(model_requests(local_server)) == 6 == len(fast.usage())


def test_a_validator_that_crashes_costs_its_row_but_the_answer_stays_in_the_ledger(fast, local_server):
    frame = run(fast, TEXTS[:2], schema=Buggy)
    assert list(frame["_status"]) == ["error", "error"]
    assert frame.loc[0, "_error"] == "the validator raised TypeError: a bug in the validator"
    ledger = fast.usage()
    assert len(ledger) == len(model_requests(local_server)) == 2  # billed answers, each in the ledger
    assert ledger["input_tokens"].gt(0).all() and frame["_input_tokens"].gt(0).all()


def test_rate_limit_storm_every_row_ok_exactly_once(fast, local_server):
    local_server.inject("rate_limit", count=12, retry_after=0.01)
    frame = run(fast, TEXTS, concurrency=4, max_attempts=10)
    assert list(frame["_status"]) == ["ok"] * len(TEXTS)
    assert frame.index.is_unique and len(frame) == len(TEXTS)
    requests = model_requests(local_server)
    assert sum(r.fault == "rate_limit" for r in requests) == 12
    ledger = fast.usage()
    assert len(ledger) == len(requests)  # every attempt that reached the server, once
    assert (ledger["status"] == "rate_limited").sum() == 12
    assert int(frame["_attempts"].sum()) == len(requests)


def test_a_row_waiting_out_retry_after_lends_its_slot(fast, local_server):
    local_server.inject("rate_limit", retry_after=0.5)
    frame = run(fast, TEXTS[:3], concurrency=1)
    assert list(frame["_status"]) == ["ok"] * 3
    inputs = [r.body["input"] for r in model_requests(local_server)]
    # Row 0 got the 429, and row 1 (its worker queued for the one slot) went out at once.
    assert inputs[:2] == [TEXTS[0], TEXTS[1]]
    assert sorted(inputs) == sorted([TEXTS[0], *TEXTS[:3]]) and frame.loc[0, "_attempts"] == 2


def test_the_stop_button_reaches_a_row_parked_for_a_retry(fast, local_server):
    local_server.inject("rate_limit", retry_after=60)  # row 0 waits a minute, in a task of its own

    def stop_when_the_rest_are_done(snapshot):
        if snapshot.done >= 2 and not snapshot.finished:
            raise KeyboardInterrupt

    frame = run(fast, TEXTS[:3], concurrency=1, progress=stop_when_the_rest_are_done)
    assert frame.attrs["interrupted"] is True
    assert list(frame["_status"]) == ["cancelled", "ok", "ok"]  # row 0 did not sit out its minute
    assert list(fast.usage()["status"]).count("rate_limited") == 1


def test_random_rate_limits_with_retry_after(fast, local_server):
    local_server.configure(fault_rate=0.3, fault_kinds=["rate_limit"], seed=7)
    frame = run(fast, TEXTS[:6], concurrency=3, max_attempts=30)
    assert (frame["_status"] == "ok").all()
    assert len(fast.usage()) == len(model_requests(local_server))


def test_progress_callback_sees_counts(session, local_server):
    local_server.configure(latency=0.05)
    snapshots = []
    run(session, TEXTS[:4], concurrency=1, progress=snapshots.append)
    final = snapshots[-1]
    assert final.finished and final.done == final.total == 4 and final.ok == 4
    assert final.input_tokens > 0 and "4/4" in final.line()


# ---- interrupt, cache, retry_failed ---------------------------------------------------------------


def test_interrupt_returns_the_partial_frame_with_finished_rows(session, local_server):
    local_server.configure(latency=0.2)
    texts = [f"Bob is {i} years old." for i in range(12)]

    def stop_after_two(snapshot):
        if snapshot.done >= 2 and not snapshot.finished:
            raise KeyboardInterrupt

    frame = run(session, texts, concurrency=2, progress=stop_after_two)
    assert frame.attrs["interrupted"] is True
    assert len(frame) == 12 and frame.index.equals(pd.RangeIndex(12))
    statuses = set(frame["_status"])
    assert statuses <= {"ok", "cancelled"} and "cancelled" in statuses
    finished = frame[frame["_status"] == "ok"]
    assert len(finished) >= 2 and finished["name"].notna().all()
    assert "interrupted" in frame[frame["_status"] == "cancelled"]["_error"].iloc[0]

    local_server.configure(latency=0.0)
    local_server.clear_requests()
    again = run(session, texts)  # the finished rows were cached: only the rest is paid for
    assert (again["_status"] == "ok").all()
    assert len(model_requests(local_server)) == (frame["_status"] == "cancelled").sum()


class PressedWhileCollected:
    """Garbage whose ``__del__`` runs when the stop button is pressed (as a widget's may, collected mid-run):
    Python raises the ``KeyboardInterrupt`` inside it, prints "Exception ignored" and drops it."""

    def __init__(self) -> None:
        self.cycle = self  # only the garbage collector frees it: on the thread that happens to allocate

    def __del__(self) -> None:
        _thread.interrupt_main(signal.SIGINT)


def test_a_press_lost_in_a_finalizer_still_stops_the_run(session, local_server, monkeypatch):
    local_server.configure(latency=0.2)
    ignored = []
    monkeypatch.setattr(sys, "unraisablehook", lambda unraisable: ignored.append(unraisable.exc_type))

    def collect_garbage_after_two(snapshot):  # called on the waiting thread, between polls
        if snapshot.done >= 2 and not ignored:
            PressedWhileCollected()
            gc.collect()

    texts = [f"Bob is {i} years old." for i in range(12)]
    frame = run(session, texts, concurrency=1, cache=False, progress=collect_garbage_after_two)
    assert ignored == [KeyboardInterrupt]  # the press went to the __del__, and Python dropped it there
    assert frame.attrs["interrupted"] is True
    assert list(frame["_status"]).count("ok") >= 2 and "cancelled" in set(frame["_status"])


def test_a_progress_callback_that_fails_takes_the_run_down_with_it(session, local_server):
    local_server.configure(latency=0.2)

    def fail_after_one(snapshot):
        if snapshot.done >= 1 and not snapshot.finished:
            raise ValueError("a bug in the callback")

    texts = [f"Bob is {i} years old." for i in range(12)]
    with pytest.raises(ValueError, match="a bug in the callback"):
        run(session, texts, concurrency=1, cache=False, progress=fail_after_one)

    async def left_on_the_loop() -> list[asyncio.Task]:
        return [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]

    assert session.loop.run(left_on_the_loop()) == []  # no rows still being sent, with nobody to record them



def test_a_second_run_is_served_from_the_cache(session, local_server):
    first = run(session, TEXTS[:4])
    local_server.clear_requests()
    second = run(session, TEXTS[:4])
    assert model_requests(local_server) == []
    assert second["_from_cache"].all() and not first["_from_cache"].any()
    assert list(second["name"]) == list(first["name"])
    assert list(second["_response_id"]) == list(first["_response_id"])
    assert second.attrs["totals"]["requests"] == 0 and second.attrs["totals"]["cached"] == 4
    third = run(session, TEXTS[:4], instructions="Something else.")  # other instructions: other answers
    assert not third["_from_cache"].any()


def test_cache_off_asks_again(session, local_server):
    run(session, TEXTS[:2])
    local_server.clear_requests()
    run(session, TEXTS[:2], cache=False)
    assert len(model_requests(local_server)) == 2


def test_retry_failed_with_a_frame_redoes_only_failed_rows(fast, local_server):
    local_server.inject("bad_request")
    first = run(fast, TEXTS[:4], concurrency=1, cache=False)
    assert list(first["_status"]) == ["error", "ok", "ok", "ok"]
    local_server.clear_requests()
    second = run(fast, TEXTS[:4], cache=False, retry_failed=first)
    assert len(model_requests(local_server)) == 1
    assert list(second["_status"]) == ["ok"] * 4
    assert list(second["_response_id"][1:]) == list(first["_response_id"][1:])
    assert second.index.equals(first.index)


def test_retry_failed_true_uses_the_cache(fast, local_server):
    local_server.inject("bad_request")
    run(fast, TEXTS[:3], concurrency=1)
    local_server.clear_requests()
    frame = run(fast, TEXTS[:3], retry_failed=True)
    assert len(model_requests(local_server)) == 1 and (frame["_status"] == "ok").all()


def test_retry_failed_refuses_a_frame_of_another_schema(session):
    first = run(session, TEXTS[:2])
    with pytest.raises(UsageError):
        run(session, TEXTS[:2], schema=Picky, retry_failed=first)
    with pytest.raises(UsageError):
        run(session, TEXTS[:3], retry_failed=first)


def test_many_one_row_per_item(session):
    class Person(BaseModel):
        name: str

    frame = run(session, ["Ada Lovelace.\nAlan Turing.\nGrace Hopper.", "Edsger Dijkstra."], many=True)
    assert frame.index.names == ["source", "item"]
    assert frame.loc[0]["name"].tolist() == ["Ada Lovelace", "Alan Turing", "Grace Hopper"]
    assert frame.loc[1]["name"].tolist() == ["Edsger Dijkstra"]
    assert frame["_n_items"].tolist() == [3, 3, 3, 1]


def test_dry_run_sends_nothing(session, local_server):
    plan = run(session, TEXTS[:3], dry_run=True)
    assert local_server.requests == []
    assert plan.to_send == 3 and plan.request["input"] == TEXTS[0]
    assert plan.request["text"]["format"]["strict"] is True
    assert "dry run" in repr(plan) and "```json" in plan._repr_mimebundle_()["text/markdown"]


def test_unknown_options_and_bad_values_are_usage_errors(session):
    with pytest.raises(UsageError):
        run(session, TEXTS[:1], concurency=3)
    with pytest.raises(UsageError):
        run(session, TEXTS[:1], concurrency=0)
    with pytest.raises(UsageError):
        run(session, {"a": 1, "b": 2}.items)  # not texts


def test_works_when_the_caller_runs_an_event_loop(session):
    """Like a notebook cell: a loop is already running in this thread."""

    async def cell():
        return run(session, TEXTS[:2])

    frame = asyncio.run(cell())
    assert (frame["_status"] == "ok").all()


def test_answers_reach_the_cache_while_the_run_goes_on(session, local_server):
    """Crash-safe progress: the cache is written every 50 answers (or second), not only when the run ends."""
    local_server.configure(latency=0.01)
    texts = [f"Bob is {i} years old." for i in range(150)]
    seen = []

    def watch(snapshot):
        if not snapshot.finished:
            seen.append((snapshot.done, len(session.extract_store)))

    frame = run(session, texts, concurrency=4, progress=watch)
    assert (frame["_status"] == "ok").all() and len(session.extract_store) == 150
    assert any(0 < stored < 150 for _, stored in seen), seen
    assert all(stored <= done for done, stored in seen)  # only finished rows, never ahead of them


# ---- a settings change while a run goes on ------------------------------------------------------


class HeldAnswers:
    """Answers every request as the API would, holding the first one until ``release()``; ``arrived`` is set
    once it waits (extraction sends one request for a new model first, so the run is under way then)."""

    ANSWER = {
        "id": "resp_1", "object": "response", "created_at": 0, "status": "completed", "model": "nbopenai-local",
        "output": [{"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
                    "content": [{"type": "output_text", "text": '{"name": "Ada", "age": 36}', "annotations": []}]}],
        "usage": {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15},
    }

    def __init__(self) -> None:
        self.arrived, self._released, self._first = threading.Event(), threading.Event(), threading.Lock()

    def release(self) -> None:
        self._released.set()

    def __call__(self, request) -> bytes:
        if self._first.acquire(blocking=False):  # the first request only: the lock is never given back
            self.arrived.set()
            self._released.wait(timeout=30)
        return json_reply(200, self.ANSWER)


def test_a_key_changed_mid_run_leaves_the_run_its_client_and_new_work_gets_the_new_one():
    """``configure(api_key=...)`` from another thread while rows run: the run keeps the client it started with
    (its key and endpoint: its rows, cache scope and provenance are that endpoint's), which is closed once the run
    lets go; what starts afterwards uses the new key. Before, the run's client was closed under it and every row
    after the change failed with "client has been closed"."""
    first_key, second_key = "sk-test-" + "first" * 5, "sk-test-" + "second" * 4
    held = HeldAnswers()
    texts = [f"Ada Lovelace is {30 + i} years old." for i in range(20)]
    with ByteServer(held) as server, nbopenai.Session(base_url=server.base_url, model="nbopenai-local",
                                                      ledger_path=":memory:", api_key=first_key) as session:
        frames: list = []
        running = threading.Thread(target=lambda: frames.append(run(session, texts, cache=False, concurrency=4)))
        running.start()
        try:
            assert held.arrived.wait(timeout=30)
            started_with = session.async_client
            session.configure(api_key=second_key)  # the run's first request is out, the others not yet sent
            assert not started_with.is_closed()  # the run still holds it
        finally:
            held.release()
            running.join(timeout=60)
        assert frames and list(frames[0]["_status"]) == ["ok"] * 20
        assert started_with.is_closed()  # the run has let go: nothing uses it any more
        sent = list(server.requests)
        assert len(sent) == 20  # one request per row: none sent again
        assert {r.headers["authorization"] for r in sent} == {f"Bearer {first_key}"}
        run(session, texts[:1], cache=False)  # new work: the new key
        assert server.requests[-1].headers["authorization"] == f"Bearer {second_key}"
        assert session.async_client is not started_with

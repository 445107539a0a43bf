"""A turn ends once, where it ends: streams held open after completion, usage the server left out,
several turns on one thread at once (issue 14 items 8, 9, 10).

Answers here are written byte by byte (``_byte_server``) where a proxy's behaviour matters (a stream that
stays open after ``response.completed``, a usage object that is ``{}``).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import socket
import threading

import pytest
from _byte_server import ByteServer, json_reply

import nbopenai
from nbopenai import BudgetExceeded
from nbopenai._ledger._prices import PriceTable
from nbopenai._turns._window import ContextWindows

# ---- answers written byte by byte (tests/_byte_server.py) ----------------------------------


def _response(text: str, usage: object, status: str = "completed") -> dict:
    return {
        "id": "resp_raw_1",
        "object": "response",
        "created_at": 1_750_000_000,
        "status": status,
        "model": "gpt-4.1-mini",
        "output": [
            {
                "type": "message",
                "id": "msg_raw_1",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ],
        "usage": usage,
    }


class Hold:
    """A part of a ``ByteServer`` answer that keeps the connection open (sending ``ping`` between
    waits) until the client hangs up; ``client_closed_first`` says whether it did before we gave up."""

    def __init__(self, ping: bytes | None, waits: int = 400) -> None:
        self.ping, self.waits = ping, waits
        self.client_closed_first: list[bool] = []
        self.ended = threading.Event()

    def __call__(self, conn: socket.socket) -> None:
        try:
            self._hold(conn)
        finally:
            self.ended.set()

    def _hold(self, conn: socket.socket) -> None:
        conn.settimeout(0.05)
        for _ in range(self.waits):
            try:
                if self.ping is not None:
                    conn.sendall(self.ping)
                if conn.recv(1) == b"":
                    self.client_closed_first.append(True)
                    return
            except TimeoutError:
                continue
            except OSError:  # reset by the client
                self.client_closed_first.append(True)
                return
        self.client_closed_first.append(False)


def _chunk(text: str) -> bytes:
    data = text.encode()
    return b"%x\r\n%s\r\n" % (len(data), data)


def _sse(event: dict) -> bytes:
    return _chunk(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n")


def stream_then(end, usage: object = None):
    """An answer: the events of a completed stream, then ``end`` (a ``Hold``, or the last chunk)."""
    usage = usage if usage is not None else {"input_tokens": 12, "output_tokens": 3, "total_tokens": 15}

    def answer(request) -> list:
        final = _response("Hello there", usage)
        created = {**final, "status": "in_progress", "output": [], "usage": None}
        deltas = [
            _sse({"type": "response.output_text.delta", "sequence_number": number, "item_id": "msg_raw_1",
                  "output_index": 0, "content_index": 0, "delta": delta, "logprobs": []})
            for number, delta in enumerate(["Hello", " there"], start=1)
        ]
        return [
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
            b"connection: keep-alive\r\ntransfer-encoding: chunked\r\n\r\n",
            _sse({"type": "response.created", "sequence_number": 0, "response": created}),
            *deltas,
            _sse({"type": "response.completed", "sequence_number": 3, "response": final}),
            end,
        ]

    return answer


@pytest.fixture
def raw():
    with contextlib.ExitStack() as servers:
        yield lambda answer: servers.enter_context(ByteServer(answer))


def on(server: ByteServer, **settings) -> nbopenai.Session:
    settings.setdefault("timeouts", nbopenai.Timeouts(read=3.0))
    return nbopenai.Session(api_key="sk-test", base_url=server.base_url, ledger_path=":memory:", **settings)


# ---- item 8: the answer is complete at response.completed ------------------------------------


@pytest.mark.parametrize(
    "ping", [None, b": ping\n\n", b"event: ping\ndata: {}\n\n"], ids=["silent", "comment", "event"]
)
def test_a_stream_held_open_after_completion_ends_at_completion(raw, ping):
    hold = Hold(_chunk(ping.decode()) if ping else None)
    server = raw(stream_then(hold))
    with on(server) as session:
        answer = session.ask("Hi")
        assert answer.status == "completed" and answer.text == "Hello there" and answer.turn == 1
        assert session.threads.get().head == "resp_raw_1"
        rows = session.usage()
        assert list(rows["status"]) == ["completed"] and list(rows["input_tokens"]) == [12]
    assert hold.ended.wait(timeout=60)
    assert hold.client_closed_first == [True]  # we hung up: the server's silence or pings did not hold us


# ---- item 9: usage the server left out is unknown, not 0 --------------------------------------


@pytest.mark.parametrize("usage", [
    {}, {"input_tokens": None, "output_tokens": None}, {"output_tokens": 3},
    # counts no API sends: a negative one let the budget shrink, a string one raised TypeError out of the ask,
    # and 1e30 was stored and broke session.usage() (OverflowError) for good
    {"input_tokens": -1_000_000, "output_tokens": -1_000_000}, {"input_tokens": "5", "output_tokens": "x"},
    {"input_tokens": 1e30, "output_tokens": True},
], ids=["empty", "nulls", "no-input", "negative", "strings", "huge-and-bool"])
@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
def test_missing_usage_counts_are_estimated_and_a_token_budget_still_trips(raw, usage, stream):
    whole = lambda request: json_reply(200, _response("Hello there", usage))  # noqa: E731
    server = raw(stream_then(b"0\r\n\r\n", usage) if stream else whole)
    with on(server, budget_tokens=40) as session:
        prompt = "Please tell me everything there is to know about the history of the printing press in Europe."
        answer = session.ask(prompt, stream=stream)
        assert answer.usage.estimated and answer.usage.input > 0
        assert answer.footer().count("~") == 2  # the footer marks estimated counts
        row = session.usage().iloc[0]
        assert row["input_tokens"] > 0 and row["output_tokens"] > 0 and row["total_tokens"] > 0
        with pytest.raises(BudgetExceeded):
            session.ask(prompt, stream=stream)


# ---- item 10: several turns on one thread at once --------------------------------------------


def bodies(server):
    return [r.body for r in server.requests if r.path == "/v1/responses" and r.method == "POST"]


def test_twenty_asks_on_one_thread_from_python_threads_are_twenty_turns_in_order(local_server, make):
    session = make()
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda n: session.ask(f"Question number {n}"), range(20)))
    assert sorted(answer.turn for answer in answers) == list(range(1, 21))
    by_turn = {answer.turn: answer for answer in answers}
    history = session.history()
    assert list(history["turn"]) == list(range(1, 21))
    assert list(history["response_id"]) == [by_turn[n].response_id for n in range(1, 21)]
    assert list(history["prompt"]) == [by_turn[n].text.split("“")[1].split("”")[0] for n in range(1, 21)]
    # One after the other: each turn was sent chained on the one before it.
    chained = [body.get("previous_response_id") for body in bodies(local_server)]
    assert sorted(chained, key=str) == sorted([None, *(by_turn[n].response_id for n in range(1, 20))], key=str)
    assert len(session.usage()) == 20


def hold_the_loop(session: nbopenai.Session) -> threading.Event:
    """Block the session's loop thread (where background jobs are polled) until the returned event is set."""
    gate = threading.Event()

    async def blocked() -> None:
        gate.wait(timeout=60)  # blocking on purpose: nothing else runs on the loop meanwhile

    session.loop.submit(blocked())
    return gate


class _ForegroundSink:
    """Opens ``gate`` once the ask holds its thread; at its first text, waits for the job to finish."""

    def __init__(self, gate: threading.Event, job_done: threading.Event) -> None:
        self.gate, self.job_done = gate, job_done

    def started(self, model, thread, notice):
        self.gate.set()

    def text(self, delta, state):
        self.job_done.wait(timeout=60)

    def finished(self, answer):
        pass


def test_a_background_answer_landing_while_an_ask_streams_stays_out_of_the_thread(local_server, make):
    session = make()
    job_done = threading.Event()
    gate = hold_the_loop(session)  # the job is polled only once the foreground ask is under way
    job = session.submit("Tell me about lighthouses.", on_done=lambda job: job_done.set())
    answer = session.ask("Tell me about harbours.", sink=_ForegroundSink(gate, job_done))
    assert job_done.is_set()
    # The job's answer is returned and billed, but the thread had moved on: it is not added.
    assert job.answer.status == "completed" and job.answer.text and job.answer.turn is None
    assert job.answer.notice == f"thread default moved on before {job.id} came back; it was not added to the thread"
    assert answer.turn == 1 and [turn.prompt for turn in session.threads.get().turns] == ["Tell me about harbours."]
    assert sorted(session.usage()["kind"]) == ["ask", "background"]


def test_a_background_answer_joins_its_thread_when_nothing_happened_meanwhile(local_server, make):
    session = make()
    session.ask("My name is Ada.")
    answer = session.submit("What is my name?").wait(timeout=60)
    assert answer.turn == 2 and answer.notice is None and answer.output  # an ask's output items, too
    assert session.threads.get().head == answer.response_id


def test_a_background_answer_does_not_rewrite_a_thread_that_was_reset(local_server, make):
    session = make()
    session.ask("My name is Ada.")
    gate = hold_the_loop(session)
    job = session.submit("What is my name?")
    session.reset()
    gate.set()
    answer = job.wait(timeout=60)
    assert answer.turn is None and "moved on" in answer.notice and session.threads.get().turns == []


def test_a_background_answer_gets_what_an_ask_gets(local_server, make):
    # One recorder finishes both: the near-limit warning, the output items, the cost note.
    session = make()
    session.context_windows = ContextWindows.load().with_windows({"nbopenai-local": 150})
    session.ask("Hello.")
    answer = session.submit("Tell me about the weather in Paris today, please, in some detail.").wait(timeout=60)
    assert answer.turn == 2 and answer.warning.startswith("thread default holds ")
    assert answer.output and answer.output[0]["type"] == "message"
    unpriced = make()
    unpriced.prices = PriceTable({})  # no price for any model: the answer says so
    job = unpriced.submit("Hello.").wait(timeout=60)
    assert job.cost_usd is None and "no price" in job.cost_note

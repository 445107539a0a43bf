"""Session.ask against the local server: what is sent, what the thread and ledger become."""

import io
import json
import threading
from contextlib import closing

import pytest
from _byte_server import ByteServer, json_reply
from _proxies import response_json

import nbopenai
from nbopenai._ledger._usage import Ledger
from nbopenai._turns._printer import StdoutSink


def bodies(server):
    return [r.body for r in server.requests if r.path == "/v1/responses" and r.method == "POST"]


def test_turns_chain_on_the_server_and_instructions_are_resent(local_server, make):
    session = make(instructions="Be brief.")
    first = session.ask("My name is Ada.")
    second = session.ask("What is my name?")
    one, two = bodies(local_server)
    assert "previous_response_id" not in one
    assert two["previous_response_id"] == first.response_id
    assert "My name is Ada" not in str(two["input"])  # the chain carries it, we do not re-send
    assert one["instructions"] == two["instructions"] == "Be brief."
    assert "Ada" in second.text
    assert second.turn == 2 and session.threads.get().head == second.response_id


def test_store_false_resends_items_and_never_chains(local_server, make):
    session = make(store=False)
    session.ask("My name is Grace.")
    answer = session.ask("What is my name?")
    one, two = bodies(local_server)
    assert one["store"] is False and "previous_response_id" not in two
    assert [item["role"] for item in two["input"]] == ["user", "assistant", "user"]
    assert two["input"][0]["content"] == "My name is Grace."
    assert "Grace" in answer.text


def test_named_threads_are_independent_and_new_starts_fresh(local_server, make):
    session = make()
    session.ask("My name is Ada.", thread="a")
    session.ask("My name is Bob.", thread="b")
    assert "Ada" in session.ask("What is my name?", thread="a").text
    session.ask("Hello again", thread="a", new=True)
    assert "previous_response_id" not in bodies(local_server)[-1]
    assert len(session.threads.get("a").turns) == 1


def test_rerunning_a_cell_rewinds_and_replaces_its_turn(local_server, make):
    session = make()
    a1 = session.ask("one", cell_id="c1")
    session.ask("two", cell_id="c2")
    session.ask("three", cell_id="c3")
    again = session.ask("two, edited", cell_id="c2")
    assert bodies(local_server)[-1]["previous_response_id"] == a1.response_id
    assert again.notice == "thread default: re-ran turn 2 of 3, 1 later turn dropped"
    history = session.history()
    assert list(history["prompt"]) == ["one", "two, edited"]


def test_max_output_tokens_gives_an_incomplete_answer_that_still_advances(local_server, make):
    session = make()
    answer = session.ask("Tell me a long story about a cat " * 5, max_output_tokens=16)
    assert answer.status == "incomplete" and answer.partial
    assert "max_output_tokens" in answer.error
    assert session.threads.get().head == answer.response_id


@pytest.mark.parametrize("kind", ["midstream_error", "midstream_error_flat"])
def test_a_mid_stream_failure_keeps_partial_text_and_never_moves_the_thread(local_server, kind, make):
    session = make()
    good = session.ask("My name is Ada.")
    local_server.inject(kind, after=3)
    seen = []

    class Recorder(StdoutSink):
        def finished(self, answer):
            seen.append(answer)

    with pytest.raises(nbopenai.StreamError) as caught:
        session.ask("Please write me something long enough to stream", sink=Recorder(io.StringIO()))
    assert caught.value.partial_text and seen[0].text == caught.value.partial_text
    assert seen[0].status == "failed"
    assert session.threads.get().head == good.response_id
    assert list(session.usage()["status"]) == ["completed", "failed"]


def test_a_dropped_stream_keeps_partial_text_and_thread(local_server, make):
    session = make(max_attempts=1)
    good = session.ask("My name is Ada.")
    local_server.inject("drop", after=3)
    with pytest.raises(nbopenai.APIError) as caught:
        session.ask("Please write me something long enough to stream")
    assert caught.value.partial_text
    assert session.threads.get().head == good.response_id


def test_keyboard_interrupt_mid_stream_keeps_partial_and_thread_and_is_recorded(local_server, make):
    session = make()
    good = session.ask("My name is Ada.")
    finished = []

    class StopAfterThree:
        deltas = 0

        def started(self, *args):
            pass

        def text(self, delta, state):
            self.deltas += 1
            if self.deltas == 3:
                raise KeyboardInterrupt

        def finished(self, answer):
            finished.append(answer)

    with pytest.raises(KeyboardInterrupt):
        session.ask("Please write me something long enough to stream", sink=StopAfterThree())
    [partial] = finished
    assert partial.status == "interrupted" and partial.text
    assert partial.usage.estimated and partial.usage.output > 0
    assert session.threads.get().head == good.response_id
    assert list(session.usage()["status"]) == ["completed", "interrupted"]


def test_a_budget_refuses_before_anything_is_sent(local_server, make):
    session = make(budget_tokens=5)
    with pytest.raises(nbopenai.BudgetExceeded):
        session.ask("This prompt alone is longer than five tokens, surely.")
    assert local_server.requests == []


def test_ledger_rows_match_the_usage_the_server_reported(local_server, make):
    session = make()
    answer = session.ask("Count the words in this sentence please.")
    row = session.usage().iloc[0]
    assert row["response_id"] == answer.response_id
    assert row["input_tokens"] == answer.usage.input > 0
    assert row["output_tokens"] == answer.usage.output > 0
    assert row["ttft_s"] <= row["latency_s"]


def test_stdout_sink_streams_text_then_footer(local_server, make):
    session = make()
    out = io.StringIO()
    answer = session.ask("hello there", sink=StdoutSink(out))
    assert out.getvalue().startswith(answer.text)
    assert answer.footer() in out.getvalue()


def test_background_job_completes_and_joins_its_thread(local_server, make):
    session = make()
    done = []
    job = session.submit("My name is Ada.", on_done=done.append)
    assert job.status in ("queued", "in_progress")
    answer = job.wait(timeout=20)
    assert answer.status == "completed" and done == [job]
    assert session.threads.get().head == job.response_id
    assert bodies(local_server)[0]["background"] is True
    assert list(session.usage()["kind"]) == ["background"]


def test_closing_a_session_with_a_job_running_keeps_its_billed_response_in_the_ledger(local_server, make, tmp_path):
    """The server still runs (and bills) a job the session stops polling: its row says so, estimated.

    Closing used to stop the loop under the poll: no ledger row, a task destroyed pending, and
    (closed before the poll's first step) "coroutine '_poll' was never awaited".
    """
    local_server.configure(background_delay=30)  # still queued when the session closes
    path = tmp_path / "usage.sqlite3"
    session, done = make(ledger_path=str(path)), []
    job = session.submit("My name is Ada.", on_done=done.append)
    session.close()
    assert job.done() and job.status == "interrupted" and done == [job]
    assert job._future.done()  # the poll ended: nothing left pending on a stopped loop
    assert job.wait(timeout=0) is job.answer and job.answer.status == "interrupted"
    assert "still runs it" in job.answer.error and job.response_id in job.answer.error
    with closing(Ledger(path)) as ledger:  # the session closed its own
        (row,) = ledger.records()
    assert (row.kind, row.status, row.response_id) == ("background", "interrupted", job.response_id)
    assert row.estimated and row.input_tokens > 0 and row.error == job.answer.error
    assert session.threads.get().head is None  # nothing came back: the thread did not move


def test_a_job_is_polled_on_the_clients_it_was_submitted_on(local_server, make):
    """A network setting changed right after ``submit`` (the same thread, before the loop ran the poll's first
    step): the job is still polled on the endpoint it was created on, and the billed answer comes back.

    The poll took whatever clients were current when it began, so a ``configure(base_url=...)`` (or a new key)
    in that gap sent every poll elsewhere: a 404, and the job recorded as an error with its answer lost.
    """
    session = make()
    loop, busy, gate = session.loop.loop, threading.Event(), threading.Event()

    def hold() -> None:
        busy.set()
        gate.wait(timeout=30)

    loop.call_soon_threadsafe(hold)  # the loop is busy, as on a loaded machine: the poll has not begun
    assert busy.wait(timeout=30)
    with ByteServer(lambda request: json_reply(404, {"error": {"message": "No such response."}})) as elsewhere:
        try:
            job = session.submit("My name is Ada.")
            session.configure(base_url=elsewhere.base_url)
        finally:
            gate.set()
        answer = job.wait(timeout=30)
        assert not elsewhere.requests  # no poll went to the other endpoint
    assert job.status == "completed" and answer.status == "completed" and answer.text
    assert list(session.usage()["status"]) == ["completed"]


def test_job_numbers_belong_to_their_session(local_server, make):
    """`%nbopenai cancel job-1` names a job of this session: each session counts its own jobs from 1."""
    first, second = make(), make()
    jobs = [first.submit("one"), first.submit("two"), second.submit("three")]
    assert [job.id for job in jobs] == ["job-1", "job-2", "job-1"]
    for job in jobs:
        job.wait(timeout=20)


def test_module_level_ask_uses_the_current_session(local_server, make):
    session = make()
    nbopenai.use_session(session)
    try:
        assert nbopenai.ask("hello").thread == "default"
        assert len(nbopenai.usage()) == 1
    finally:
        nbopenai.use_session(None)


def test_module_level_ask_uses_the_session_just_made(local_server, make):
    """A script: `session = Session(...)` then `nbopenai.ask(...)` asks in that session, not a new one."""
    older = make()
    session = make()
    assert nbopenai.ask("My name is Ada.").thread == "default"
    assert len(session.usage()) == 1 and len(older.usage()) == 0
    with older:  # current inside the block, closed after it
        assert nbopenai.current_session() is older
        nbopenai.ask("hello")
        assert len(older.usage()) == 1
    assert nbopenai.current_session() is session  # the newest still open
    assert "Your name is Ada." in nbopenai.ask("What is my name?").text


def test_settings_from_the_environment_follow_it_explicit_ones_do_not(local_server, monkeypatch):
    """A key fixed after a 401 (`os.environ[...] = ...`) reaches the next request; one given explicitly stays."""
    local_server.configure(require_api_key="sk-right-" + "k" * 24)
    monkeypatch.setenv("OPENAI_BASE_URL", local_server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong-" + "w" * 24)
    followed = nbopenai.Session(model="nbopenai-local", ledger_path=":memory:")
    explicit = nbopenai.Session(model="nbopenai-local", ledger_path=":memory:", api_key="sk-given-" + "g" * 24)
    try:
        with pytest.raises(nbopenai.AuthenticationError) as refused:
            followed.ask("hello")
        assert "os.environ['OPENAI_API_KEY']" in refused.value.hint and "no restart" in refused.value.hint
        monkeypatch.setenv("OPENAI_API_KEY", "sk-right-" + "k" * 24)
        assert followed.ask("hello").status == "completed"
        assert "kkkk" in repr(followed)
        with pytest.raises(nbopenai.AuthenticationError):
            explicit.ask("hello")  # given as api_key=...: the environment does not override it
        followed.configure(api_key="sk-other-" + "o" * 24)  # set explicitly from now on
        monkeypatch.setenv("OPENAI_API_KEY", "sk-right-" + "k" * 24 + "x")
        assert followed.follow_environment() is False and "oooo" in repr(followed)
    finally:
        followed.close()
        explicit.close()


def test_a_key_changed_mid_stream_leaves_the_stream_its_client(local_server):
    """``configure(api_key=...)`` from another thread while an answer streams: the stream ends on the client it began
    on (closed once it is done), and the next ask uses the new key. Before, that client was closed under the stream,
    which broke off mid-answer (billed, and recorded as failed)."""
    first_key, second_key = "sk-test-" + "first" * 5, "sk-test-" + "second" * 4
    begun, go_on = threading.Event(), threading.Event()
    answer = response_json("completed", text="Hello from the raw server.")
    events = [
        {"type": "response.created", "response": {**answer, "status": "in_progress", "output": []},
         "sequence_number": 0},
        {"type": "response.output_text.delta", "delta": "Hello from ", "item_id": "msg_raw1", "output_index": 0,
         "content_index": 0, "sequence_number": 1},
        {"type": "response.output_text.delta", "delta": "the raw server.", "item_id": "msg_raw1", "output_index": 0,
         "content_index": 0, "sequence_number": 2},
        {"type": "response.completed", "response": answer, "sequence_number": 3},
    ]
    frames = [f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events]

    def hold(connection) -> None:
        begun.set()
        go_on.wait(timeout=30)

    def streamed(request):
        if not request.body.get("stream"):
            return json_reply(200, answer)
        head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"
        return [head + frames[0] + frames[1], hold, frames[2] + frames[3]]

    with ByteServer(streamed) as server, nbopenai.Session(base_url=server.base_url, model="nbopenai-local",
                                                         ledger_path=":memory:", api_key=first_key) as session:
        answers: list = []
        asking = threading.Thread(target=lambda: answers.append(session.ask("Hello?", stream=True)))
        asking.start()
        try:
            assert begun.wait(timeout=30)
            streaming_on = session.client
            session.configure(api_key=second_key)
            assert not streaming_on.is_closed()
        finally:
            go_on.set()
            asking.join(timeout=60)
        assert answers and answers[0].status == "completed" and answers[0].text == "Hello from the raw server."
        assert streaming_on.is_closed()
        assert len(server.requests) == 1  # nothing sent again
        session.ask("And now?", stream=False)
        assert [r.headers["authorization"] for r in server.requests] == [f"Bearer {first_key}", f"Bearer {second_key}"]
        assert list(session.usage()["status"]) == ["completed", "completed"]


def test_a_fresh_thread_refused_for_its_length_is_not_told_to_start_fresh(local_server, make):
    session = make()
    session.ask("My name is Ada.")
    local_server.inject("context_length_exceeded", count=2)
    with pytest.raises(nbopenai.ContextLengthExceeded) as long_thread:
        session.ask("And then?")
    assert "--new" in long_thread.value.hint and "compact" in long_thread.value.hint
    with pytest.raises(nbopenai.ContextLengthExceeded) as long_prompt:
        session.ask("A long prompt", new=True)
    assert "--new" not in long_prompt.value.hint and "Shorten the prompt" in long_prompt.value.hint

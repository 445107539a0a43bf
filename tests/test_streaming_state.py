"""StreamState on recorded-shape events: no network, no display."""

from nbopenai._turns._streaming import Completed, Failed, Incomplete, Started, StreamState, TextDelta


def created(rid="resp_1"):
    return {"type": "response.created", "response": {"id": rid, "model": "m"}}


def delta(text):
    return {"type": "response.output_text.delta", "delta": text}


def test_text_accumulates_exactly_and_first_token_time_is_the_first_delta():
    state = StreamState()
    assert state.handle(created(), now=0.0) == [Started("resp_1", "m")]
    for i, piece in enumerate(["Hel", "lo", ", ", "world"]):
        assert state.handle(delta(piece), now=1.0 + i) == [TextDelta(piece)]
    assert state.text == "Hello, world"
    assert state.first_text_at == 1.0
    final = {"id": "resp_1", "status": "completed"}
    assert state.handle({"type": "response.completed", "response": final}) == [Completed(final)]
    assert state.done and state.status == "completed"


def test_flat_error_then_response_failed_is_one_failure_with_the_first_message():
    state = StreamState()
    state.handle(created())
    state.handle(delta("partial"))
    [failed] = state.handle({"type": "error", "code": "server_error", "message": "boom", "param": None})
    assert failed == Failed("boom", "server_error")
    response = {"id": "resp_1", "error": {"code": "other", "message": "later"}}
    [again] = state.handle({"type": "response.failed", "response": response})
    assert again.message == "boom" and state.status == "failed"
    assert state.text == "partial"


def test_response_failed_alone_carries_its_error():
    state = StreamState()
    [failed] = state.handle({"type": "response.failed", "response": {"error": {"code": "x", "message": "why"}}})
    assert failed.message == "why" and failed.code == "x"


def test_incomplete_keeps_reason():
    state = StreamState()
    state.handle(delta("cut"))
    response = {"status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}}
    assert state.handle({"type": "response.incomplete", "response": response}) == [
        Incomplete(response, "max_output_tokens")
    ]
    assert state.status == "incomplete" and state.text == "cut"


def test_unknown_events_are_ignored():
    state = StreamState()
    assert state.handle({"type": "response.content_part.added"}) == []
    assert not state.done

"""Live views: the throttle's arithmetic (fake clock) and ``AnswerView`` over a recording comm."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import nbopenai.widgets as widgets
from nbopenai import Answer, Usage
from nbopenai._turns._streaming import StreamState
from nbopenai.widgets import AnswerView, Throttle
from nbopenai.widgets._answer_widget import AnswerWidget

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


class FakeClock:
    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_throttle_coalesces_twenty_thousand_deltas():
    clock = FakeClock(step=0.0001)  # 20,000 deltas over 2 seconds
    throttle = Throttle(rate=20, clock=clock)
    sent = sum(throttle.ready() for _ in range(20_000))
    assert sent == throttle.sent
    assert 20 <= sent <= 20 * 2 + 2
    assert throttle.pending  # the tail was held back: the view's final update carries it


def test_throttle_lets_the_first_update_through_and_spaces_the_rest():
    times = iter([0.0, 0.01, 0.049, 0.05, 0.06, 0.2])
    throttle = Throttle(rate=20, clock=lambda: next(times))
    assert [throttle.ready() for _ in range(6)] == [True, False, False, True, False, True]
    assert not throttle.pending


def test_throttle_rejects_a_non_positive_rate():
    with pytest.raises(ValueError):
        Throttle(rate=0)


class FakeHandle:
    def __init__(self, obj):
        self.shown = obj
        self.updates: list[dict] = []

    def update(self, bundle, raw=False, metadata=None):
        assert raw
        self.updates.append(bundle)
        self.metadata = metadata


def _answer(text: str, **fields) -> Answer:
    fields.setdefault("usage", Usage(input=10, output=20))
    return Answer(text=text, model="nbopenai-local", thread="default", turn=1, **fields)


def _view(recording_comm, **kwargs):
    handles: list[FakeHandle] = []

    def display(obj):
        handles.append(FakeHandle(obj))
        return handles[-1]

    view = AnswerView(display=display, **kwargs)
    return view, handles


def _widget_comm(recording_comm, view):
    return next(c for c in recording_comm.comms if c.comm_id == view.widget.model_id)


def _appended(comm) -> str:
    """The text the front-end shows: the deltas, appended (a reset starts over)."""
    text = ""
    for message in comm.messages:
        content = message.get("content", {}) if message.get("method") == "custom" else {}
        if "reset" in content:
            text = content["reset"]
        text += content.get("append", "")
    return text


def _bytes_sent(recording_comm) -> int:
    """Every byte the widgets' comms sent (opening state included), as JSON on the wire."""
    payloads = [c.open_data for c in recording_comm.comms] + recording_comm.messages
    return sum(len(json.dumps(p, ensure_ascii=False).encode()) for p in payloads if p is not None)


def _stream(view, deltas, state=None):
    state = state or StreamState()
    for delta in deltas:
        state.handle({"type": "response.output_text.delta", "delta": delta})
        view.text(delta, state)
    return state


def test_answer_view_streams_few_updates_each_carrying_only_what_is_new(recording_comm):
    view, handles = _view(recording_comm, render=lambda a: a._repr_mimebundle_(), rate=20, clock=FakeClock(0.0001))
    view.started("nbopenai-local", "default", None)
    widget = _widget_comm(recording_comm, view)
    state = _stream(view, [f"w{i} " for i in range(20_000)])
    view.finished(_answer(state.text))

    assert len(handles) == 1  # displayed once, never redisplayed
    assert _appended(widget) == state.text  # the tail the throttle held back was sent at the end
    appends = [m for m in widget.messages if m.get("method") == "custom"]
    assert len(appends) <= 20 * 2 + 3
    assert len(recording_comm.messages) < 60  # all widgets together, not one message per delta
    answer_size = len(state.text.encode())
    assert _bytes_sent(recording_comm) <= 3 * answer_size  # was ~20x: the whole text so far, every update
    assert all("text" not in m.get("state", {}) for m in widget.messages)  # never the whole text as state
    final = handles[0].updates[-1]
    assert final["text/markdown"].startswith("w0 w1 ") and "nbopenai-local" in final["text/markdown"]
    assert all(comm.closed for comm in recording_comm.comms)  # replaced by the static output, then closed


@pytest.mark.parametrize(("words", "seconds"), [(2_000, 4), (8_000, 20), (20_000, 60)])
def test_bytes_sent_stay_within_three_times_the_answer_at_any_length_and_duration(recording_comm, words, seconds):
    view, _ = _view(recording_comm, render=lambda a: a._repr_mimebundle_(), clock=FakeClock(seconds / words))
    view.started("nbopenai-local", "default", None)
    state = _stream(view, [f"word{i} " for i in range(words)])
    view.finished(_answer(state.text))
    assert view.throttle.sent <= 20 * seconds + 2
    assert _bytes_sent(recording_comm) <= 3 * len(state.text.encode())


def test_a_new_response_of_the_same_turn_starts_the_text_over(recording_comm):
    view, _ = _view(recording_comm, render=lambda a: a._repr_mimebundle_(), clock=FakeClock(1.0))
    view.started("m", "t", None)
    widget = _widget_comm(recording_comm, view)
    _stream(view, ["Let me ", "look that up."])
    second = _stream(view, ["It is ", "42."])  # the tool loop's next response
    view.finished(_answer(second.text))
    assert _appended(widget) == "It is 42."


def test_a_final_text_that_does_not_continue_the_stream_replaces_it(recording_comm):
    view, _ = _view(recording_comm, render=lambda a: a._repr_mimebundle_(), clock=FakeClock(1.0))
    view.started("m", "t", None)
    widget = _widget_comm(recording_comm, view)
    _stream(view, ["draft ", "text"])
    view.finished(_answer("the exact final text"))
    assert _appended(widget) == "the exact final text"


def test_answer_view_sends_server_strings_as_text_and_marks_partial_answers(recording_comm):
    view, handles = _view(recording_comm, render=lambda a: a._repr_mimebundle_(), close_widget=False)
    view.started("m", "default", "thread default: re-ran turn 1 of 2, 1 later turn dropped")
    assert "re-ran turn 1 of 2" in view.widget.header
    _stream(view, ["<script>x</script>"])
    assert _appended(_widget_comm(recording_comm, view)) == "<script>x</script>"  # shown with textContent
    assert "innerHTML" not in view.widget._esm and "insertAdjacentHTML" not in view.widget._esm
    view.finished(_answer("<script>x</script>", status="interrupted", error="interrupted by the user"))
    assert "[interrupted" in view.widget.status
    assert "[interrupted" in handles[0].updates[-1]["text/plain"]


def test_answer_view_lists_tool_calls_while_streaming(recording_comm):
    view, _ = _view(recording_comm)
    view.started("m", "t", None)
    view.tool_call("add", {"a": 1, "b": 2}, 3)
    assert "add" in view.widget.footer and "→ 3" in view.widget.footer


def test_answer_view_without_render_keeps_the_widget_with_the_whole_text_once(recording_comm):
    view, handles = _view(recording_comm, clock=FakeClock(1.0))
    view.started("m", "t", None)
    _stream(view, ["do", "ne"])
    view.finished(_answer("done"))
    assert handles[0].updates == [] and view.widget.text == "done"  # in its state: a re-render shows it
    widget = _widget_comm(recording_comm, view)
    assert [m["state"]["text"] for m in widget.messages if "text" in m.get("state", {})] == ["done"]
    assert not widget.messages[-1]["state"]["streaming"]
    assert not any(comm.closed for comm in recording_comm.comms)


def test_discard_removes_a_view_that_got_no_answer(recording_comm):
    view, handles = _view(recording_comm, render=lambda a: a._repr_mimebundle_())
    with view:
        view.started("m", "t", None)
    assert handles[0].updates == [{"text/plain": ""}]
    assert all(comm.closed for comm in recording_comm.comms)


def test_discard_after_finished_keeps_the_answer(recording_comm):
    view, handles = _view(recording_comm, render=lambda a: a._repr_mimebundle_())
    with view:
        view.started("m", "t", None)
        view.finished(_answer("kept"))
    assert len(handles[0].updates) == 1 and "kept" in handles[0].updates[0]["text/plain"]


def test_queued_then_finished_fills_in_and_keeps_the_widget_for_background(recording_comm):
    view, handles = _view(recording_comm, render=lambda a: a._repr_mimebundle_(), close_widget=False)
    view.queued("m", "default", "job-7")
    assert "queued" in view.widget.note and "job-7" in view.widget.note
    view.finished(_answer("background answer"))
    view.queued("m", "default", "job-7")  # a late "queued" never overwrites the answer
    assert view.widget.text == "background answer"
    assert "background answer" in handles[0].updates[-1]["text/markdown"]
    assert not any(comm.closed for comm in recording_comm.comms)


def test_without_the_widget_front_end_the_live_view_says_what_it_needs():
    widget = AnswerWidget(header="⏳ m · thread t")
    try:
        bundle, _ = widget._repr_mimebundle_()
        assert bundle["text/plain"].startswith("AnswerWidget(")
        assert "widgets front-end" in bundle["text/plain"]
    finally:
        for part in (widget.layout, widget):  # the layout is a widget of its own: open, it lives to exit
            part.close()


def test_the_package_exports_its_views_lazily():
    for name in widgets.__all__:
        assert getattr(widgets, name).__name__ == name


def test_importing_the_widgets_package_loads_no_ipywidgets():
    code = "import sys, nbopenai.widgets; print('ipywidgets' in sys.modules, 'pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_the_header_names_the_thread_once_and_uses_no_glyph_that_a_font_may_lack(recording_comm):
    view, _ = _view(recording_comm)
    view.started("nbopenai-local", "default", "thread default: re-ran turn 2 of 2")
    working = view.widget.header
    assert working == "nbopenai-local · thread default — re-ran turn 2 of 2 · answering…"  # words, no ⏳
    view.finished(_answer("done", notice="thread default: re-ran turn 2 of 2"))
    assert view.widget.header == "nbopenai-local · thread default — re-ran turn 2 of 2"
    queued, _ = _view(recording_comm)
    queued.queued("nbopenai-local", "default", "job-1")
    assert queued.widget.header == "nbopenai-local · thread default · answering…"

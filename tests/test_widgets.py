"""Live views: the throttle's arithmetic (fake clock) and ``AnswerView`` over a recording comm."""

from __future__ import annotations

import subprocess
import sys

import pytest

from nbopenai import Answer, Usage
from nbopenai._turns._streaming import StreamState
from nbopenai.widgets import Throttle

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

    def update(self, bundle, raw=False):
        assert raw
        self.updates.append(bundle)


def _answer(text: str, **fields) -> Answer:
    fields.setdefault("usage", Usage(input=10, output=20))
    return Answer(text=text, model="nbopenai-local", thread="default", turn=1, **fields)


def _view(recording_comm, **kwargs):
    from nbopenai.widgets import AnswerView

    handles: list[FakeHandle] = []

    def display(obj):
        handles.append(FakeHandle(obj))
        return handles[-1]

    view = AnswerView(display=display, **kwargs)
    return view, handles


def _value_updates(comm):
    return [m["state"]["value"] for m in comm.messages if m.get("method") == "update" and "value" in m["state"]]


def test_answer_view_streams_few_updates_and_ends_exact(recording_comm):
    view, handles = _view(recording_comm, render=lambda a: a._repr_mimebundle_(), rate=20, clock=FakeClock(0.0001))
    state = StreamState()
    view.started("nbopenai-local", "default", None)
    body = next(c for c in recording_comm.comms if c.comm_id == view.body.model_id)
    for i in range(20_000):
        delta = f"w{i} "
        state.handle({"type": "response.output_text.delta", "delta": delta})
        view.text(delta, state)
    view.finished(_answer(state.text))

    assert len(handles) == 1  # displayed once, never redisplayed
    updates = _value_updates(body)
    assert len(updates) <= 20 * 2 + 3
    assert "w19999 " in updates[-1] and "▌" not in updates[-1]  # the last update is exact
    assert len(recording_comm.messages) < 60  # all widgets together, not one message per delta
    final = handles[0].updates[-1]
    assert final["text/markdown"].startswith("w0 w1 ") and "nbopenai-local" in final["text/markdown"]
    assert all(comm.closed for comm in recording_comm.comms)  # replaced by the static output, then closed


def test_answer_view_escapes_html_and_marks_partial_answers(recording_comm):
    view, handles = _view(recording_comm, render=lambda a: a._repr_mimebundle_())
    state = StreamState()
    view.started("m", "default", "thread default: re-ran turn 1 of 2, 1 later turn dropped")
    assert "re-ran turn 1 of 2" in view.header.value
    state.handle({"type": "response.output_text.delta", "delta": "<script>x</script>"})
    view.text("<script>x</script>", state)
    assert "<script>" not in view.body.value and "&lt;script&gt;" in view.body.value
    view.finished(_answer(state.text, status="interrupted", error="interrupted by the user"))
    assert "[interrupted" in view.footer.value
    assert "[interrupted" in handles[0].updates[-1]["text/plain"]


def test_answer_view_lists_tool_calls_while_streaming(recording_comm):
    view, _ = _view(recording_comm)
    view.started("m", "t", None)
    view.tool_call("add", {"a": 1, "b": 2}, 3)
    assert "add" in view.footer.value and "→ 3" in view.footer.value


def test_answer_view_without_render_keeps_the_widget(recording_comm):
    view, handles = _view(recording_comm)
    view.started("m", "t", None)
    view.finished(_answer("done"))
    assert handles[0].updates == [] and "done" in view.body.value
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
    assert "queued" in view.body.value and "job-7" in view.body.value
    view.finished(_answer("background answer"))
    view.queued("m", "default", "job-7")  # a late "queued" never overwrites the answer
    assert "background answer" in view.body.value
    assert "background answer" in handles[0].updates[-1]["text/markdown"]
    assert not any(comm.closed for comm in recording_comm.comms)


def test_the_package_exports_its_views_lazily():
    import nbopenai.widgets as widgets

    for name in widgets.__all__:
        assert getattr(widgets, name).__name__ == name


def test_importing_the_widgets_package_loads_no_ipywidgets():
    code = "import sys, nbopenai.widgets; print('ipywidgets' in sys.modules, 'pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]

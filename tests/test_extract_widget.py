"""The extraction progress widget: shown once, values updated at a throttled rate, a static line at the end."""

from __future__ import annotations

import io
import threading
from typing import Any

import pytest

from nbopenai._extract._progress import CallbackProgress, NoProgress, Snapshot, TextProgress, choose_view
from nbopenai.widgets._progress import ExtractProgressWidget


def snapshot(done: int, total: int = 10, failed: int = 0, **fields: Any) -> Snapshot:
    values = dict(total=total, done=done, ok=done - failed, failed=failed, retrying=0, cached=0,
                  input_tokens=100 * done, output_tokens=10 * done, cost_usd=0.001 * done, elapsed_s=1.0, limit=4)
    values.update(fields)
    return Snapshot(**values)


class Handle:
    def __init__(self) -> None:
        self.updates: list[dict[str, Any]] = []

    def update(self, bundle: dict[str, Any], raw: bool = False) -> None:
        self.updates.append(bundle)


@pytest.fixture
def widget(recording_comm):
    now = [0.0]
    shown: list[Any] = []
    handle = Handle()

    def display(obj: Any) -> Handle:
        shown.append(obj)
        return handle

    view = ExtractProgressWidget(rate=10, clock=lambda: now[0], display=display)
    return view, now, shown, handle


def test_shown_once_and_updated_in_place(widget):
    view, now, shown, handle = widget
    view.update(snapshot(1))
    now[0] = 0.2
    view.update(snapshot(5, retrying=2))
    assert shown == [view.box]
    assert view.bar.value == 5 and view.bar.max == 10
    assert "5/10" in view.label.value and "2 retrying" in view.label.value


def test_updates_are_throttled_but_the_last_is_exact(widget, recording_comm):
    view, now, shown, handle = widget
    view.update(snapshot(1))
    sent = len(recording_comm.messages)
    for done in range(2, 9):  # all within one tenth of a second: held back
        view.update(snapshot(done))
    assert len(recording_comm.messages) == sent and view.bar.value == 1
    view.close(snapshot(10, failed=2, finished=True))
    assert view.bar.value == 10 and view.bar.bar_style == "warning"
    final = handle.updates[-1]
    assert "10/10" in final["text/plain"] and "2 failed" in final["text/plain"] and "text/html" in final
    assert all(comm.closed for comm in recording_comm.comms)


def test_close_twice_is_harmless(widget):
    view, now, shown, handle = widget
    view.close(snapshot(10, finished=True))
    view.close(snapshot(10, finished=True))
    view.update(snapshot(10))
    assert len(handle.updates) == 1


def test_text_progress_rewrites_one_line(capsys):
    stream = io.StringIO()
    view = TextProgress(stream)
    view.update(snapshot(3))
    view.update(snapshot(3))  # nothing new: nothing written
    view.close(snapshot(10, finished=True))
    text = stream.getvalue()
    assert text.count("\r") == 2 and text.endswith("\n")
    assert "extract 10/10" in text and "$0.0100" in text


def test_choose_view():
    assert isinstance(choose_view(False), NoProgress)
    assert isinstance(choose_view(True), TextProgress)  # not in a kernel
    seen = []
    view = choose_view(seen.append)
    assert isinstance(view, CallbackProgress)
    view.update(snapshot(1))
    assert seen[0].done == 1
    with pytest.raises(TypeError):
        choose_view(3)


def test_a_background_close_keeps_the_filled_in_widget(widget):
    view, now, shown, handle = widget
    view.show()
    worker = threading.Thread(target=view.close, args=(snapshot(10, finished=True),))
    worker.start()
    worker.join()
    assert shown == [view.box] and handle.updates == []  # not replaced from another thread
    assert view.bar.value == 10 and "10/10" in view.label.value

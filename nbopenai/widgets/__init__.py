"""Live notebook views. Importing this package loads no ipywidgets; the views import it when built.

- ``AnswerView``: a streaming answer (an ``AskSink``), replaced by a static mime bundle at the end.
- ``Throttle``: the coalescing rule the views share (pure, clock injectable).
"""

from __future__ import annotations

from typing import Any

from ._throttle import Throttle

__all__ = ["AnswerView", "Throttle"]


def __getattr__(name: str) -> Any:
    if name == "AnswerView":
        from ._answer_view import AnswerView

        return AnswerView
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

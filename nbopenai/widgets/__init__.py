"""Live notebook views. Importing this package loads no ipywidgets; the views import it when built.

- ``AnswerView``: a streaming answer (an ``AskSink``), replaced by a static mime bundle at the end.
- ``ExtractProgressWidget``: an extraction's progress bar, likewise replaced when the run ends.
- ``Throttle``: the coalescing rule the views share (pure, clock injectable).
"""

from __future__ import annotations

import importlib
from typing import Any

from ._throttle import Throttle

__all__ = ["AnswerView", "ExtractProgressWidget", "Throttle"]

_LAZY = {"AnswerView": "._answer_view", "ExtractProgressWidget": "._progress"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

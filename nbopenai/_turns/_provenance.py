"""Provenance read back from a saved notebook: the ``nbopenai`` metadata each answer's output carries.

``Answer.provenance`` writes it (response id, model, thread, turn, usage, cost, time, version) into
the metadata of the answer's static output; a notebook saved by Jupyter, nbconvert or papermill
keeps it, and ``read_provenance`` lists it, one row per answer. The notebook is read as plain JSON
(no nbformat needed) and pandas is imported only here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["COLUMNS", "read_provenance"]

COLUMNS = (
    "cell", "cell_id", "execution_count", "response_id", "model", "thread", "turn", "status",
    "input_tokens", "cached_tokens", "output_tokens", "reasoning_tokens", "estimated",
    "cost_usd", "latency_s", "answered_at", "replayed", "nbopenai_version",
)
_USAGE = {"input_tokens": "input", "cached_tokens": "cached", "output_tokens": "output",
          "reasoning_tokens": "reasoning", "estimated": "estimated"}


def _rows(notebook: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for index, cell in enumerate(notebook.get("cells") or []):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        for output in cell.get("outputs") or []:
            kept = (output.get("metadata") or {}).get("nbopenai") if isinstance(output, dict) else None
            if not isinstance(kept, dict):
                continue
            usage = kept.get("usage") if isinstance(kept.get("usage"), dict) else {}
            row = {"cell": index, "cell_id": cell.get("id"), "execution_count": cell.get("execution_count")}
            row.update({name: kept.get(name) for name in COLUMNS if name not in row})
            row.update({name: usage.get(key) for name, key in _USAGE.items()})
            row["nbopenai_version"] = kept.get("nbopenai")
            rows.append(row)
    return rows


def read_provenance(path: str | os.PathLike[str]) -> Any:
    """One row per answer saved in the notebook at ``path`` (columns ``COLUMNS``), as a DataFrame."""
    import pandas as pd  # noqa: PLC0415 - pandas loads when a frame is made

    notebook = json.loads(Path(path).read_text(encoding="utf-8"))
    frame = pd.DataFrame(_rows(notebook), columns=list(COLUMNS))
    frame["answered_at"] = pd.to_datetime(frame["answered_at"], utc=True, errors="coerce")
    return frame

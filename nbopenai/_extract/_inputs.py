"""What to extract from: one text, a list, a dict, a pandas Series or a one-column DataFrame.

Whatever the shape, it becomes a list of texts (``None`` where a value is missing) and the index
the result frame will carry: the Series' or DataFrame's own index, a dict's keys, or 0..n-1.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._core._errors import UsageError

if TYPE_CHECKING:
    import pandas

__all__ = ["Inputs", "as_inputs"]


@dataclass(frozen=True)
class Inputs:
    texts: list[str | None]
    index: pandas.Index

    def __len__(self) -> int:
        return len(self.texts)


def _text(value: Any) -> str | None:
    if type(value) is str:  # the common case, checked first: this runs once per row
        return value
    if value is None:
        return None
    import pandas as pd  # noqa: PLC0415 - pandas loads when a frame is made

    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):  # a list or array: not a missing scalar
        pass
    return str(value)


def as_inputs(texts: Any) -> Inputs:
    """Normalise ``texts`` (see the module docstring); raises ``UsageError`` for what cannot be texts."""
    import pandas as pd  # noqa: PLC0415 - pandas loads when a frame is made

    if isinstance(texts, str):
        return Inputs([texts], pd.RangeIndex(1))
    if isinstance(texts, pd.DataFrame):
        if texts.shape[1] != 1:
            raise UsageError(
                f"got a DataFrame with {texts.shape[1]} columns; pass the column to extract from, e.g. df['text']"
            )
        texts = texts.iloc[:, 0]
    if isinstance(texts, pd.Series):
        return Inputs([_text(v) for v in texts.tolist()], texts.index)
    if isinstance(texts, pd.Index):
        return Inputs([_text(v) for v in texts.tolist()], pd.RangeIndex(len(texts)))
    if isinstance(texts, Mapping):
        return Inputs([_text(v) for v in texts.values()], pd.Index(list(texts.keys())))
    if isinstance(texts, (bytes, bytearray)) or not isinstance(texts, Iterable):
        raise UsageError(
            f"expected a text, a list of texts, a dict or a pandas Series/column, not {type(texts).__name__}"
        )
    values = [_text(v) for v in texts]
    return Inputs(values, pd.RangeIndex(len(values)))

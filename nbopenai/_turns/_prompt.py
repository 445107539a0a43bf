"""Prompt building: ``{name}`` interpolation from a namespace, in one pass.

Rules (chosen so that code and JSON in prompts survive, and no value can smuggle in another):

- ``{name}`` where ``name`` is a plain identifier present in the namespace is replaced by the
  value's text; a pandas DataFrame/Series becomes a compact Markdown preview bounded in tokens.
- ``{In[n]}``, ``{Out[n]}``, ``{Err[n]}`` (``n`` a whole number, negative counting back from the
  latest) are cell references, resolved by the ``references`` callable the caller passes (the
  IPython edge keeps the records; this module never imports IPython). Without one they stay literal.
- Anything else in braces (``{x.y}``, ``{0}``, ``{"a": 1}``, ``{In[x]}``) stays literal. A plain
  ``{name}`` or a cell reference that resolves to nothing stays literal too, and ``fill`` lists it
  (``left_as_written``) so the cell can say so before sending.
- ``{{`` and ``}}`` are escapes for ``{`` and ``}``.
- One pass: inserted text is never scanned again, so a value containing ``{secret}`` stays
  literally ``{secret}``. No attribute access, indexing or evaluation ever happens.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .._core._tokens import count_tokens

__all__ = ["CELL_KINDS", "PREVIEW_TOKEN_BUDGET", "Filled", "References", "fill", "interpolate", "preview", "short"]

CELL_KINDS = ("In", "Out", "Err")
_TOKEN = re.compile(
    r"\{\{|\}\}|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)\}|\{(?P<kind>In|Out|Err)\[(?P<index>-?[0-9]{1,9})\]\}"
)
# ``references(kind, index)``: the value of ``{In[3]}`` (kind "In", index 3); LookupError when there is none.
References = Callable[[str, int], Any]
PREVIEW_TOKEN_BUDGET = 1500
_CELL_CHARS = 60
_MAX_COLUMNS = 40  # a wider frame shows its first columns and says how many more


@dataclass(frozen=True)
class Filled:
    """A prompt after interpolation, and the tokens that named nothing and stayed as typed."""

    text: str
    left_as_written: tuple[str, ...] = ()

    def left_note(self) -> str | None:
        """The one line a cell shows before sending ("left as written: {undefined_var}"), if any."""
        return f"left as written: {', '.join(self.left_as_written)}" if self.left_as_written else None


def fill(
    template: str,
    namespace: Mapping[str, Any],
    *,
    render: Callable[[str, Any], str | None] | None = None,
    references: References | None = None,
) -> Filled:
    """``template`` with ``{name}`` and cell references replaced (see the module docstring).

    ``render(name, value)``, when given, may return the text for a value itself (``None`` means
    the usual ``preview``); ``_images.interpolate_with_images`` uses it to lift figures out.
    """
    left: dict[str, None] = {}  # ordered, each token once

    def replace(match: re.Match[str]) -> str:
        token = match.group(0)
        if token == "{{":
            return "{"
        if token == "}}":
            return "}"
        if (name := match.group("name")) is not None:
            if name not in namespace:
                left[token] = None
                return token
            if render is not None and (text := render(name, namespace[name])) is not None:
                return text
            return preview(namespace[name])
        if references is None:
            return token
        try:
            value = references(match.group("kind"), int(match.group("index")))
        except LookupError:
            left[token] = None
            return token
        return value if isinstance(value, str) else preview(value)

    text = _TOKEN.sub(replace, template)
    return Filled(text, tuple(left))


def interpolate(
    template: str,
    namespace: Mapping[str, Any],
    *,
    render: Callable[[str, Any], str | None] | None = None,
    references: References | None = None,
) -> str:
    """``fill``'s text: ``template`` with ``{name}`` (and cell references, given ``references``) replaced."""
    return fill(template, namespace, render=render, references=references).text


def _is_pandas(value: Any, kind: str) -> bool:
    cls = type(value)
    return cls.__name__ == kind and cls.__module__.startswith("pandas")


def _is_float(value: Any) -> bool:
    return isinstance(value, float) or type(value).__name__ in ("float16", "float32", "float64", "longdouble")


def short(value: Any, limit: int = _CELL_CHARS) -> str:
    """``value`` as one short line: floats rounded to 6 significant digits, at most ``limit`` characters."""
    text = f"{value:.6g}" if _is_float(value) else str(value)
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"



def _table(parts: list[Any], columns: int) -> str:
    """A Markdown table of the frames in ``parts`` (head, then tail), a ``…`` row between them."""
    shown = parts[0].columns[:columns]
    header = ["", *map(short, shown), *(["…"] if len(parts[0].columns) > columns else [])]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for number, part in enumerate(parts):
        if number:
            lines.append("| " + " | ".join(["…"] * len(header)) + " |")
        part = part.iloc[:, :columns]
        for index, row in zip(part.index, part.itertuples(index=False), strict=False):
            cells = [short(index), *map(short, row), *(["…"] if len(header) > len(row) + 1 else [])]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _as_frame(part: Any) -> Any:
    if not _is_pandas(part, "Series"):
        return part
    return part.to_frame(name=part.name if part.name is not None else "value")


def _sampled(data: Any, rows: int) -> list[Any]:
    """``data``'s first and last rows, ``rows`` in all (all of it if that short): never the whole of a big one."""
    if rows >= len(data):
        return [_as_frame(data)]
    head = (rows + 1) // 2
    return [_as_frame(data.head(head)), *([_as_frame(data.tail(rows - head))] if rows - head else [])]


def _schema(frame: Any, columns: int) -> str:
    shown = ", ".join(f"{short(c)}: {t}" for c, t in list(frame.dtypes.items())[:columns])
    more = len(frame.columns) - columns
    return shown + (f", … {more:,} more columns" if more > 0 else "")


def _frame_preview(data: Any, budget: int) -> str:
    """A DataFrame or Series: shape, dtypes, and head and tail rows as a Markdown table, within ``budget`` tokens."""
    if _is_pandas(data, "Series"):
        name = f" {short(data.name)!r}" if data.name is not None else ""
        head = f"Series{name} with {len(data):,} values ({data.dtype})"
        columns = 1
    else:
        columns = min(data.shape[1], _MAX_COLUMNS)
        head = f"DataFrame with {len(data):,} rows × {data.shape[1]} columns ({_schema(data, columns)})"
    rows = min(len(data), 20)
    while True:
        text = f"{head}\n\n{_table(_sampled(data, rows), columns)}" if rows else head
        if rows < len(data):
            text += f"\n\n({len(data) - rows:,} more rows not shown)"
        if rows == 0 or count_tokens(text) <= budget:
            return text
        rows //= 2


def preview(value: Any, budget: int = PREVIEW_TOKEN_BUDGET) -> str:
    """The text a value contributes to a prompt (DataFrames and Series as bounded previews)."""
    if _is_pandas(value, "DataFrame") or _is_pandas(value, "Series"):
        return _frame_preview(value, budget)
    return str(value)

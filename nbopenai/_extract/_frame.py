"""Results to a DataFrame: one row per input (or per item with ``many``), aligned to the input's index.

Columns come from the strict schema, computed once per extraction: nested objects flatten to dotted
names (``address.city``); an optional object's fields become nullable; lists, unions of several
kinds and recursive fields stay Python objects. Dtypes follow the types:

==========================  ===================================
integer                     ``Int64`` (nullable)
number                      ``float64``
boolean                     ``boolean`` (nullable)
string                      ``string``
date-time / date            ``datetime64`` (UTC when the values carry a timezone)
duration                    ``timedelta64``
``Literal`` / ``Enum``      ``category`` (the allowed values, in order)
anything else               ``object``
==========================  ===================================

Every row also carries ``_status``, ``_error``, ``_attempts``, the token counts, ``_cost_usd``,
``_response_id``, ``_latency_s`` and ``_from_cache``. With ``many`` a source's request columns
repeat on each of its item rows, but tokens and cost sit on its first row only (the others hold 0),
so ``df._cost_usd.sum()`` stays right; ``_n_items`` counts the source's items, and a source with
none (or a failed one) keeps one row, item 0, with empty fields.

pandas is imported inside the functions: ``import nbopenai`` must stay light.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._rows import STATUSES, RowResult

if TYPE_CHECKING:
    import pandas

    from ._format import StrictFormat

__all__ = ["Column", "columns_for", "build_frame"]

_KIND_BY_TYPE = {"integer": "int", "number": "float", "boolean": "bool", "string": "string", "array": "object"}
_KIND_BY_FORMAT = {"date-time": "datetime", "date": "datetime", "duration": "duration"}


@dataclass(frozen=True)
class Column:
    """One output column: its dotted name, the keys that reach it in a dumped item, its kind."""

    name: str
    keys: tuple[str, ...]
    kind: str
    categories: tuple[Any, ...] = ()


def _types(node: dict[str, Any]) -> list[str]:
    kind = node.get("type")
    kinds = kind if isinstance(kind, list) else [kind] if isinstance(kind, str) else []
    return [k for k in kinds if k != "null"]


class _Columns:
    def __init__(self, defs: dict[str, Any]) -> None:
        self.defs = defs

    def resolve(self, node: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        ref = node.get("$ref")
        if isinstance(ref, str):
            name = ref.rsplit("/", 1)[-1]
            return self.defs.get(name, {}), name
        return node, None

    def walk(self, node: dict[str, Any], keys: tuple[str, ...], stack: frozenset[str]) -> list[Column]:
        name = ".".join(keys) or "value"
        node, ref = self.resolve(node)
        if ref is not None:
            if ref in stack:  # a recursive field: keep the nested value whole
                return [Column(name, keys, "object")]
            stack = stack | {ref}
        if "anyOf" in node:
            branches = [b for b in node["anyOf"] if self.resolve(b)[0].get("type") != "null"]
            if len(branches) == 1:
                return self.walk(branches[0], keys, stack)
            return [Column(name, keys, "object")]
        if isinstance(node.get("enum"), list):
            values = tuple(v for v in node["enum"] if v is not None)
            return [Column(name, keys, "category", values)]
        types = _types(node)
        if types == ["object"] and isinstance(node.get("properties"), dict) and (node["properties"] or not keys):
            found: list[Column] = []
            for key, sub in node["properties"].items():
                found.extend(self.walk(sub, (*keys, key), stack))
            return found
        if len(types) != 1:
            return [Column(name, keys, "object")]
        kind = (
            _KIND_BY_FORMAT.get(node.get("format"), _KIND_BY_TYPE.get(types[0], "object"))
            if types[0] == "string"
            else _KIND_BY_TYPE.get(types[0], "object")
        )
        return [Column(name, keys, kind)]


def columns_for(fmt: StrictFormat) -> tuple[Column, ...]:
    """The data columns of one extracted item, from the strict schema (computed once)."""
    return tuple(_Columns(fmt.defs).walk(fmt.item_schema, (), frozenset()))


def _pick(dumped: Any, keys: tuple[str, ...]) -> Any:
    for key in keys:
        if not isinstance(dumped, dict):
            return None
        dumped = dumped.get(key)
    return dumped


def _dump(item: Any) -> Any:
    return item.model_dump(mode="python", by_alias=True) if hasattr(item, "model_dump") else item


def _typed(values: list[Any], column: Column) -> Any:
    """``values`` as an array of the column's dtype; ``object`` when they do not fit it."""
    import pandas as pd  # noqa: PLC0415 - pandas loads when a frame is made

    kind = column.kind
    try:
        if kind == "int":
            return pd.array(values, dtype="Int64")
        if kind == "float":
            return pd.array(values, dtype="float64")
        if kind == "bool":
            return pd.array(values, dtype="boolean")
        if kind == "string":
            return pd.array(values, dtype="string")
        if kind == "category":
            plain = [v.value if isinstance(v, enum.Enum) else v for v in values]
            return pd.Categorical(plain, categories=list(dict.fromkeys(column.categories)))
        if kind == "datetime":
            aware = any(getattr(v, "tzinfo", None) is not None for v in values)
            return pd.to_datetime(pd.Series(values, dtype=object), utc=aware).array
        if kind == "duration":
            return pd.to_timedelta(pd.Series(values, dtype=object)).array
    except (TypeError, ValueError, OverflowError):
        pass
    import numpy as np  # noqa: PLC0415 - pandas loads when a frame is made

    out = np.empty(len(values), dtype=object)
    for position, value in enumerate(values):  # item by item: numpy would try to broadcast nested lists
        out[position] = value
    return out


def _index_for(
    index: pandas.Index, positions: list[int], items: list[int] | None, source_name: str | None
) -> pandas.Index:
    import pandas as pd  # noqa: PLC0415 - pandas loads when a frame is made

    picked = index.take(positions)
    if items is None:
        return picked
    if isinstance(picked, pd.MultiIndex):
        arrays = [picked.get_level_values(i) for i in range(picked.nlevels)]
        names = list(picked.names)
    else:
        arrays, names = [picked], [picked.name or source_name or "source"]
    return pd.MultiIndex.from_arrays([*arrays, pd.Index(items, dtype="int64")], names=[*names, "item"])


def build_frame(
    fmt: StrictFormat,
    columns: Sequence[Column],
    results: Sequence[RowResult],
    index: pandas.Index,
    attrs: dict[str, Any] | None = None,
) -> pandas.DataFrame:
    """The frame for ``results`` (one per input row, in input order) with ``index`` as its index.

    Rows still ``pending`` show as ``cancelled``. Builds each column once; no per-row frame work.
    """
    import pandas as pd  # noqa: PLC0415 - pandas loads when a frame is made

    positions: list[int] = []
    items: list[int] | None = [] if fmt.many else None
    dumped: list[Any] = []
    first: list[bool] = []
    n_items: list[int] = []
    for position, result in enumerate(results):
        values = result.value if result.status == "ok" else None
        if fmt.many:
            found = list(values or ())
            for number, item in enumerate(found or [None]):
                positions.append(position)
                items.append(number)  # type: ignore[union-attr]
                dumped.append(_dump(item) if item is not None else None)
                first.append(number == 0)
                n_items.append(len(found))
        else:
            positions.append(position)
            dumped.append(_dump(values) if values is not None else None)
            first.append(True)

    data: dict[str, Any] = {}
    for column in columns:
        data[column.name] = _typed([_pick(d, column.keys) if d is not None else None for d in dumped], column)
    rows = [results[p] for p in positions]
    status = [("cancelled" if r.status == "pending" else r.status) for r in rows]
    error = [("interrupted before it finished" if r.status == "pending" and r.error is None else r.error) for r in rows]
    data["_status"] = pd.Categorical(status, categories=list(STATUSES))
    data["_error"] = pd.array(error, dtype="string")
    data["_attempts"] = pd.array([r.attempts for r in rows], dtype="Int64")
    for name in ("input_tokens", "cached_tokens", "output_tokens", "reasoning_tokens"):
        values = [getattr(r, name) if f else 0 for r, f in zip(rows, first, strict=False)]
        data[f"_{name}"] = pd.array(values, dtype="Int64")
    data["_cost_usd"] = pd.array(
        [(r.cost_usd if f else 0.0) if r.cost_usd is not None else None for r, f in zip(rows, first, strict=False)],
        dtype="float64",
    )
    data["_response_id"] = pd.array([r.response_id for r in rows], dtype="string")
    data["_latency_s"] = pd.array([r.latency_s for r in rows], dtype="float64")
    data["_from_cache"] = pd.array([r.from_cache for r in rows], dtype="boolean")
    if fmt.many:
        data["_n_items"] = pd.array(n_items, dtype="Int64")
    frame = pd.DataFrame(data, index=_index_for(index, positions, items, None))
    if attrs:
        frame.attrs.update(attrs)
    return frame


def source_positions(frame: pandas.DataFrame, many: bool) -> Any:
    """For each frame row, the position of the input it came from (a numpy array)."""
    import numpy as np  # noqa: PLC0415 - pandas loads when a frame is made

    if not many:
        return np.arange(len(frame))
    counts = np.maximum(frame["_n_items"].to_numpy(dtype="int64", na_value=0), 1)
    positions = []
    row = source = 0
    while row < len(frame):  # a source's rows are contiguous; its first row says how many there are
        positions.extend([source] * int(counts[row]))
        row += int(counts[row])
        source += 1
    return np.asarray(positions[: len(frame)], dtype="int64")


def splice(
    frame: pandas.DataFrame,
    positions: Any,
    previous: pandas.DataFrame,
    previous_positions: Any,
    keep: set[int],
) -> pandas.DataFrame:
    """``frame`` with the rows of the sources in ``keep`` taken from ``previous``, in input order."""
    import numpy as np  # noqa: PLC0415 - pandas loads when a frame is made
    import pandas as pd  # noqa: PLC0415 - pandas loads when a frame is made

    kept = np.fromiter(keep, dtype="int64", count=len(keep))
    new_rows = ~np.isin(positions, kept)
    old_rows = np.isin(previous_positions, kept)
    combined = pd.concat([frame[new_rows], previous[old_rows]])
    order = np.argsort(np.concatenate([positions[new_rows], previous_positions[old_rows]]), kind="stable")
    result = combined.take(order)
    result.attrs = dict(frame.attrs)
    return result

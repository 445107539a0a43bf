"""Results to frames: flattening, dtypes, ``many`` rows, request columns, alignment, splicing."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Literal

import pandas as pd
import pytest
from pydantic import BaseModel, RootModel

from nbopenai._extract import strict_format
from nbopenai._extract._frame import Column, _typed, build_frame, columns_for, source_positions, splice
from nbopenai._extract._rows import BOOKKEEPING_COLUMNS, META_COLUMNS, RowResult


class Color(enum.Enum):
    red = "red"
    blue = "blue"


class Address(BaseModel):
    city: str
    zip: str | None


class Pet(BaseModel):
    name: str


class Person(BaseModel):
    name: str
    age: int | None
    height: float
    member: bool | None
    born: dt.datetime | None
    day: dt.date
    mood: Literal["happy", "sad"]
    color: Color
    address: Address
    previous: Address | None
    tags: list[str]
    pets: list[Pet]
    either: int | str


def ada() -> Person:
    return Person(
        name="Ada", age=36, height=1.65, member=True, born=dt.datetime(1815, 12, 10, tzinfo=dt.timezone.utc),
        day=dt.date(2024, 3, 5), mood="happy", color=Color.blue, address=Address(city="London", zip=None),
        previous=None, tags=["math"], pets=[Pet(name="Puff")], either=3,
    )


def frame_of(values: list[RowResult], model=Person, many: bool = False, index=None) -> pd.DataFrame:
    fmt = strict_format(model, many=many)
    index = pd.RangeIndex(len(values)) if index is None else index
    return build_frame(fmt, columns_for(fmt), values, index, {"schema_hash": fmt.schema_hash, "many": many})


def ok(value, **fields) -> RowResult:
    return RowResult(
        status="ok",
        value=value,
        attempts=1,
        input_tokens=10,
        output_tokens=5,
        cost_usd=0.001,
        response_id="resp_1",
        **fields,
    )


@pytest.mark.parametrize("many", [False, True])
def test_the_bookkeeping_columns_are_the_ones_the_frame_adds(many):
    # The schema lint refuses a field named like one of these (_format), so the list must be the frame's.
    frame = frame_of([ok([Pet(name="Puff")] if many else Pet(name="Puff"))], model=Pet, many=many)
    added = [name for name in frame.columns if name != "name"]
    assert added == list(META_COLUMNS) + (["_n_items"] if many else [])
    assert set(added) <= BOOKKEEPING_COLUMNS


def test_nested_models_flatten_to_dotted_columns():
    names = [c.name for c in columns_for(strict_format(Person))]
    assert names == [
        "name",
        "age",
        "height",
        "member",
        "born",
        "day",
        "mood",
        "color",
        "address.city",
        "address.zip",
        "previous.city",
        "previous.zip",
        "tags",
        "pets",
        "either",
    ]


def test_dtypes_follow_the_types():
    frame = frame_of([ok(ada()), RowResult(status="error", error="boom", attempts=4)])
    dtypes = frame.dtypes.astype(str).to_dict()
    assert dtypes["name"] == "string"
    assert dtypes["age"] == "Int64"
    assert dtypes["height"] == "float64"
    assert dtypes["member"] == "boolean"
    assert dtypes["born"].startswith("datetime64") and "UTC" in dtypes["born"]
    assert dtypes["day"].startswith("datetime64")
    assert dtypes["mood"] == "category" and list(frame["mood"].cat.categories) == ["happy", "sad"]
    assert dtypes["color"] == "category" and frame.loc[0, "color"] == "blue"
    assert dtypes["tags"] == "object" and frame.loc[0, "tags"] == ["math"]
    assert frame.loc[0, "pets"] == [{"name": "Puff"}]
    assert dtypes["either"] == "object"
    assert frame.loc[0, "address.city"] == "London"
    assert frame.loc[0, "previous.city"] is pd.NA  # an optional object that is null: empty fields
    assert frame.loc[1, "age"] is pd.NA and frame.loc[1, "name"] is pd.NA  # a failed row keeps its place


def test_request_columns_and_statuses():
    frame = frame_of([ok(ada()), RowResult(status="error", error="boom", attempts=4), RowResult()])
    assert list(frame["_status"]) == ["ok", "error", "cancelled"]
    assert frame.loc[1, "_error"] == "boom" and frame.loc[1, "_attempts"] == 4
    assert "interrupted" in frame.loc[2, "_error"]
    assert frame["_status"].dtype == "category"
    assert frame["_input_tokens"].dtype == "Int64" and frame.loc[0, "_input_tokens"] == 10
    assert frame.loc[0, "_cost_usd"] == pytest.approx(0.001)
    assert frame.loc[0, "_response_id"] == "resp_1"
    assert frame["_from_cache"].dtype == "boolean"
    assert frame.attrs["many"] is False


def test_rows_align_to_the_input_index():
    index = pd.Index(["x", "y"], name="doc")
    frame = frame_of([ok(ada()), RowResult(status="refusal", error="no")], index=index)
    assert frame.index.equals(index)
    assert frame.loc["y", "_status"] == "refusal"


def test_many_explodes_to_source_and_item_rows():
    people = [ada(), ada().model_copy(update={"name": "Alan"})]
    results = [ok(people), ok([]), RowResult(status="invalid", error="bad")]
    frame = frame_of(results, many=True, index=pd.Index([10, 20, 30], name="doc"))
    assert list(frame.index) == [(10, 0), (10, 1), (20, 0), (30, 0)]
    assert frame.index.names == ["doc", "item"]
    assert list(frame["name"]) == ["Ada", "Alan", pd.NA, pd.NA]
    assert list(frame["_n_items"]) == [2, 2, 0, 0]
    assert list(frame["_status"]) == ["ok", "ok", "ok", "invalid"]
    # tokens and cost sit on a source's first row only, so sums stay right
    assert list(frame["_input_tokens"]) == [10, 0, 10, 0]
    assert frame["_cost_usd"].sum() == pytest.approx(0.002)
    assert list(source_positions(frame, many=True)) == [0, 0, 1, 2]


def test_root_model_values_get_a_value_column():
    class Scores(RootModel[list[int]]):
        pass

    fmt = strict_format(Scores)
    frame = build_frame(fmt, columns_for(fmt), [ok(fmt.parse('{"value": [1, 2]}'))], pd.RangeIndex(1))
    assert frame.loc[0, "value"] == [1, 2]


def test_values_that_do_not_fit_the_dtype_fall_back_to_object():
    assert _typed(["x", 1], Column("a", ("a",), "int")).dtype == object


def test_splice_keeps_earlier_ok_rows_in_input_order():
    earlier = frame_of([ok(ada()), RowResult(status="error", error="x"), ok(ada())])
    again = frame_of([RowResult(status="ok"), ok(ada().model_copy(update={"name": "New"})), RowResult(status="ok")])
    merged = splice(again, source_positions(again, False), earlier, source_positions(earlier, False), {0, 2})
    assert list(merged.index) == [0, 1, 2]
    assert list(merged["name"]) == ["Ada", "New", "Ada"]
    assert list(merged["_status"]) == ["ok", "ok", "ok"]
    assert merged["age"].dtype == "Int64"

"""Strict-schema lint: every rule, fixed or refused, with the offending field path named."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any, Literal

import jsonschema
import pydantic
import pytest
from pydantic import BaseModel, ConfigDict, Field, RootModel, create_model

from nbopenai import SchemaError, UsageError
from nbopenai._core._strict import MAX_DEPTH, MAX_PROPERTIES
from nbopenai._extract import extract, lint_schema, strict_format


def errors_of(model: type[BaseModel], **kwargs: Any) -> dict[str, str]:
    """``{path: rule}`` of what the lint refuses."""
    with pytest.raises(SchemaError) as caught:
        strict_format(model, **kwargs)
    message = caught.value.message
    return {line.split(": ", 1)[0].strip(" -"): line for line in message.splitlines()[1:]}


def fixes_of(model: type[BaseModel], **kwargs: Any) -> dict[tuple[str, str], str]:
    return {(f.path, f.rule): f.message for f in strict_format(model, **kwargs).fixes}


def walk(node: Any):
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def assert_strict(schema: dict[str, Any]) -> None:
    """What strict mode demands of every object, and no keyword it refuses."""
    for node in walk(schema):
        if node.get("type") == "object" and "properties" in node:
            assert node["additionalProperties"] is False
            assert node["required"] == list(node["properties"])
        refused = {
            "default",
            "oneOf",
            "uniqueItems",
            "prefixItems",
            "discriminator",
            "const",
            "minLength",
        } & node.keys()
        assert not refused, f"{refused} left in {node}"


class Address(BaseModel):
    city: str
    tags: set[str] = set()


class Person(BaseModel):
    name: str
    age: int | None = None
    address: Address


# ---- fixed automatically -----------------------------------------------------------------------


def test_plain_model_needs_no_fix_and_is_strict():
    class Plain(BaseModel):
        name: str
        age: int | None

    fmt = strict_format(Plain)
    assert fmt.fixes == ()
    assert fmt.text_format["strict"] is True and fmt.text_format["name"] == "Plain"
    assert_strict(fmt.schema)


def test_defaults_are_stripped_and_noted():
    fixes = fixes_of(Person)
    assert ("address.tags", "default") in fixes
    fmt = strict_format(Person)
    assert_strict(fmt.schema)
    assert "default" not in str(fmt.schema)


def test_set_becomes_array_and_pydantic_still_dedups():
    fmt = strict_format(Person)
    assert ("address.tags", "set") in fixes_of(Person)
    value = fmt.parse('{"name": "Ada", "age": null, "address": {"city": "London", "tags": ["a", "a", "b"]}}')
    assert value.address.tags == {"a", "b"}


class Cat(BaseModel):
    kind: Literal["cat"]
    lives: int


class Dog(BaseModel):
    kind: Literal["dog"]
    good: bool


def test_discriminated_union_becomes_anyof():
    class Owner(BaseModel):
        pet: Cat | Dog = Field(discriminator="kind")

    fmt = strict_format(Owner)
    assert ("pet", "oneOf") in fixes_of(Owner)
    assert "anyOf" in fmt.schema["properties"]["pet"] and "oneOf" not in fmt.schema["properties"]["pet"]
    assert_strict(fmt.schema)
    assert isinstance(fmt.parse('{"pet": {"kind": "dog", "good": true}}').pet, Dog)


def test_root_model_is_wrapped_in_an_object_and_unwrapped():
    class Scores(RootModel[list[int]]):
        pass

    fmt = strict_format(Scores)
    assert ("(root)", "root") in fixes_of(Scores)
    assert fmt.schema["type"] == "object" and list(fmt.schema["properties"]) == ["value"]
    assert fmt.parse('{"value": [1, 2]}').root == [1, 2]


def test_keywords_checked_later_by_pydantic_are_removed():
    class Constrained(BaseModel):
        code: str = Field(min_length=2, max_length=4)
        site: pydantic.AnyUrl

    fixes = fixes_of(Constrained)
    assert ("code", "minLength") in fixes and ("code", "maxLength") in fixes and ("site", "format") in fixes
    with pytest.raises(pydantic.ValidationError):  # still enforced, after the answer
        strict_format(Constrained).parse('{"code": "toolong", "site": "https://x.org"}')


def test_const_becomes_a_one_value_enum():
    fmt = strict_format(Cat)
    assert fmt.schema["properties"]["kind"]["enum"] == ["cat"]


def test_bad_definition_names_are_renamed_consistently():
    schema = {
        "type": "object",
        "properties": {"a": {"$ref": "#/$defs/Bad Name"}},
        "$defs": {"Bad Name": {"type": "object", "properties": {"x": {"type": "integer"}}}},
    }
    report = lint_schema(schema)
    assert report.ok
    assert report.schema["properties"]["a"]["$ref"] == "#/$defs/Bad_Name"
    assert "Bad_Name" in report.schema["$defs"]


def test_many_wraps_the_model_in_items_and_paths_stay_the_users():
    fmt = strict_format(Person, many=True)
    assert fmt.schema["properties"]["items"]["type"] == "array"
    assert ("address.tags", "default") in fixes_of(Person, many=True)
    people = fmt.parse('{"items": [{"name": "Ada", "age": 36, "address": {"city": "L", "tags": []}}]}')
    assert [p.name for p in people] == ["Ada"]


def test_the_fixed_schema_accepts_what_the_model_produces():
    class Color(enum.Enum):
        red = "red"
        blue = "blue"

    class Rich(BaseModel):
        when: dt.datetime
        day: dt.date
        color: Color = Color.red
        people: list[Person]
        pet: Cat | Dog = Field(discriminator="kind")

    fmt = strict_format(Rich)
    value = Rich(
        when=dt.datetime(2024, 1, 2, 3, 4, tzinfo=dt.timezone.utc),
        day=dt.date(2024, 1, 2),
        people=[Person(name="Ada", address=Address(city="L"))],
        pet=Cat(kind="cat", lives=9),
    )
    jsonschema.validate(value.model_dump(mode="json"), fmt.schema)
    assert fmt.parse(value.model_dump_json()) == value


# ---- refused, with the field path ----------------------------------------------------------------


def test_dict_fields_are_refused():
    class Tally(BaseModel):
        inner: Address
        counts: dict[str, int]

    assert "counts" in errors_of(Tally)


def test_extra_allow_is_refused():
    class Loose(BaseModel):
        model_config = ConfigDict(extra="allow")
        name: str

    class Outer(BaseModel):
        loose: Loose

    assert "extra" in errors_of(Outer)["loose"]


def test_tuple_is_refused():
    class Pair(BaseModel):
        point: tuple[int, int]

    assert "tuple" in errors_of(Pair)["point"]


def test_any_is_refused_with_a_nested_path():
    class Holder(BaseModel):
        stuff: list[Any]

    assert "Any" in errors_of(Holder)["stuff[]"]


def test_undiscriminated_oneof_is_refused():
    schema = {"type": "object", "properties": {"x": {"oneOf": [{"type": "integer"}, {"type": "number"}]}}}
    report = lint_schema(schema)
    assert [(e.path, e.rule) for e in report.errors] == [("x", "oneOf")]


def test_allof_intersection_is_refused():
    schema = {
        "type": "object",
        "properties": {"x": {"allOf": [{"type": "object", "properties": {}}, {"type": "object", "properties": {}}]}},
    }
    assert [(e.path, e.rule) for e in lint_schema(schema).errors] == [("x", "allOf")]


def test_non_object_root_schema_is_refused():
    assert [e.rule for e in lint_schema({"type": "array", "items": {"type": "string"}}).errors] == ["root"]


def test_nesting_deeper_than_ten_levels_is_refused():
    model: type[BaseModel] = create_model("Level0", leaf=(int, ...))
    for depth in range(1, MAX_DEPTH):
        model = create_model(f"Level{depth}", child=(model, ...))
    strict_format(model)  # exactly ten levels: fine
    deeper = create_model("TooDeep", child=(model, ...))
    errors = errors_of(deeper)
    assert any("nested more than 10" in line for line in errors.values())
    assert "child.child.child.child.child.child.child.child.child.child" in errors


def test_recursive_models_are_allowed():
    class Node(BaseModel):
        label: str
        children: list[Node]

    assert (
        strict_format(Node).parse('{"label": "a", "children": [{"label": "b", "children": []}]}').children[0].label
        == "b"
    )


def test_more_than_5000_properties_are_refused():
    fields = {f"f{i}": (int, ...) for i in range(MAX_PROPERTIES + 1)}
    big = create_model("Big", **fields)
    assert any("5,000" in line for line in errors_of(big).values())


def test_names_outside_the_allowed_characters_are_refused():
    class Spaced(BaseModel):
        first_name: str = Field(alias="first name")

    assert "characters outside" in errors_of(Spaced)["first name"]


def test_one_error_lists_every_offending_path():
    class Bad(BaseModel):
        counts: dict[str, int]
        pair: tuple[int, str]
        anything: Any

    with pytest.raises(SchemaError) as caught:
        strict_format(Bad)
    text = str(caught.value)
    assert "counts" in text and "pair" in text and "anything" in text
    assert "nothing was sent" in text


def test_not_a_pydantic_class_is_a_usage_error():
    with pytest.raises(UsageError):
        strict_format(dict)


def test_lint_failure_spends_nothing(session, local_server):
    class Bad(BaseModel):
        counts: dict[str, int]

    with pytest.raises(SchemaError):
        extract(session, Bad, ["a", "b"], progress=False)
    assert local_server.requests == []


@pytest.mark.parametrize("many", [False, True])
def test_a_field_named_like_a_bookkeeping_column_is_refused(many):
    class Ticket(BaseModel):
        status: str = Field(alias="_status")
        cost: float = Field(alias="_cost_usd")
        title: str

    errors = errors_of(Ticket, many=many)
    assert set(errors) == {"_status", "_cost_usd"}
    assert "'_status' is a bookkeeping column of the extraction frame" in errors["_status"]


def test_a_nested_field_named_like_a_bookkeeping_column_is_fine():
    class Inner(BaseModel):
        status: str = Field(alias="_status")

    class Outer(BaseModel):
        inner: Inner

    assert strict_format(Outer).schema["properties"]["inner"]

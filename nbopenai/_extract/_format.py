"""The request format of one extraction, computed once: the strict schema, its name and hash, and
how an answer's JSON becomes model instances.

Two shapes need an object around the user's model, because a strict root must be an object:
``many=True`` sends ``{"items": [Model, ...]}`` and a ``RootModel`` sends ``{"value": ...}``.
The wrapper is a real Pydantic model, so one ``model_validate_json`` call parses and validates the
whole answer; ``parse`` then hands back what the user asked for (an instance, or a list of them).
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import re
from dataclasses import dataclass
from typing import Any

import pydantic

from .._core._errors import SchemaError, UsageError, describe
from .._core._strict import Finding, LintReport, lint_schema, strict_json_schema
from ._rows import BOOKKEEPING_COLUMNS

__all__ = ["StrictFormat", "strict_format"]

_NAME_LIMIT = 64


@dataclass(frozen=True)
class StrictFormat:
    """What every request of one extraction sends as ``text.format``, and how answers are read.

    Attributes
    ----------
    model
        The user's Pydantic class.
    many
        Whether each answer holds a list of ``model`` (``{"items": [...]}``).
    name, schema, schema_hash
        The format name, the strict JSON schema sent, and a short hash of both (for the cache).
    fixes
        What the lint changed to make the schema strict (see ``_core._strict``).
    """

    model: type[pydantic.BaseModel]
    many: bool
    name: str
    schema: dict[str, Any]
    schema_hash: str
    fixes: tuple[Finding, ...]
    validator: type[pydantic.BaseModel]
    unwrap: str | None

    @property
    def text_format(self) -> dict[str, Any]:
        """The ``text.format`` parameter of a Responses request."""
        return {"type": "json_schema", "name": self.name, "schema": self.schema, "strict": True}

    @property
    def item_schema(self) -> dict[str, Any]:
        """The schema of one extracted item (what becomes one row of the frame)."""
        if self.unwrap == "items":
            return self.schema["properties"]["items"]["items"]
        if self.unwrap == "value":
            return self.schema["properties"]["value"]
        return self.schema

    @property
    def defs(self) -> dict[str, Any]:
        return self.schema.get("$defs") or {}

    def parse(self, text: str) -> Any:
        """Validate an answer: an instance of ``model``, or a list of them with ``many``.

        Raises ``pydantic.ValidationError`` when the JSON does not fit.
        """
        value = self.validator.model_validate_json(text)
        return getattr(value, self.unwrap) if self.unwrap else value


def _format_name(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_-]", "_", name)[:_NAME_LIMIT] or "extraction"


def _envelope(
    model: type[pydantic.BaseModel], many: bool
) -> tuple[type[pydantic.BaseModel], str | None, tuple[Finding, ...]]:
    name = model.__name__
    if many:
        items = pydantic.Field(description=f"Every {name} found in the text, in order; empty when there is none.")
        return pydantic.create_model(f"{name}List", items=(list[model], items)), "items", ()  # type: ignore[valid-type]
    if issubclass(model, pydantic.RootModel):
        note = Finding(
            "(root)", "root", 'the root is not an object: sent as {"value": ...} and unwrapped after parsing'
        )
        return pydantic.create_model(f"{name}Value", value=(model, ...)), "value", (note,)
    return model, None, ()


def _relative(report: LintReport, unwrap: str | None) -> LintReport:
    """Findings with paths from the user's model, not from our wrapper."""
    if unwrap is None:
        return report
    prefix = "items[]" if unwrap == "items" else "value"

    def strip(finding: Finding) -> Finding:
        path = finding.path
        if path == prefix:
            path = "(root)"
        elif path.startswith(prefix):
            path = path[len(prefix) :].lstrip(".")
        return dataclasses.replace(finding, path=path)

    return dataclasses.replace(report, errors=tuple(map(strip, report.errors)), fixes=tuple(map(strip, report.fixes)))


def _bookkeeping_clashes(schema: dict[str, Any], unwrap: str | None) -> tuple[Finding, ...]:
    """Fields named (or aliased) like a bookkeeping column of the frame: refused, or one would overwrite the other."""

    item = schema["properties"][unwrap] if unwrap else schema
    if unwrap == "items":
        item = item["items"]
    ref = item.get("$ref") if isinstance(item, dict) else None
    if isinstance(ref, str):
        item = (schema.get("$defs") or {}).get(ref.rsplit("/", 1)[-1], {})
    names = item.get("properties") or {} if isinstance(item, dict) else {}
    return tuple(
        Finding(name, "reserved", f"{name!r} is a bookkeeping column of the extraction frame; rename the field")
        for name in names
        if name in BOOKKEEPING_COLUMNS
    )


def strict_format(model: Any, *, many: bool = False) -> StrictFormat:
    """Build (and lint) the strict format for ``model``; raises ``SchemaError`` before anything is sent."""
    if not (inspect.isclass(model) and issubclass(model, pydantic.BaseModel)):
        raise UsageError(
            f"expected a Pydantic model class (a subclass of pydantic.BaseModel), got {describe(model)}",
            hint="The schema comes first; the texts follow it (in %%extract: `%%extract Model --over texts`).",
        )
    validator, unwrap, notes = _envelope(model, many)
    try:
        raw = strict_json_schema(validator)
    except Exception as exc:  # PydanticInvalidForJsonSchema, PydanticUserError, a broken $ref...
        raise SchemaError(f"could not build a JSON schema for {model.__name__}: {exc}") from None
    report = _relative(lint_schema(raw), unwrap)
    report = dataclasses.replace(report, errors=(*report.errors, *_bookkeeping_clashes(report.schema, unwrap)))
    report.raise_for_errors(f"The model {model.__name__}")
    name = _format_name(validator.__name__)
    canonical = json.dumps({"name": name, "schema": report.schema}, sort_keys=True, separators=(",", ":"))
    return StrictFormat(
        model=model,
        many=many,
        name=name,
        schema=report.schema,
        schema_hash=hashlib.sha256(canonical.encode()).hexdigest()[:16],
        fixes=(*notes, *report.fixes),
        validator=validator,
        unwrap=unwrap,
    )

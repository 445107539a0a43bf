"""Strict schemas: the SDK's strict JSON schema of a Pydantic model, and its lint, for strict tools and extraction.

Strict function tools (``_turns/_tools``) and strict structured outputs (``_extract/_format``)
obey the same rules. ``strict_json_schema`` is the one place that calls the SDK's (private)
``to_strict_json_schema``, exactly what ``responses.parse(text_format=...)`` would send;
``lint_schema`` then walks the result once, fixing what can be fixed without changing which Python
values come back, and naming every field that cannot be sent.

Fixed automatically (each listed in ``LintReport.fixes``):

- **defaults** are removed: strict mode makes every field required, so the model writes the value;
- **sets** (``uniqueItems``) become plain arrays: Pydantic drops duplicates when it validates;
- a **discriminated union** (``oneOf``) whose branches carry distinct constant tags becomes ``anyOf``:
  at most one branch can match, so "any of" means "exactly one of";
- keywords strict mode ignores but Pydantic checks after the answer (``minLength``, an unknown
  ``format``, ...) are removed: an answer that breaks them is re-asked as ``invalid``;
- names outside ``[a-zA-Z0-9_-]`` in ``$defs`` are rewritten (they never reach your data).

Errors (``SchemaError``, raised before anything is spent), each with its field path:
``dict[...]`` fields, ``extra="allow"``, unions that are not discriminated, tuples
(``prefixItems``), ``Any``, ``allOf`` intersections, more than 10 levels of nested objects, more
than 5,000 properties, and property names outside ``^[a-zA-Z0-9_-]+$``.

A non-object root (a ``RootModel``) and ``many=True`` are handled one level up, in
``_extract/_format``, by wrapping the model in an object.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .._core._errors import SchemaError

__all__ = ["Finding", "LintReport", "lint_schema", "strict_json_schema", "MAX_DEPTH", "MAX_PROPERTIES"]

MAX_DEPTH = 10
MAX_PROPERTIES = 5000
NAME = re.compile(r"^[a-zA-Z0-9_-]+$")

# Formats the API accepts in strict mode; any other is left for Pydantic to check.
_FORMATS = frozenset({"date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid"})
# Keywords strict mode does not accept, all of which Pydantic still enforces after the answer.
_CHECKED_LATER = ("minLength", "maxLength", "minProperties", "maxProperties", "contentMediaType", "contentEncoding")
_SCHEMA_KEYS = frozenset({"type", "anyOf", "oneOf", "allOf", "$ref", "enum", "const", "properties", "items"})


def strict_json_schema(model: Any) -> dict[str, Any]:
    """The SDK's strict JSON schema of a Pydantic model (its ``to_strict_json_schema``, not public API).

    The one import of it in the package: if the SDK moves it, this is the line to change.
    """
    from openai.lib._pydantic import to_strict_json_schema  # noqa: PLC0415 - the SDK stays out of `import nbopenai`

    return to_strict_json_schema(model)


@dataclass(frozen=True)
class Finding:
    """One problem or fix: where (a field path such as ``address.tags[]``), which rule, what."""

    path: str
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass(frozen=True)
class LintReport:
    """The strict schema to send, the fixes applied to get it, and what still prevents sending."""

    schema: dict[str, Any]
    errors: tuple[Finding, ...]
    fixes: tuple[Finding, ...]

    @property
    def ok(self) -> bool:
        return not self.errors

    def raise_for_errors(self, title: str) -> None:
        """Raise one ``SchemaError`` listing every offending field path."""
        if self.errors:
            lines = "\n".join(f"  - {finding}" for finding in self.errors)
            raise SchemaError(f"{title} cannot be used for strict structured output:\n{lines}")


def _path(segments: tuple[str, ...]) -> str:
    text = ""
    for segment in segments:
        text += segment if segment == "[]" else (f".{segment}" if text else segment)
    return text or "(root)"


def _types(node: dict[str, Any]) -> tuple[str, ...]:
    kind = node.get("type")
    return tuple(kind) if isinstance(kind, list) else ((kind,) if isinstance(kind, str) else ())


class _Walker:
    """One pass over a strict schema: fixes applied in place, findings collected once per node."""

    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root
        self.defs: dict[str, Any] = root.get("$defs") or {}
        self.errors: dict[tuple[str, int], Finding] = {}
        self.fixes: dict[tuple[str, int], Finding] = {}
        self.seen: set[tuple[int, int]] = set()

    def error(self, node: Any, path: tuple[str, ...], rule: str, message: str) -> None:
        self.errors.setdefault((rule, id(node)), Finding(_path(path), rule, message))

    def fix(self, node: Any, path: tuple[str, ...], rule: str, message: str) -> None:
        self.fixes.setdefault((rule, id(node)), Finding(_path(path), rule, message))

    def resolve(self, node: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
        ref = node.get("$ref")
        if not isinstance(ref, str):
            return node, None
        name = ref.rsplit("/", 1)[-1]
        return self.defs.get(name), name

    def visit(self, node: Any, path: tuple[str, ...], depth: int, stack: frozenset[str]) -> None:
        if not isinstance(node, dict):
            return
        target, name = self.resolve(node)
        if name is not None:
            if name in stack:  # recursion is allowed in strict mode; one lap is enough to check it
                return
            if target is None:
                self.error(node, path, "ref", f"points at a missing definition {node['$ref']!r}")
                return
            node, stack = target, stack | {name}
        # A definition reached at a new depth must be walked again (for the depth rule), but only once per depth.
        if (id(node), depth) in self.seen:
            return
        self.seen.add((id(node), depth))
        self._fix(node, path)
        self._check(node, path)
        if "object" in _types(node) or "properties" in node:
            depth += 1
            if depth > MAX_DEPTH:
                self.error(
                    node,
                    path,
                    "depth",
                    f"objects nested more than {MAX_DEPTH} levels deep (strict mode allows {MAX_DEPTH})",
                )
                return
            for key, sub in (node.get("properties") or {}).items():
                if not NAME.match(key):
                    self.error(
                        sub,
                        (*path, key),
                        "name",
                        f"the name {key!r} has characters outside [a-zA-Z0-9_-]; rename the field (or its alias)",
                    )
                self.visit(sub, (*path, key), depth, stack)
        if isinstance(node.get("items"), dict):
            self.visit(node["items"], (*path, "[]"), depth, stack)
        for combinator in ("anyOf", "allOf"):
            for branch in node.get(combinator) or ():
                self.visit(branch, path, depth, stack)

    def _fix(self, node: dict[str, Any], path: tuple[str, ...]) -> None:
        if "default" in node:
            value = node.pop("default")
            self.fix(
                node,
                path,
                "default",
                f"default {value!r} removed: strict mode requires every field, so the model always writes it",
            )
        if node.pop("uniqueItems", None) is not None:
            self.fix(node, path, "set", "set sent as an array: Pydantic drops duplicates when it validates")
        if "const" in node:
            node["enum"] = [node.pop("const")]  # the same single value, in the form every strict parser takes
        if "oneOf" in node:
            if _tagged(self, node["oneOf"]):
                node["anyOf"] = node.pop("oneOf")
                node.pop("discriminator", None)
                self.fix(
                    node,
                    path,
                    "oneOf",
                    "discriminated union sent as anyOf: the tags are distinct, so exactly one branch can match",
                )
            else:
                self.error(
                    node,
                    path,
                    "oneOf",
                    "a union whose branches are not told apart by a constant tag (oneOf) is not supported; "
                    "add a Literal tag field to each branch and use Field(discriminator=...)",
                )
        if isinstance(node.get("format"), str) and node["format"] not in _FORMATS:
            fmt = node.pop("format")
            self.fix(
                node, path, "format", f"format {fmt!r} is not supported by the API; Pydantic checks it after the answer"
            )
        for keyword in _CHECKED_LATER:
            if keyword in node:
                node.pop(keyword)
                self.fix(
                    node, path, keyword, f"{keyword} is not supported by the API; Pydantic checks it after the answer"
                )
        if "object" in _types(node) or "properties" in node:
            # What the SDK does too; repeated here for branches it does not reach (oneOf, inlined refs).
            node.setdefault("additionalProperties", False)
            if isinstance(node.get("properties"), dict):
                node["required"] = list(node["properties"])

    def _check(self, node: dict[str, Any], path: tuple[str, ...]) -> None:
        extra = node.get("additionalProperties")
        if extra not in (None, False):
            if node.get("properties"):
                self.error(
                    node,
                    path,
                    "extra",
                    'extra="allow" (or a typed __pydantic_extra__) is not supported: '
                    'strict mode needs additionalProperties false; use extra="ignore" or "forbid"',
                )
            else:
                self.error(
                    node,
                    path,
                    "dict",
                    "dict[...] fields are not supported in strict mode: use a list of key/value models instead",
                )
        if "prefixItems" in node:
            self.error(
                node,
                path,
                "tuple",
                "tuple fields (prefixItems) are not supported: use a list, or a model with one field per position",
            )
        all_of = node.get("allOf")
        if isinstance(all_of, list) and len(all_of) > 1:
            self.error(node, path, "allOf", "intersections (allOf) are not supported: merge the parts into one model")
        if not (_SCHEMA_KEYS & node.keys()) and "additionalProperties" not in node:
            self.error(node, path, "any", "Any (a field with no type) is not supported: give it a concrete type")


def _tagged(walker: _Walker, branches: list[Any]) -> bool:
    """True when some property holds a distinct constant in every branch (so branches never overlap)."""
    resolved = [walker.resolve(b)[0] if isinstance(b, dict) else None for b in branches]
    if not resolved or any(not isinstance(r, dict) or not isinstance(r.get("properties"), dict) for r in resolved):
        return False
    common = set.intersection(*(set(r["properties"]) for r in resolved))
    for key in sorted(common):
        tags = [_constant(walker.resolve(r["properties"][key])[0]) for r in resolved]
        if all(tag is not None for tag in tags) and len({repr(tag[0]) for tag in tags}) == len(tags):
            return True
    return False


def _constant(node: Any) -> tuple[Any] | None:
    if not isinstance(node, dict):
        return None
    if "const" in node:
        return (node["const"],)
    enum = node.get("enum")
    return (enum[0],) if isinstance(enum, list) and len(enum) == 1 else None


def _subschemas(node: Any) -> Iterator[dict[str, Any]]:
    """Every schema node under ``node`` (not the property-name mappings themselves)."""
    if not isinstance(node, dict):
        return
    yield node
    for key in ("properties", "$defs"):
        if isinstance(node.get(key), dict):
            for sub in node[key].values():
                yield from _subschemas(sub)
    for key in ("items", "additionalProperties", "not"):
        yield from _subschemas(node.get(key))
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        if isinstance(node.get(key), list):
            for sub in node[key]:
                yield from _subschemas(sub)


def _rename_defs(schema: dict[str, Any], fixes: list[Finding]) -> None:
    defs = schema.get("$defs")
    if not isinstance(defs, dict):
        return
    renames = {}
    for name in list(defs):
        if not NAME.match(name):
            new = re.sub(r"[^a-zA-Z0-9_-]", "_", name)
            while new in defs or new in renames.values():
                new += "_"
            renames[name] = new
    if not renames:
        return
    schema["$defs"] = {renames.get(k, k): v for k, v in defs.items()}
    for node in _subschemas(schema):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/") and ref[8:] in renames:
            node["$ref"] = "#/$defs/" + renames[ref[8:]]
    fixes.extend(Finding(f"$defs.{old}", "name", f"definition renamed to {new!r}") for old, new in renames.items())


def lint_schema(schema: dict[str, Any]) -> LintReport:
    """Lint a JSON schema (from ``to_strict_json_schema``); returns the fixed copy and the findings."""
    schema = copy.deepcopy(schema)
    renamed: list[Finding] = []
    _rename_defs(schema, renamed)
    walker = _Walker(schema)
    if "object" not in _types(schema):
        walker.error(schema, (), "root", "the root must be an object")
    walker.visit(schema, (), 0, frozenset())
    properties = sum(
        len(node["properties"]) for node in _subschemas(schema) if isinstance(node.get("properties"), dict)
    )
    if properties > MAX_PROPERTIES:
        walker.error(
            schema, (), "properties", f"{properties:,} properties in all; strict mode allows {MAX_PROPERTIES:,}"
        )
    return LintReport(schema, tuple(walker.errors.values()), (*renamed, *walker.fixes.values()))

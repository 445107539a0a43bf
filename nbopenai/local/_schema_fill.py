"""Structured output for the demo model: a JSON value valid against a JSON schema, filled from text.

Simple extraction rules, not understanding. For each property the key name is the main hint:

- ``key: value`` / ``key is value`` in the text is used first, for any type;
- numbers (integers and decimals, near the key's words when possible, else the next unused one),
  emails, ISO dates (``2024-03-05``, ``5 March 2024``, ``March 5, 2024``), URLs, capitalised names;
- enum and ``const`` values that appear in the text, else the first allowed value;
- booleans from yes/no words and negations in the sentence that mentions the key;
- arrays of objects: one item per line (or sentence) that yields something, at least one;
- ``anyOf`` with ``null``: null when nothing was found; ``$ref``/``$defs`` and nested objects recurse.

Anything not found gets a typed default, so the result always validates.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Any

__all__ = ["fill_schema"]

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_URL = re.compile(r"https?://[^\s,;)\"']+")
_ISO_DATETIME = re.compile(r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?")
_ISO_DATE = re.compile(r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b")
_MONTHS = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
]
_MONTH = (
    r"(jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|jun(?:e)?|jul(?:y)?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)"
)
_DAY_MONTH_YEAR = re.compile(rf"\b(\d{{1,2}})(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH}\.?,?\s+(\d{{4}})\b", re.I)
_MONTH_DAY_YEAR = re.compile(rf"\b{_MONTH}\.?\s+(\d{{1,2}})(?:st|nd|rd|th)?,?\s+(\d{{4}})\b", re.I)
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:,\d{3})*(?:\.\d+)?(?![\w])")
_NAME = re.compile(
    r"\b[A-Z][\w'’-]*(?:\s+(?:[A-Z][\w'’-]*|de|van|von|da|di|del|la|le)(?=\s+[A-Z]|\b))*(?:\s+[A-Z][\w'’-]*)?"
)
_SENTENCES = re.compile(r"(?<=[.!?])\s+|\n+")
_NEGATION = re.compile(r"\b(not|no|never|false|none|without)\b|n't\b", re.I)
_YES = re.compile(r"\b(yes|true|yep|sure|correct|indeed)\b", re.I)
_NO_WORD = re.compile(r"\b(no|false|nope|never)\b", re.I)
_NOT_NAMES = frozenset(
    "a an the i my me we our you your he she it they this that these those what who where when why how "
    "which please is are was were do does did can could would should will yes no and or but if then so "
    "hello hi dear thanks thank ok okay also here there today tomorrow yesterday".split()
    + _MONTHS
    + "monday tuesday wednesday thursday friday saturday sunday".split()
)
_NAME_KEYS = frozenset(
    "name names author authors person people who city cities country countries place location company "
    "organisation organization owner customer user speaker sender recipient title".split()
)
_TEXT_KEYS = frozenset(
    "summary description text content answer reason comment note notes message sentence explanation".split()
)
_DATE_KEYS = frozenset("date day birthday born deadline due when dob since until start end".split())
_TAG_KEYS = frozenset("tags tag keywords keyword topics topic labels".split())
_MAX_DEPTH = 12


def _key_words(key: str | None) -> list[str]:
    if not key:
        return []
    spaced = re.sub(r"([a-z])([A-Z])", r"\1 \2", key)
    return [w for w in re.split(r"[\W_]+", spaced.lower()) if w]


def _iso(year: str, month: int, day: str) -> str | None:
    try:
        return dt.date(int(year), month, int(day)).isoformat()
    except ValueError:
        return None


def _month_number(name: str) -> int:
    return next(i + 1 for i, month in enumerate(_MONTHS) if month.startswith(name.lower()[:3]))


def _dates(text: str) -> list[tuple[int, str]]:
    found = []
    for m in _ISO_DATE.finditer(text):
        found.append((m.start(), _iso(m.group(1), int(m.group(2)), m.group(3))))
    for m in _DAY_MONTH_YEAR.finditer(text):
        found.append((m.start(), _iso(m.group(3), _month_number(m.group(2)), m.group(1))))
    for m in _MONTH_DAY_YEAR.finditer(text):
        found.append((m.start(), _iso(m.group(3), _month_number(m.group(1)), m.group(2))))
    return sorted((pos, iso) for pos, iso in found if iso)


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCES.split(text) if s and s.strip()]


def _number(text: str) -> float:
    return float(text.replace(",", ""))


class _Text:
    """One piece of source text and what the rules found in it, with numbers consumed as used."""

    def __init__(self, text: str) -> None:
        self.text = text
        masked = text
        for pattern in (_URL, _EMAIL, _ISO_DATETIME, _ISO_DATE, _DAY_MONTH_YEAR, _MONTH_DAY_YEAR):
            masked = pattern.sub(lambda m: " " * len(m.group(0)), masked)
        self.masked = masked
        self.numbers = [(m.start(), m.group(0)) for m in _NUMBER.finditer(masked)]
        self.used_numbers: set[int] = set()
        self.used_names: set[str] = set()
        self.dates = _dates(text)
        self.sentences = _sentences(text)
        self.names = []
        for m in _NAME.finditer(masked):
            words = [w for w in m.group(0).split() if w.lower().strip("'’") not in _NOT_NAMES]
            if words and not (len(words) == 1 and words[0].isupper() and len(words[0]) == 1):
                self.names.append(" ".join(words))

    def labelled(self, key: str | None) -> str | None:
        """The value in ``key: value`` or ``key is value``."""
        words = _key_words(key)
        if not words:
            return None
        label = r"[\s_-]*".join(re.escape(w) for w in words)
        m = re.search(rf"\b{label}s?\b\s*(?::|=|\bis\b|\bare\b|\bwas\b|\bwere\b)\s*([^.;\n]+)", self.text, re.I)
        return m.group(1).strip().strip("\"'“”") if m else None

    def number(self, key: str | None, integer: bool) -> float | None:
        words = _key_words(key)
        candidates = [(pos, raw) for pos, raw in self.numbers if pos not in self.used_numbers]
        if integer:
            candidates = [(pos, raw) for pos, raw in candidates if float(_number(raw)).is_integer()]
        if "year" in words:
            years = [(p, r) for p, r in candidates if re.fullmatch(r"[12]\d{3}", r)]
            candidates = years or candidates
        best = None
        for word in words:
            for m in re.finditer(rf"\b{re.escape(word)}", self.masked, re.I):
                for pos, raw in candidates:
                    distance = pos - m.end() if pos >= m.end() else m.start() - pos - len(raw)
                    if distance < 40 and (best is None or distance < best[0]):
                        best = (distance, pos, raw)
        if best is None and candidates:
            best = (0, *candidates[0])
        if best is None:
            return None
        self.used_numbers.add(best[1])
        return _number(best[2])

    def name(self) -> str:
        """The first capitalised name no other field took yet (or the first one again)."""
        for name in self.names:
            if name not in self.used_names:
                self.used_names.add(name)
                return name
        return self.names[0]

    def sentence_with(self, key: str | None) -> str | None:
        for word in _key_words(key):
            for sentence in self.sentences:
                if re.search(rf"\b{re.escape(word)}", sentence, re.I):
                    return sentence
        return None


class _Filler:
    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root

    def resolve(self, schema: Any) -> dict[str, Any]:
        seen = 0
        while isinstance(schema, dict) and "$ref" in schema and seen < _MAX_DEPTH:
            ref = schema["$ref"]
            target: Any = self.root
            for part in ref.lstrip("#").strip("/").split("/") if ref != "#" else []:
                target = target[part.replace("~1", "/").replace("~0", "~")]
            extra = {k: v for k, v in schema.items() if k != "$ref"}
            schema = {**target, **extra} if extra else target
            seen += 1
        return schema if isinstance(schema, dict) else {}

    def fill(self, schema: Any, source: _Text, key: str | None, depth: int = 0) -> tuple[Any, bool]:
        schema = self.resolve(schema)
        if depth > _MAX_DEPTH:
            return _default(schema), False
        if "const" in schema:
            return schema["const"], False
        if "enum" in schema:
            return _enum(schema["enum"], source)
        for combinator in ("anyOf", "oneOf"):
            if combinator in schema:
                return self._any_of(schema[combinator], source, key, depth)
        if "allOf" in schema:
            merged: dict[str, Any] = {}
            for part in schema["allOf"]:
                part = self.resolve(part)
                merged = {
                    **merged,
                    **part,
                    "properties": {**merged.get("properties", {}), **part.get("properties", {})},
                }
            return self.fill({k: v for k, v in merged.items() if v or k != "properties"}, source, key, depth + 1)
        kind = schema.get("type")
        if isinstance(kind, list):
            return self._any_of([{**schema, "type": t} for t in kind], source, key, depth)
        if kind is None:
            kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
        method = getattr(self, f"_{kind}", None)
        if method is None:
            return None, False
        return method(schema, source, key, depth)

    def _any_of(self, options: list[Any], source: _Text, key: str | None, depth: int) -> tuple[Any, bool]:
        resolved = [self.resolve(o) for o in options]
        nullable = any(o.get("type") == "null" for o in resolved)
        first: tuple[Any, bool] | None = None
        for option in resolved:
            if option.get("type") == "null":
                continue
            value, found = self.fill(option, source, key, depth + 1)
            if found:
                return value, True
            first = first or (value, False)
        if nullable or first is None:
            return None, False
        return first

    def _null(self, schema: dict[str, Any], source: _Text, key: str | None, depth: int) -> tuple[Any, bool]:
        return None, False

    def _object(self, schema: dict[str, Any], source: _Text, key: str | None, depth: int) -> tuple[Any, bool]:
        # "found" is a count here, so arrays can prefer the segments that filled the most fields.
        result, found_count = {}, 0
        for name, sub in (schema.get("properties") or {}).items():
            value, found = self.fill(sub, source, name, depth + 1)
            result[name] = value
            found_count += bool(found)
        return result, found_count

    def _array(self, schema: dict[str, Any], source: _Text, key: str | None, depth: int) -> tuple[Any, bool]:
        item_schema = self.resolve(schema.get("items") or {})
        singular = (key or "")[:-1] if (key or "").endswith("s") else key
        if item_schema.get("type") == "object" or "properties" in item_schema:
            values, found = self._objects(item_schema, source, singular, depth)
        else:
            values, found = self._scalars(item_schema, source, key, singular, depth)
        max_items = schema.get("maxItems")
        if max_items is not None:
            values = values[:max_items]
        while len(values) < schema.get("minItems", 0):
            values.append(self.fill(item_schema, _Text(source.text), singular, depth + 1)[0])
        if schema.get("uniqueItems"):
            unique = []
            for value in values:
                if value not in unique:
                    unique.append(value)
            values = unique
        return values, found

    def _objects(
        self, item_schema: dict[str, Any], source: _Text, key: str | None, depth: int
    ) -> tuple[list[Any], bool]:
        lines = [line.strip(" -*•\t") for line in source.text.splitlines() if line.strip(" -*•\t")]
        segments = lines if len(lines) > 1 else source.sentences
        scored = [self.fill(item_schema, _Text(segment), key, depth + 1) for segment in segments]
        best = max((int(found) for _, found in scored), default=0)
        values = [value for value, found in scored if found and int(found) * 2 >= best]
        if values:
            return values, True
        return [self.fill(item_schema, _Text(source.text), key, depth + 1)[0]], False

    def _scalars(
        self, item_schema: dict[str, Any], source: _Text, key: str | None, singular: str | None, depth: int
    ) -> tuple[list[Any], bool]:
        kind = item_schema.get("type")
        words = set(_key_words(key)) | set(_key_words(singular))
        if "enum" in item_schema:
            values = _enum_all(item_schema["enum"], source)
            return (values, True) if values else ([], False)
        if kind in ("integer", "number"):
            numbers = [_number(raw) for _, raw in source.numbers]
            numbers = [int(n) for n in numbers if n.is_integer()] if kind == "integer" else numbers
            return numbers, bool(numbers)
        if kind == "boolean":
            return [self._boolean(item_schema, source, key, depth)[0]], False
        if kind == "string" or kind is None:
            fmt = item_schema.get("format")
            if fmt == "email" or "email" in words or "emails" in words:
                return _unique(_EMAIL.findall(source.text)), True
            if fmt == "date" or words & _DATE_KEYS or "dates" in words:
                return _unique(iso for _, iso in source.dates), bool(source.dates)
            if fmt == "uri" or words & {"url", "urls", "link", "links"}:
                return _unique(_URL.findall(source.text)), True
            labelled = source.labelled(key) or source.labelled(singular)
            if labelled:
                return [p.strip() for p in re.split(r",|\band\b", labelled) if p.strip()], True
            if words & _NAME_KEYS:
                return _unique(source.names), bool(source.names)
            if words & _TAG_KEYS:
                long_words = sorted(set(re.findall(r"[A-Za-z]{5,}", source.text)), key=lambda w: (-len(w), w))
                return long_words[:5], bool(long_words)
            return source.sentences[:], False
        return [self.fill(item_schema, source, singular, depth + 1)[0]], False

    def _string(self, schema: dict[str, Any], source: _Text, key: str | None, depth: int) -> tuple[Any, bool]:
        value, found = self._string_value(schema, source, key)
        max_length = schema.get("maxLength")
        if max_length is not None:
            value = value[:max_length]
        if len(value) < schema.get("minLength", 0):
            value = value.ljust(schema["minLength"], ".")
        return value, found

    def _string_value(self, schema: dict[str, Any], source: _Text, key: str | None) -> tuple[str, bool]:
        fmt = schema.get("format")
        words = set(_key_words(key))
        if fmt == "date-time":
            m = _ISO_DATETIME.search(source.text)
            if m:
                return m.group(0).replace(" ", "T"), True
            if source.dates:
                return source.dates[0][1] + "T00:00:00Z", True
            return "1970-01-01T00:00:00Z", False
        if fmt == "date" or (fmt is None and words & _DATE_KEYS and source.dates):
            return (source.dates[0][1], True) if source.dates else ("1970-01-01", False)
        if fmt == "time":
            m = re.search(r"\b\d{1,2}:\d{2}(?::\d{2})?\b", source.text)
            return (m.group(0) if m else "00:00:00"), bool(m)
        if fmt == "email" or "email" in words:
            m = _EMAIL.search(source.text)
            return (m.group(0), True) if m else ("demo@example.com", False)
        if fmt == "uuid":
            return str(uuid.uuid5(uuid.NAMESPACE_URL, source.text)), False
        if fmt in ("uri", "url") or words & {"url", "link", "website", "homepage"}:
            m = _URL.search(source.text)
            return (m.group(0), True) if m else ("https://example.com", False)
        labelled = source.labelled(key)
        if labelled:
            return labelled, True
        if words & _NAME_KEYS and source.names:
            return source.name(), True
        if words & _TEXT_KEYS and source.sentences:
            return source.sentences[0], True
        return (source.sentences[0] if source.sentences else ""), False

    def _integer(self, schema: dict[str, Any], source: _Text, key: str | None, depth: int) -> tuple[Any, bool]:
        value = source.number(key, integer=True)
        return _clamp(int(value) if value is not None else 0, schema, integer=True), value is not None

    def _number(self, schema: dict[str, Any], source: _Text, key: str | None, depth: int) -> tuple[Any, bool]:
        value = source.number(key, integer=False)
        return _clamp(value if value is not None else 0.0, schema, integer=False), value is not None

    def _boolean(self, schema: dict[str, Any], source: _Text, key: str | None, depth: int) -> tuple[Any, bool]:
        sentence = source.sentence_with(key)
        if sentence is not None:
            return not _NEGATION.search(sentence), True
        if _YES.search(source.text):
            return True, True
        if _NO_WORD.search(source.text):
            return False, True
        return False, False


def _unique(values: Any) -> list[Any]:
    seen: list[Any] = []
    for value in values:
        if value not in seen:
            seen.append(value)
    return seen


def _enum_positions(options: list[Any], source: _Text) -> list[tuple[int, Any]]:
    found = []
    for option in options:
        if isinstance(option, str):
            spoken = re.escape(option).replace(r"\_", "[ _-]").replace("_", "[ _-]")
            m = re.search(rf"(?<!\w){spoken}(?!\w)", source.text, re.I)
        elif isinstance(option, bool) or option is None:
            m = None
        else:
            m = re.search(rf"(?<![\w.]){re.escape(str(option))}(?![\w])", source.text)
        if m:
            found.append((m.start(), option))
    return sorted(found, key=lambda pair: pair[0])


def _enum(options: list[Any], source: _Text) -> tuple[Any, bool]:
    found = _enum_positions(options, source)
    if found:
        return found[0][1], True
    return (options[0] if options else None), False


def _enum_all(options: list[Any], source: _Text) -> list[Any]:
    return _unique(option for _, option in _enum_positions(options, source))


def _clamp(value: float, schema: dict[str, Any], integer: bool) -> float:
    low = schema.get("minimum")
    high = schema.get("maximum")
    if schema.get("exclusiveMinimum") is not None:
        low = schema["exclusiveMinimum"] + (1 if integer else 1e-9)
    if schema.get("exclusiveMaximum") is not None:
        high = schema["exclusiveMaximum"] - (1 if integer else 1e-9)
    if low is not None and value < low:
        value = low
    if high is not None and value > high:
        value = high
    return int(value) if integer else value


def _default(schema: dict[str, Any]) -> Any:
    return {"string": "", "integer": 0, "number": 0.0, "boolean": False, "array": [], "object": {}}.get(
        schema.get("type"), None
    )


def fill_schema(schema: dict[str, Any], text: str, *, fallback_text: str | None = None) -> Any:
    """A value valid against ``schema`` with what simple rules find in ``text``.

    When nothing at all is found in ``text`` and ``fallback_text`` is given, that is tried instead.
    """
    filler = _Filler(schema)
    value, found = filler.fill(schema, _Text(text), None)
    if not found and fallback_text and fallback_text != text:
        value, _ = filler.fill(schema, _Text(fallback_text), None)
    return value

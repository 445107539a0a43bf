"""{name} interpolation: one pass, literal braces, bounded DataFrame previews."""

import pandas as pd

from nbopenai._core._tokens import count_tokens
from nbopenai._turns._prompt import PREVIEW_TOKEN_BUDGET, interpolate


def test_names_are_replaced_and_everything_else_stays_literal():
    ns = {"x": 3, "name": "Ada"}
    template = 'Hi {name}! {x} {missing} {x.real} {0} {"k": 1} {{x}} def f(): return {}'
    assert interpolate(template, ns) == 'Hi Ada! 3 {missing} {x.real} {0} {"k": 1} {x} def f(): return {}'


def test_values_are_never_scanned_again():
    ns = {"a": "{secret}", "secret": "TOPSECRET"}
    assert interpolate("{a}", ns) == "{secret}"


def test_dataframe_preview_is_markdown_with_schema_and_bounded_in_tokens():
    frame = pd.DataFrame({"id": range(5000), "text": ["a fairly long review text " * 8] * 5000})
    text = interpolate("Look: {frame}", {"frame": frame})
    assert "5,000 rows × 2 columns" in text and "id: int64" in text
    assert "|  | id | text |" in text
    assert count_tokens(text) <= PREVIEW_TOKEN_BUDGET + 10
    assert "more rows not shown" in text

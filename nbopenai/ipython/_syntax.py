"""Input rewriting so that ``%ask What is a p-value?`` asks instead of opening help.

IPython reads a line ending in ``?`` as a help request for the last name on it
(``%ask What is my name?`` would run ``%pinfo name``). Questions end in ``?``, so before IPython's
token transforms run, a ``%ask`` line with a prompt is rewritten into the call it stands for.
``%ask?`` alone (no prompt) still shows the help.
"""

from __future__ import annotations

import re

__all__ = ["ask_lines_keep_question_marks"]

_ASK_LINE = re.compile(r"^(?P<indent>[ \t]*)%ask[ \t]+(?P<rest>\S.*?\?)[ \t]*(?P<end>\r?\n?)$")


def ask_lines_keep_question_marks(lines: list[str]) -> list[str]:
    """An IPython line transform: ``%ask ...?`` lines become ``run_line_magic('ask', '...?')``."""
    return [_rewrite(line) for line in lines]


def _rewrite(line: str) -> str:
    match = _ASK_LINE.match(line)
    if match is None:
        return line
    return f"{match['indent']}get_ipython().run_line_magic('ask', {match['rest']!r}){match['end']}"

"""Input rewriting so that ``%ask What is a p-value?`` asks instead of opening help.

IPython reads a line ending in ``?`` as a help request for the last name on it
(``%ask What is my name?`` would run ``%pinfo name``). Questions end in ``?``, so before IPython's
token transforms run, a ``%ask`` line with a prompt is rewritten into the call it stands for.
``%ask?`` alone (no prompt) still shows the help.

The cell that loads the extension was transformed before the transform existed, so its ``%ask …?``
lines already became help requests (``%pinfo name``: "Object `name` not found", nothing asked);
``ipython script.ipy`` runs a whole script as one such cell. ``reread_the_running_cell`` corrects
that cell: until it ends, a help request made from one of those lines asks instead.
"""

from __future__ import annotations

import ast
import functools
import re
import sys
from typing import Any

__all__ = ["ask_lines_keep_question_marks", "reread_the_running_cell"]

# IPython's help requests, what a line ending in `?` becomes (see IPython's `_make_help_call`).
_HELP_MAGICS = ("pinfo", "pinfo2", "psearch")

_ASK_LINE = re.compile(r"^(?P<indent>[ \t]*)%ask[ \t]+(?P<rest>\S.*?\?)[ \t]*(?P<end>\r?\n?)$")


def ask_lines_keep_question_marks(lines: list[str]) -> list[str]:
    """An IPython line transform: ``%ask ...?`` lines become ``run_line_magic('ask', '...?')``."""
    return [_rewrite(line) for line in lines]


def _rewrite(line: str) -> str:
    match = _ASK_LINE.match(line)
    if match is None:
        return line
    return f"{match['indent']}get_ipython().run_line_magic('ask', {match['rest']!r}){match['end']}"


def _magic_call(line: str) -> tuple[str, str] | None:
    """``(name, argument)`` of a ``get_ipython().run_line_magic(name, argument)`` line, else ``None``."""
    try:
        node = ast.parse(line.strip()).body[0]
    except (SyntaxError, IndexError):
        return None
    call = getattr(node, "value", None)
    if not (
        isinstance(call, ast.Call) and getattr(call.func, "attr", None) == "run_line_magic" and len(call.args) == 2
    ):
        return None
    name, argument = (getattr(arg, "value", None) for arg in call.args)
    return (name, argument) if isinstance(name, str) and isinstance(argument, str) else None


def _misread_asks(shell: Any, raw_cell: str) -> dict[int, tuple[str, str]]:
    """Line number -> (help magic it became, ``%ask`` argument) for the cell as it was compiled."""
    transforms = shell.input_transformer_manager.line_transforms
    transforms.remove(ask_lines_keep_question_marks)
    try:
        as_run = shell.transform_cell(raw_cell).splitlines()
    finally:
        transforms.append(ask_lines_keep_question_marks)
    as_meant = shell.transform_cell(raw_cell).splitlines()
    if len(as_run) != len(as_meant):  # the lines no longer correspond: leave the cell as it is
        return {}
    misread = {}
    for number, (ran, meant) in enumerate(zip(as_run, as_meant, strict=False), start=1):
        if ran != meant and (helped := _magic_call(ran)) and (asked := _magic_call(meant)):
            if helped[0] in _HELP_MAGICS and asked[0] == "ask":
                misread[number] = (helped[0], asked[1])
    return misread


def _line_in(filename: str) -> int | None:
    """The line of ``filename`` (a cell's code) on the call stack, if any."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_filename == filename:
            return frame.f_lineno
        frame = frame.f_back
    return None


def reread_the_running_cell(shell: Any) -> None:
    """Let the running cell's ``%ask …?`` lines ask, though IPython read them as help requests.

    Call it from ``load_ipython_extension`` once the transform is registered. The cell being run is
    the one IPython's display hook is filling in; outside a cell, or with no such line, nothing happens.
    """
    result = getattr(shell.displayhook, "exec_result", None)
    raw_cell = getattr(getattr(result, "info", None), "raw_cell", None)
    if not raw_cell or "%ask" not in raw_cell:
        return
    try:
        misread = _misread_asks(shell, raw_cell)
    except Exception:  # noqa: BLE001 - IPython's transforms may refuse odd input; loading must still work
        return
    frame = sys._getframe(1)
    while frame is not None and frame.f_globals is not shell.user_global_ns:
        frame = frame.f_back
    if not misread or frame is None:
        return
    filename = frame.f_code.co_filename  # the cell's code: where its help requests are called from
    magics = shell.magics_manager.magics["line"]
    # find_line_magic resolves a lazily registered magic (IPython 9), so the wrapper wraps the real one.
    originals = {name: shell.find_line_magic(name) for name, _ in misread.values()}
    originals = {name: magic for name, magic in originals.items() if magic is not None}

    def redirect(name: str, original: Any) -> Any:
        @functools.wraps(original)
        def help_or_ask(*args: Any, **kwargs: Any) -> Any:
            line = _line_in(filename)
            if line in misread and misread[line][0] == name:
                return shell.run_line_magic("ask", misread[line][1])
            return original(*args, **kwargs)

        return help_or_ask

    def restore() -> None:
        shell.events.unregister("post_execute", restore)
        magics.update(originals)

    magics.update({name: redirect(name, original) for name, original in originals.items()})
    shell.events.register("post_execute", restore)

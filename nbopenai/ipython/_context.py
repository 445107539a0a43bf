"""The notebook as context, IPython side: ``%ask --explain`` and code into the next cell.

``--explain`` sends the last failed cell and its traceback (kept by ``_history.CellHistory``) and
asks for the cause and a fix. ``--format code`` (and ``--explain --fix``) puts the answer's first
code block into a new cell below through IPython's ``set_next_input`` (a ``set_next_input``
payload the front-end turns into a cell, never run); a terminal prints it instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from IPython.core.magic_arguments import argument

from .._core._errors import UsageError
from .._turns._context import explain_prompt
from ._args import with_arguments
from ._render import first_code_block

if TYPE_CHECKING:
    from .._turns._answer import Answer
    from ._history import CellHistory

__all__ = ["context_arguments", "explained", "queue_code"]


def context_arguments(func: Callable) -> Callable:
    """Add the options that take the notebook itself as context."""
    return with_arguments([
        argument("--explain", action="store_true",
                 help="Send the last error (its traceback, bounded) and the cell that raised it; ask for the cause and a fix."),
        argument("--fix", action="store_true",
                 help="--explain, and put the corrected cell the answer gives into a new cell below (not run)."),
    ])(func)


def explained(history: "CellHistory", prompt: str, *, fix: bool) -> str:
    """``prompt`` (already interpolated) behind the explain request for the last error."""
    error = history.last_error()
    if error is None:
        raise UsageError("--explain: no cell has failed yet in this session, so there is no error to explain.")
    return explain_prompt(error, prompt, fix=fix)


def queue_code(shell: Any, answer: "Answer") -> str | None:
    """Put ``answer``'s first code block into a new cell below (a kernel) or print it (a terminal).

    Nothing runs: the front-end only creates the cell. Returns the code, or ``None`` if there was none.
    """
    code = first_code_block(answer.text) if answer.text else None
    if code is None:
        print("The answer has no code block: no cell added.")
        return None
    if getattr(shell, "kernel", None) is not None:
        shell.set_next_input(code, replace=False)
    else:
        print(f"The code, to paste into the next cell:\n\n{code}")
    return code

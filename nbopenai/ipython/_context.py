"""The notebook as context, IPython side: ``%ask --explain``, ``--context vars``/``{vars}``, code into the next cell.

``--explain`` sends the last failed cell and its traceback (kept by ``_history.CellHistory``) and
asks for the cause and a fix. ``--format code`` (and ``--explain --fix``) puts the answer's first
code block into a new cell below through IPython's ``set_next_input`` (a ``set_next_input``
payload the front-end turns into a cell, never run); a terminal prints it instead. ``{vars}`` and
``--context vars`` add a token-bounded summary of the user's variables (``_turns._context``), the
names IPython itself put in the namespace left out as ``%who`` leaves them out.
"""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from IPython.core.magic_arguments import argument

from .._core._errors import UsageError
from .._turns._context import Variables, explain_prompt
from ._args import with_arguments
from ._render import first_code_block

if TYPE_CHECKING:
    from .._turns._answer import Answer
    from ._history import CellHistory

__all__ = ["context_arguments", "contextual_prompt", "prompt_namespace", "queue_code", "user_variables"]


def context_arguments(func: Callable) -> Callable:
    """Add the options that take the notebook itself as context."""
    return with_arguments([
        argument("--explain", action="store_true",
                 help="Send the last error (its traceback, bounded) and the cell that raised it; "
                      "ask for the cause and a fix."),
        argument("--fix", action="store_true",
                 help="--explain, and put the corrected cell the answer gives into a new cell below (not run)."),
        argument("--replay", action="store_true",
                 help="Reuse the stored answer if this exact request (prompt, settings, earlier turns) "
                      "was answered before; "
                      "send nothing (%%config AskMagics.replay = True for every cell)."),
        argument("--context", choices=("vars",),
                 help="vars: add a short summary of the notebook's variables (names, types, shapes, columns); "
                      "{vars} does it in place."),
    ])(func)


def user_variables(shell: Any) -> dict[str, Any]:
    """The user's own names: the namespace less what IPython put there at start (as ``%who`` shows it)."""
    hidden = getattr(shell, "user_ns_hidden", {})
    return {name: value for name, value in shell.user_ns.items() if name not in hidden}


def prompt_namespace(shell: Any) -> Mapping[str, Any]:
    """What ``{name}`` reads: the user's namespace, then ``{vars}`` (unless the user has a ``vars`` of their own)."""
    return ChainMap(shell.user_ns, {"vars": Variables(user_variables(shell))})


def contextual_prompt(args: Any, prompt: str, shell: Any, history: CellHistory) -> str:
    """``prompt`` (already interpolated) with what ``--explain``/``--fix`` and ``--context vars`` add.

    Added after interpolation, so nothing in a traceback or a value is ever read as ``{name}``.
    """
    if args.explain or args.fix:
        error = history.last_error()
        if error is None:
            raise UsageError("--explain: no cell has failed yet in this session, so there is no error to explain.")
        prompt = explain_prompt(error, prompt, fix=args.fix)
    if args.context == "vars":
        prompt = f"{prompt}\n\n{Variables(user_variables(shell))}"
    return prompt


def queue_code(shell: Any, answer: Answer) -> str | None:
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

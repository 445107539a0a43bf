"""Options shared by the asking magics, declared once with ``IPython.core.magic_arguments``.

``@ask_arguments`` adds the common options to a magic (as ``script_args`` does for ``%%script``);
``parse_ask`` parses a magic line and returns the prompt that follows the options verbatim;
``ask_options`` turns parsed options into the core's ``AskOptions`` keywords.
"""

from __future__ import annotations

import argparse
import builtins
import dataclasses
import keyword
import re
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any

from IPython.core.error import UsageError as _IPythonUsageError
from IPython.core.magic_arguments import argument, parse_argstring
from IPython.utils.process import arg_split

from .._core._errors import UsageError
from .._core._request import RequestOptions, request_option_fields
from .._core._settings import setting_fields

__all__ = [
    "FORMATS",
    "REQUEST_FLAGS",
    "ask_arguments",
    "ask_options",
    "attachments",
    "option_arguments",
    "options_from",
    "parse_ask",
    "parse_line",
    "text",
    "tool_loop_options",
    "variable_name",
    "with_arguments",
]

FORMATS = ("markdown", "text", "code", "json")


def text(value: str) -> str:
    """An option value with one pair of surrounding quotes removed.

    IPython splits magic lines without removing quotes (``-s "Be brief."`` arrives as
    ``'"Be brief."'``), so string options unquote themselves.
    """
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


# Names IPython keeps in the namespace for itself (the prompt history, the output cache, the shell):
# binding an answer to one breaks every later cell. The numbered caches (_1, _i1) are matched below.
_IPYTHON_NAMES = frozenset({
    "In", "Out", "get_ipython", "exit", "quit", "display", "_", "__", "___", "_i", "_ii", "_iii",
    "_ih", "_oh", "_dh", "_sh", "_exit_code",
})
_CACHE_NAME = re.compile(r"_i{0,3}\d+")


def variable_name(value: str) -> str:
    """An ``-o`` target: a plain identifier that is not a keyword, a dunder, a builtin or a name IPython needs.

    Binding ``-o __builtins__``, ``-o get_ipython`` or ``-o print`` (or ``-o "x y"``) would break
    every later cell, so such names are refused with a usage error before anything is sent.
    """
    name = text(value)
    if not name.isidentifier() or keyword.iskeyword(name) or (name.startswith("__") and name.endswith("__")):
        raise argparse.ArgumentTypeError(f"{name!r} is not a usable variable name")
    if name in _IPYTHON_NAMES or _CACHE_NAME.fullmatch(name) or hasattr(builtins, name):
        raise argparse.ArgumentTypeError(f"{name!r} is a name IPython or Python itself needs; pick another for -o")
    return name


# The request settings every asking magic takes as --flags, generated from ``RequestOptions``
# (model and instructions have their own short flags, -m and -s).
REQUEST_FLAGS = tuple(f.name for f in request_option_fields() if f.name not in ("model", "instructions"))


def _flag_type(options: type, name: str) -> Any:
    """The non-``None`` type of the field ``name`` of the dataclass ``options``."""
    hint = typing.get_type_hints(options)[name]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    return hint


def number(value: str) -> int | float:
    """A number flag's value as typed (``5`` stays 5), so a refusal quotes it as ``Session(...)`` and ``%config`` do."""
    try:
        return int(value)
    except ValueError:
        return float(value)


def option_arguments(options: type, names: Iterable[str]) -> list[Callable]:
    """``--flag`` arguments for the fields ``names`` of the options dataclass ``options``.

    Each flag's type comes from the field's annotation, its choices from the rule of the setting it
    overrides, its help from that setting (or the field's own ``help`` metadata): a new option is a
    field and its name here, and the magic's help follows.
    """
    by_name = {f.name: f for f in dataclasses.fields(options)}
    settings = setting_fields()
    made = []
    for name in names:
        f = by_name[name]
        setting = settings.get(f.metadata.get("setting", name))
        about = {**(setting.metadata if setting else {}), **f.metadata}
        kind = _flag_type(options, name)
        flag = "--" + name.replace("_", "-")
        help_text = (about.get("help") or "").replace("%", "%%")
        if kind is bool:
            made.append(argument(flag, action="store_true", help=help_text))
            continue
        rule = about.get("rule")
        extra: dict[str, Any] = {"choices": rule.choices} if rule is not None and rule.choices else {}
        if not extra:
            extra["metavar"] = "N" if kind in (int, float) else "TEXT"
        made.append(argument(flag, type={str: text, float: number}.get(kind, kind), help=help_text, **extra))
    return made


def with_arguments(arguments: list[Callable]) -> Callable[[Callable], Callable]:
    """A decorator adding ``arguments`` to a magic, in this order in its help."""

    def decorate(func: Callable) -> Callable:
        for option in reversed(arguments):  # decorators apply bottom-up
            func = option(func)
        return func

    return decorate


def options_from(args: argparse.Namespace, names: Iterable[str]) -> dict[str, Any]:
    """The parsed values of the flags ``option_arguments`` made, keyed by field name."""
    return {name: getattr(args, name) for name in names}


def ask_arguments(func: Callable) -> Callable:
    """Add the options every asking magic shares (model, thread, instructions, display...)."""
    options = [
        argument("-m", "--model", type=text, help="Model for this turn (default: %%config AskMagics.model)."),
        argument("-t", "--thread", type=text, default="default", metavar="NAME",
                 help="Conversation thread to continue (default: 'default')."),
        argument("--new", action="store_true", help="Start the thread afresh (forget its earlier turns)."),
        argument("--store", choices=("response", "conversation"), metavar="response|conversation",
                 help="Where a new thread is kept: chained responses, or a conversation object "
                      "(default: %%config AskMagics.thread_store)."),
        argument("-s", "--system", type=text, metavar="TEXT",
                 help="Instructions (system prompt) for this turn; quote it."),
        *option_arguments(RequestOptions, REQUEST_FLAGS),
        argument("--no-stream", action="store_true", help="Wait for the whole answer instead of streaming it."),
        argument("--background", action="store_true",
                 help="Submit as a background job and return at once; the view fills in when done."),
        argument("--format", choices=FORMATS, default="markdown",
                 help="How to show the answer: markdown (default), text, code (fenced code only), json (pretty)."),
        argument("--dry-run", action="store_true",
                 help="Show the exact request and its token count; send nothing."),
        argument("--tools", type=text, metavar="F,G",
                 help="Python functions from the notebook the model may call (comma-separated)."),
        argument("--confirm", action="store_true", help="Ask before running each tool call."),
        argument("--max-tool-rounds", type=int, metavar="N", help="Cap on tool-calling rounds (default 5)."),
        argument("--image", action="append", type=text, metavar="PATH_OR_URL",
                 help="Attach an image file or URL (repeatable); {fig} in the prompt attaches a figure."),
        argument("-o", "--out", type=variable_name, metavar="NAME",
                 help="Also bind the Answer to this variable (the DryRun with --dry-run, the Job with --background)."),
    ]
    return with_arguments(options)(func)


def _rest_of_line(line: str, consumed: list[str]) -> str:
    """``line`` after the tokens the options consumed, verbatim (spacing and quotes kept)."""
    position = 0
    for token in consumed:
        position = line.index(token, position) + len(token)
    rest = line[position:].strip()
    if rest == "--" or rest.startswith("-- "):  # "--" ends the options; it is not part of the prompt
        rest = rest[2:].strip()
    return rest


def _without_comment(line: str) -> str:
    """``line`` up to a ``#`` that starts a word outside quotes (``%nbopenai jobs  # what runs``)."""
    quote = None
    for position, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char == "#" and (position == 0 or line[position - 1].isspace()):
            return line[:position]
    return line


def parse_line(magic: Callable, line: str) -> argparse.Namespace:
    """``parse_argstring`` where a trailing ``# comment`` is ignored and an unbalanced quote is a usage error."""
    try:
        return _parse(magic, _without_comment(line))
    except ValueError as exc:
        raise UsageError(f"could not read the options: {exc} (check the quotes)") from None


def _parse(magic: Callable, line: str, **kwargs: Any) -> Any:
    """``parse_argstring``, its refusals (IPython's own ``UsageError``) raised as the core's ``UsageError``
    so that every usage error a magic shows is one class, shown by ``_errors.reported``."""
    try:
        return parse_argstring(magic, line, **kwargs)
    except _IPythonUsageError as exc:
        raise UsageError(str(exc)) from None


def parse_ask(magic: Callable, line: str) -> tuple[argparse.Namespace, str]:
    """Parse ``line`` with ``magic``'s arguments; return them and the prompt text after the options.

    The prompt is everything from the first word that is not an option, exactly as typed: a
    prompt may contain quotes, apostrophes or ``-5`` without confusing the parser (``--`` ends
    the options explicitly).
    """
    # partial=True splits leniently (an unbalanced quote belongs to the prompt, not an error)
    args, unknown = _parse(magic, line, partial=True)
    if unknown:
        raise UsageError(f"unrecognized arguments: {' '.join(unknown)}")

    tokens = arg_split(line, strict=False)
    prompt = _rest_of_line(line, tokens[: len(tokens) - len(args.prompt)])
    return args, prompt


def attachments(args: argparse.Namespace, namespace: dict[str, Any], parts: tuple[dict, ...]) -> dict[str, Any]:
    """``images`` and ``tools`` for ``Session.prepare``/``ask``: figures from ``{fig}``, ``--image``, ``--tools``."""
    from .._turns._tools import tools_from_namespace  # noqa: PLC0415 - pydantic loads when tools are used

    options: dict[str, Any] = {}
    if images := [*parts, *(args.image or [])]:
        options["images"] = images
    if args.tools:
        options["tools"] = tools_from_namespace(args.tools, namespace)
    return options


def tool_loop_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options only a live (not dry-run, not background) ask takes: confirmation and the round cap."""
    from .._turns._tools import ask_before_running  # noqa: PLC0415 - pydantic loads when tools are used

    options: dict[str, Any] = {}
    if args.confirm:
        options["confirm"] = ask_before_running
    if args.max_tool_rounds is not None:
        options["max_tool_rounds"] = args.max_tool_rounds
    return options


def ask_options(args: argparse.Namespace, *, cell_id: str | None) -> dict[str, Any]:
    """The core's ``AskOptions`` keywords for parsed ``args``."""
    return {
        "thread": args.thread,
        "new": args.new,
        "thread_store": getattr(args, "store", None),
        "model": args.model,
        "instructions": args.system,
        **options_from(args, REQUEST_FLAGS),
        "stream": not args.no_stream,
        "cell_id": cell_id,
    }

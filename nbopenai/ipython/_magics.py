"""``AskMagics``: ``%%ask`` / ``%ask`` and ``%nbopenai``, thin over one ``Session``.

The magics parse, call the core, and display; conversation state lives in the session, and the
only thing kept here is execution context: the id of the cell now running (from IPython's
``pre_run_cell`` event), which keys each turn to the cell that asked it.
"""

from __future__ import annotations

import argparse
import re
from contextlib import AbstractContextManager, nullcontext
from functools import partial
from importlib.util import find_spec
from typing import TYPE_CHECKING, Any

from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, magic_arguments
from IPython.display import display
from traitlets import Bool, Enum

from .. import widgets  # the package loads no ipywidgets; widgets.AnswerView loads the view
from .._core._errors import UsageError
from .._session import Session
from .._turns._images import fill_with_images
from .._turns._printer import StdoutSink
from .._turns._replay import Replays
from . import _admin
from ._args import ask_arguments, ask_options, attachments, parse_ask, parse_line, text, tool_loop_options
from ._context import context_arguments, contextual_prompt, prompt_namespace, queue_code
from ._errors import reported
from ._history import CellHistory
from ._render import DryRun, answer_output
from ._traits import setting_traits

if TYPE_CHECKING:
    from .._session import Session
    from .._turns._ask import AskSink
    from .._turns._jobs import Job

__all__ = ["AskMagics"]


def _trim(cell: str) -> str:
    """The cell without its leading blank lines and trailing whitespace (indentation kept)."""
    return re.sub(r"\A(?:[ \t]*\n)+", "", cell).rstrip()


# Every setting is a trait of AskMagics, a view of the session's (see _traits); concurrency is
# configured per magic as ExtractMagics.concurrency instead.
SessionSettings = type(
    "SessionSettings", (Magics,), {**setting_traits(leave_out=("concurrency",)), "__doc__": "The session's settings."}
)


@magics_class
class AskMagics(SessionSettings):
    """Ask the OpenAI Responses API from IPython: ``%%ask``, ``%ask`` and ``%nbopenai``.

    Every setting below is a trait: ``%config AskMagics.model = "gpt-4.1"`` in a notebook, or
    ``c.AskMagics.model = "gpt-4.1"`` in ``ipython_config.py``. Unset ones follow the session
    (``OPENAI_BASE_URL``, ``NBOPENAI_MODEL``...). The API key is never a trait: it is read from
    ``OPENAI_API_KEY`` only, so it cannot end up in a config file or a notebook.
    """

    widgets = Enum(("auto", "on", "off"), "auto", help="Live widget view: auto (in a kernel), on, off (stdout).").tag(
        config=True
    )
    replay = Bool(
        False, help="Reuse a cell's stored answer when its prompt, settings and earlier turns are unchanged (--replay)."
    ).tag(config=True)

    def __init__(self, shell: Any = None, session: Session | None = None, **kwargs: Any) -> None:
        if session is None:
            session = Session()
        # Set before traitlets loads the config: configured values are pushed into the session.
        self.session = session
        self.cell_id: str | None = None  # the cell now running, if the front-end said
        self._asks_in_cell = 0
        self.history = CellHistory(shell, self._secrets)  # {In[n]}, {Out[n]}, {Err[n]} and the last error
        self.replays = Replays(session)  # --replay / AskMagics.replay
        super().__init__(shell=shell, **kwargs)

    # ---- execution context ------------------------------------------------------------------

    def pre_run_cell(self, info: Any) -> None:
        """IPython event: remember which cell runs (JupyterLab's ``cellId``; ``None`` elsewhere)."""
        self.cell_id = getattr(info, "cell_id", None)
        self._asks_in_cell = 0
        self.history.pre_run_cell(info)

    def post_run_cell(self, result: Any) -> None:
        self.cell_id = None
        self.history.post_run_cell(result)

    def _cell_key(self, *, consume: bool = True) -> str | None:
        """The key of the next turn: the cell id, suffixed for a second ask in the same cell."""
        if self.cell_id is None:
            return None
        number = self._asks_in_cell + 1
        if consume:
            self._asks_in_cell = number
        return self.cell_id if number == 1 else f"{self.cell_id}#{number}"

    # ---- the magics -------------------------------------------------------------------------

    @no_var_expand
    @magic_arguments()
    @ask_arguments
    @context_arguments
    @argument("prompt", nargs=argparse.REMAINDER, help="%%%%ask: nothing (the cell is the prompt). %%ask: the prompt.")
    @line_cell_magic
    def ask(self, line: str, cell: str | None = None) -> None:
        """Ask the model; the answer streams into the output, then stays as Markdown.

        The cell body is the prompt (for ``%ask``, the rest of the line). ``{name}`` inserts the
        value of a variable (a DataFrame as a compact preview); ``{{`` and ``}}`` are literal
        braces; anything else in braces stays as typed (a ``{name}`` that names nothing is listed
        before sending). ``{In[3]}``, ``{Out[-1]}`` and ``{Err[-1]}`` insert a cell's input, output
        or error (negative: counting back from this cell); ``{vars}`` (or ``--context vars``) a short
        summary of the notebook's variables. ``--explain`` sends the last error and the cell that
        raised it; ``--fix`` (or ``--format code``) puts the answer's code into a new cell below, not
        run. Turns chain in a thread: re-running a cell replaces its turn (later turns are dropped)
        instead of appending a new one.

        Examples
        --------
        ::

            %%ask
            Explain a p-value in one paragraph.

            %%ask -t stats --model gpt-4.1 -s "Answer in French."
            Summarise {df}. What stands out?

            %ask --new What is a Bloom filter?

            %%ask --dry-run -o request
            Show me the request, send nothing.

            %%ask --format json -o result
            List three primes as a JSON array.
        """
        with reported(*self._secrets()):
            args, rest = parse_ask(self.ask, line)
            if cell is not None and rest:
                raise UsageError(f"%%ask takes its prompt from the cell; unexpected text after the options: {rest!r}")
            filled, figures = fill_with_images(
                rest if cell is None else _trim(cell), prompt_namespace(self.shell), references=self.history.reference
            )
            if note := filled.left_note():
                print(note)
            prompt = contextual_prompt(args, filled.text, self.shell, self.history)
            options = ask_options(args, cell_id=self._cell_key(consume=not args.dry_run))
            options.update(attachments(args, self.shell.user_ns, figures))
            if args.dry_run:
                result: Any = DryRun(self.session.prepare(prompt, **options), self.session.settings.base_url)
                display(result)
            elif args.background:
                result = self._submit(prompt, args.format, options)
            else:
                replay = (args.replay or self.replay) and not args.tools  # a tool loop's rounds are not replayed
                with self._live_view(args.format) as view:
                    ask = self.replays.ask if replay else self.session.ask
                    result = ask(prompt, sink=view, **options, **tool_loop_options(args))
                if args.format == "code" or args.fix:
                    queue_code(self.shell, result)
        if args.out:
            self.shell.user_ns[args.out] = result

    @magic_arguments()
    @argument("command", nargs="?", default="help", choices=sorted(_admin.COMMANDS), help="What to do (default: help).")
    @argument(
        "target",
        nargs="?",
        metavar="JOB|clear|ENDPOINT",
        help="cancel: the job id (from `%%nbopenai jobs`); cache: `clear` empties it; azure: the endpoint.",
    )
    @argument(
        "-t",
        "--thread",
        type=text,
        metavar="NAME",
        help="history, reset, compact, explain: the thread (default 'default'); usage: filter.",
    )
    @argument(
        "--all", action="store_true", help="reset: every thread; usage: every kernel's calls, not just this one's."
    )
    @argument("--summary", action="store_true", help="usage: totals per model and thread.")
    @argument("--plot", action="store_true", help="usage: cumulative tokens and cost over time (needs matplotlib).")
    @argument("--since", type=text, help="usage: calls since a duration ago (30m, 2d) or an ISO date.")
    @argument(
        "--model",
        type=text,
        help="usage: only this model's calls; compact: the model that compacts; cache clear: only its answers.",
    )
    @argument("--schema", type=text, metavar="NAME", help="cache clear: only the answers of this Pydantic class.")
    @argument(
        "--api-version", type=text, help="azure: the API version, where the endpoint needs one (default: v1 API)."
    )
    @argument(
        "--token-provider",
        type=text,
        metavar="NAME",
        help="azure: the variable holding a zero-argument callable that returns an Entra ID token.",
    )
    @argument(
        "--deployment",
        type=text,
        action="append",
        metavar="NAME=MODEL",
        help="azure: a deployment and the model it runs, for prices (repeatable).",
    )
    @line_magic
    def nbopenai(self, line: str) -> Any:
        """Look after nbopenai: threads, history, reset, compact, explain, status, local, azure, jobs, cancel, usage,
        cache, help.

        ``%nbopenai azure [ENDPOINT] [--api-version V] [--token-provider NAME] [--model DEPLOYMENT]
        [--deployment DEPLOYMENT=MODEL]`` points the session at an Azure OpenAI resource (the endpoint defaults
        to AZURE_OPENAI_ENDPOINT; the key to AZURE_OPENAI_API_KEY unless a token provider is named).

        Examples
        --------
        ::

            %nbopenai status                 # model, endpoint, masked key, threads
            %nbopenai local                  # start the offline demo server and use it
            %nbopenai threads                # one row per thread
            %nbopenai history -t stats       # a thread's turns as a DataFrame
            %nbopenai reset -t stats         # forget a thread (--all: every thread)
            %nbopenai compact                # shrink a long thread on the server
            %nbopenai jobs                   # background jobs
            %nbopenai cancel job-1
            %nbopenai usage --summary --since 1d
            %nbopenai cache                  # what the extraction cache holds
            %nbopenai cache clear --schema Person
        """
        with reported(*self._secrets()):
            args = parse_line(self.nbopenai, line)
            return _admin.COMMANDS[args.command](self, args)

    # ---- helpers ----------------------------------------------------------------------------

    def _secrets(self) -> tuple[str, ...]:
        return self.session.settings.secrets

    def _use_widgets(self) -> bool:
        if self.widgets != "auto":
            return self.widgets == "on"
        return getattr(self.shell, "kernel", None) is not None and find_spec("anywidget") is not None

    def _live_view(self, fmt: str, *, background: bool = False) -> AbstractContextManager[AskSink]:
        """The widget view in a notebook; plain text on stdout in a terminal."""
        if not self._use_widgets():
            return nullcontext(StdoutSink())
        render = partial(answer_output, fmt=fmt)
        return widgets.AnswerView(render=render, rate=self.session.settings.update_rate, close_widget=not background)

    def _submit(self, prompt: str, fmt: str, options: dict[str, Any]) -> Job:
        """``--background``: submit and return; in a notebook the view fills in when the job ends."""
        if not self._use_widgets():
            job = self.session.submit(prompt, **options)
            print(f"Submitted {job.id} ({job.status}); `%nbopenai jobs` lists it, `-o NAME` keeps the Job.")
            return job
        view = self._live_view(fmt, background=True)
        view.queued(options["model"] or self.session.settings.model, options["thread"])

        def done(job: Job) -> None:  # runs on the session's loop thread: only widget values change
            if job.answer is not None:
                view.finished(job.answer)
            else:
                view.discard(f"{job.id}: {job.status}")

        try:
            job = self.session.submit(prompt, on_done=done, **options)
        except BaseException:
            view.discard()
            raise
        view.queued(job.model, job.thread, job.id)
        return job

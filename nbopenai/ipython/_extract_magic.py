"""``ExtractMagics``: ``%%extract``, thin over ``nbopenai._extract.extract``.

The magic parses its line, looks the Pydantic class (and ``--over``) up in the user namespace,
calls the core and returns the frame. The one thing kept here is the last frame it returned, so
``--retry-failed`` without ``-o`` knows which rows failed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from IPython.core.magic import Magics, cell_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, magic_arguments
from traitlets import Bool, Int, TraitError, validate

from .._core import _errors
from .._core._request import RequestOptions
from .._core._settings import Settings, check_setting
from .._session import current_session
from .._turns._prompt import fill
from ._args import REQUEST_FLAGS, option_arguments, options_from, parse_line, text, variable_name, with_arguments
from ._errors import interrupted, reported

if TYPE_CHECKING:
    from .._session import Session

__all__ = ["ExtractMagics"]

# Session settings %%extract also takes per run, as --flags generated from their Settings fields
# (type, rule, help): a new one is a name here and an ExtractOptions field of the same name.
PACING_FLAGS = ("rpm", "tpm")


@magics_class
class ExtractMagics(Magics):
    """``%%extract``: Pydantic results as DataFrames. Configure with ``%config ExtractMagics.concurrency = 32``."""

    concurrency = Int(None, allow_none=True, help="Requests in flight at most (None: the session's).").tag(config=True)
    validation_retries = Int(1, help="Re-asks of an answer that fails validation.").tag(config=True)
    cache = Bool(True, help="Reuse validated answers of earlier runs (same model, schema, instructions, text).").tag(
        config=True
    )

    def __init__(self, shell: Any = None, session: Session | None = None, **kwargs: Any) -> None:
        if session is None:
            session = current_session()
        self.session = session
        self.last: Any = None  # the last frame returned: what --retry-failed redoes without -o
        super().__init__(shell=shell, **kwargs)

    @validate("concurrency", "validation_retries")
    def _check_counts(self, proposal: Any) -> Any:
        try:
            check_setting(proposal.trait.name, proposal.value)
        except _errors.UsageError as error:  # a TraitError, so that traitlets rolls the value back
            raise TraitError(error.message) from None
        return proposal.value

    @no_var_expand
    @magic_arguments()
    @argument("schema", help="The Pydantic class to extract (a name in the namespace).")
    @argument(
        "--over",
        type=text,
        metavar="EXPR",
        help="A Series, DataFrame column or list of texts: one request each; the cell holds the instructions.",
    )
    @argument(
        "--many",
        action="store_true",
        help="Each text holds a list of objects: one row per object, indexed (source, item).",
    )
    @argument("-m", "--model", type=text, help="The LLM to ask (default: the session's model).")
    @argument(
        "-s", "--system", type=text, metavar="TEXT", help="Instructions when the cell is the text (without --over)."
    )
    @argument("--concurrency", type=int, metavar="N", help="Requests in flight at most (halved while 429s arrive).")
    @argument("--max-attempts", type=int, metavar="N", help="Attempts per request on 429/5xx/timeouts.")
    @with_arguments(option_arguments(Settings, PACING_FLAGS))
    @with_arguments(option_arguments(RequestOptions, REQUEST_FLAGS))
    @argument(
        "-o",
        "--out",
        type=variable_name,
        metavar="NAME",
        help="Bind the frame (the BatchJob with --no-wait) to this variable.",
    )
    @argument("--batch", action="store_true", help="Send through the Batch API (half price, results within 24 h).")
    @argument(
        "--no-wait", action="store_true", help="With --batch: return the BatchJob at once; it fills in while you work."
    )
    @argument(
        "--dry-run", action="store_true", help="Show the schema fixes, the first request and the counts; send nothing."
    )
    @argument(
        "--retry-failed",
        action="store_true",
        help="Keep the ok rows of the last frame (or -o NAME's) and redo the rest.",
    )
    @argument("--no-cache", action="store_true", help="Ask again even for texts answered before.")
    @cell_magic
    def extract(self, line: str, cell: str) -> Any:
        """Extract a Pydantic model from the cell's text, or from every text of ``--over``, into a DataFrame.

        Without ``--over`` the cell is the text; with it the cell holds the instructions and each
        item of EXPR is one request. ``{name}`` in the cell inserts a variable, as in ``%%ask``; one
        that names nothing stays as typed, and the cell says so in one line before sending.
        The model is checked against the strict-schema rules before anything is sent. Each row
        has ``_status`` (ok, refusal, incomplete, invalid, error, cancelled), ``_error``, tokens,
        ``_cost_usd``; ``df.attrs`` has the totals. The stop button keeps the finished rows.

        Examples
        --------
        ::

            %%extract Person
            Ada Lovelace, born 10 December 1815 in London.

            %%extract Person --over df.bio -o people --concurrency 32
            Extract the person described in this biography.

            %%extract LineItem --over invoices.text --many -o items
            Extract every line item of this invoice.

            %%extract Person --over df.bio -o people --retry-failed
            Extract the person described in this biography.

            %%extract Person --over df.bio --batch --no-wait -o job
            Extract the person described in this biography.
        """
        from .._extract import extract  # noqa: PLC0415 - here, not at import: loading the extension stays cheap

        with reported(*self._secrets()):
            args = parse_line(self.extract, line)
            filled = fill(cell, self.shell.user_ns)
            if note := filled.left_note():  # said once for the cell, before anything is sent (as %%ask does)
                print(note)
            body = filled.text.strip()
            schema = self._evaluate(args.schema, "the Pydantic class")
            texts, instructions = (self._evaluate(args.over, "--over"), body) if args.over else (body, args.system)
            try:
                result = extract(
                    self.session,
                    schema,
                    texts,
                    instructions=instructions,
                    many=args.many,
                    model=args.model,
                    concurrency=args.concurrency or self.concurrency,
                    max_attempts=args.max_attempts,
                    validation_retries=self.validation_retries,
                    cache=self.cache and not args.no_cache,
                    retry_failed=self._previous(args) if args.retry_failed else None,
                    batch=args.batch,
                    wait=not args.no_wait,
                    dry_run=args.dry_run,
                    **options_from(args, (*PACING_FLAGS, *REQUEST_FLAGS)),
                )
            except _errors.NbOpenAIError as error:  # the run stopped: keep what finished, then fail the cell
                if _is_result(partial := getattr(error, "partial", None)):
                    self._keep(args, partial)
                raise
        self._keep(args, result)
        if _is_result(result) and result.attrs.get("interrupted"):
            # The stop button stops Run All too: the partial frame is bound, and the cell fails.
            raise interrupted(_stopped_note(result))
        return result

    def _keep(self, args: Any, result: Any) -> None:
        """Bind ``result`` to ``-o NAME`` and remember it for ``--retry-failed``."""
        if args.out:
            self.shell.user_ns[args.out] = result
        if _is_result(result):
            self.last = result

    def _evaluate(self, expression: str, what: str) -> Any:
        try:
            return self.shell.ev(expression)
        except Exception as exc:
            raise _errors.UsageError(
                f"{what} {expression!r} could not be evaluated: {type(exc).__name__}: {exc}"
            ) from None

    def _previous(self, args: Any) -> Any:
        """The frame whose failed rows --retry-failed redoes; ``True`` lets the cache decide."""
        if args.batch:
            return True
        named = self.shell.user_ns.get(args.out) if args.out else None
        previous = named if _is_result(named) else self.last
        return True if previous is None else previous

    def _secrets(self) -> tuple[str, ...]:
        return self.session.settings.secrets


def _is_result(value: Any) -> bool:
    return hasattr(value, "attrs") and "_status" in getattr(value, "columns", ())


def _stopped_note(frame: Any) -> str:
    if job := frame.attrs.get("batch_job"):
        return (
            f"Stopped waiting: batch job {job} keeps running; "
            f"collect it with nbopenai.collect_batch({job!r}, {frame.attrs['schema']})."
        )
    finished = int((frame["_status"] != "cancelled").sum())
    return (
        f"Stopped: {finished:,} of {len(frame):,} rows finished and are kept; the rest are 'cancelled'. "
        "Re-run with --retry-failed to finish them."
    )

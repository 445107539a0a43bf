"""The subcommands of ``%nbopenai``: one small function each, ``(magics, args) -> value to show``.

``_magics.AskMagics`` runs them; they see it as a ``Host``, the little of it they use, so this table
sits below the magics that dispatch to it.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from .._core._errors import UsageError
from .._core._settings import shown_url
from ._azure_setup import azure_changes, describe_azure

if TYPE_CHECKING:
    from .._session import Session

__all__ = ["COMMANDS", "Host", "help_text"]


class Host(Protocol):
    """What a subcommand uses of the magics that run it (``AskMagics``)."""

    session: Session
    shell: Any  # the IPython shell, or None
    model: Any  # the model trait: the session's model
    ask: Any  # the %ask magic (a callable, with its ``parser``)
    nbopenai: Any  # the %nbopenai magic, for its ``parser``


_INTRO = """\
nbopenai: the OpenAI Responses API in IPython.

  %%ask [options]        the cell is the prompt; the answer streams in, then stays as Markdown
  %ask [options] PROMPT  the same, prompt on the line
  %%extract SCHEMA       a Pydantic model from the cell (or --over texts) into a DataFrame
  %nbopenai COMMAND      look after threads, jobs, usage and the extraction cache"""

_OUTRO = """\
`%%ask?`, `%%extract?` and `%nbopenai?` explain every option with examples; `%config AskMagics` lists the settings.
The API key comes from OPENAI_API_KEY only; `%nbopenai local` needs none (offline demo server)."""


def help_text(magics: Host) -> str:
    """``%nbopenai help``: the magics' usage lines, generated from their parsers so they cannot go stale."""
    registered = magics.shell.magics_manager.magics if magics.shell is not None else {"line": {}, "cell": {}}
    parsers = [("%%ask", magics.ask), ("%nbopenai", magics.nbopenai)]
    if extract := registered["cell"].get("extract"):
        parsers.insert(1, ("%%extract", extract))
    usages = []
    for name, magic in parsers:
        usage = magic.parser.format_usage().removeprefix("usage: ").rstrip()
        usages.append(name + usage[usage.index(" "):])  # the parser's prog is the line-magic name
    return "\n\n".join([_INTRO, *usages, _OUTRO])


def _help(m: Host, args: argparse.Namespace) -> None:
    print(help_text(m))


def _explain(m: Host, args: argparse.Namespace) -> None:
    """``%nbopenai explain``: ``%ask --explain`` (on ``-t``'s thread if given)."""
    m.ask("--explain" + (f" -t {shlex.quote(args.thread)}" if args.thread else ""))


def _status(m: Host, args: argparse.Namespace) -> None:
    m.session.follow_environment()  # show the key the next ask will use
    s = m.session.settings
    server = m.session.local_server
    counts = [(r["thread"], r["turns"]) for r in m.session.threads.summary_rows()]
    threads = ", ".join(f"{name} ({n} turn{'s' if n != 1 else ''})" for name, n in counts) or "none yet"
    running = sum(1 for job in m.session.jobs if not job.done())
    t = s.timeouts
    lines = [
        f"nbopenai session {m.session.session_id}",
        f"  model       {s.model}",
        f"  endpoint    {_endpoint(s)}" + (" (offline demo server)" if server and not s.azure_endpoint else ""),
        f"  API key     {_credential(s)}",
        f"  store       {s.store}",
        f"  threads     {threads}",
        f"  jobs        {len(m.session.jobs)} ({running} running)",
        f"  network     connect {t.connect} s, read {t.read} s, {s.max_attempts} attempts",
        f"  ledger      {_ledger_place(s)}",
    ]
    print("\n".join(lines))


def _credential(settings: Any) -> str:
    if settings.token_provider is not None:
        return f"none: Entra ID tokens from {settings.token_provider.name}"
    return settings.api_key.masked if settings.api_key else "not set"


def _endpoint(settings: Any) -> str:
    if settings.azure_endpoint:
        return f"{shown_url(settings.azure_endpoint)} (Azure OpenAI)"
    return shown_url(settings.base_url) or "https://api.openai.com/v1"


def _ledger_place(settings: Any) -> str:
    path = settings.resolved_ledger_path
    return "in memory, for this session only" if path == ":memory:" else f"in {path}"


def _local(m: Host, args: argparse.Namespace) -> None:
    url = m.session.use_local()
    print(f"Using the offline demo server at {url} (model {m.model}): no key needed, nothing leaves this machine.")
    print(f"Its calls are free: they are kept {_ledger_place(m.session.settings)}, not in your usage ledger.")


def _azure(m: Host, args: argparse.Namespace) -> None:
    """Point the session at an Azure OpenAI resource (see ``_core/_azure``); ``--model`` names a deployment."""

    m.session.configure(**azure_changes(m.session.settings, args, m.shell.user_ns if m.shell is not None else {}))
    print(describe_azure(m.session.settings))


def _threads(m: Host, args: argparse.Namespace) -> Any:
    import pandas as pd  # noqa: PLC0415 - pandas loads when a frame is made

    columns = ["thread", "kind", "turns", "store", "head", "input_tokens", "output_tokens"]
    return pd.DataFrame(m.session.threads.summary_rows(), columns=columns)


def _history(m: Host, args: argparse.Namespace) -> Any:
    return m.session.history(args.thread or "default")


def _reset(m: Host, args: argparse.Namespace) -> None:
    thread = None if args.all else (args.thread or "default")
    m.session.reset(thread)
    print("Forgot every thread." if thread is None else f"Forgot thread {thread}.")


def _compact(m: Host, args: argparse.Namespace) -> None:
    print(m.session.compact(args.thread or "default", model=args.model))


def _jobs(m: Host, args: argparse.Namespace) -> Any:
    import pandas as pd  # noqa: PLC0415 - pandas loads when a frame is made

    columns = ["job", "status", "thread", "model", "response_id", "prompt", "submitted"]
    return pd.DataFrame([job.row() for job in m.session.jobs], columns=columns)


def _cancel(m: Host, args: argparse.Namespace) -> None:
    if not args.target:
        raise UsageError("which job? `%nbopenai cancel job-1` (`%nbopenai jobs` lists them)")
    job = next((job for job in m.session.jobs if args.target in (job.id, job.response_id)), None)
    if job is None:
        raise UsageError(f"no job {args.target!r}; `%nbopenai jobs` lists them")
    job.cancel()
    print(f"Asked the server to cancel {job.id}.")


def _usage(m: Host, args: argparse.Namespace) -> Any:
    session = m.session
    given = [("since", args.since), ("model", args.model), ("thread", args.thread)]
    filters = {name: value for name, value in given if value}
    if not args.all:
        filters["session_id"] = session.session_id
    if args.plot:
        return session.ledger.plot(**filters)
    if args.summary:
        return session.ledger.summary(**filters)
    return session.ledger.to_dataframe(**filters)


def _cache(m: Host, args: argparse.Namespace) -> None:
    store = m.session.extract_store
    if args.target == "clear":
        removed = store.clear(schema=args.schema, model=args.model)
        which = " and ".join(
            f"{name} {value}" for name, value in (("schema", args.schema), ("model", args.model)) if value
        )
        print(f"Removed {removed:,} cached answer{'s' if removed != 1 else ''}{f' ({which})' if which else ''}.")
    elif args.target is None:
        print(store.size())
    else:
        raise UsageError(
            f"cache takes `clear` or nothing, not {args.target!r}: `%nbopenai cache clear --schema Person`"
        )


COMMANDS: dict[str, Callable[[Host, argparse.Namespace], Any]] = {
    "azure": _azure,
    "cache": _cache,
    "cancel": _cancel,
    "compact": _compact,
    "explain": _explain,
    "help": _help,
    "history": _history,
    "jobs": _jobs,
    "local": _local,
    "reset": _reset,
    "status": _status,
    "threads": _threads,
    "usage": _usage,
}

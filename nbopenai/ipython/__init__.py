"""The IPython extension: ``%load_ext nbopenai`` registers ``%%ask``, ``%ask``, ``%nbopenai`` (and ``%%extract``).

Loading is cheap and never fails for lack of a key: the session is built from the environment
and the first ask says how to set a key (or to run ``%nbopenai local``) if none is there.
ipywidgets and pandas are imported only when a view or a table is first needed.

``%reload_ext nbopenai`` (IPython suggests it when a setup cell runs twice) keeps the session: its
threads, settings, local server and ledger. Unloading parks the session on the shell and closes it
when the cell ends, unless a load in the same cell (a reload) took it back.
"""

from __future__ import annotations

from typing import Any

from .._session import Session, current_session, use_session
from ._magics import AskMagics
from ._syntax import ask_lines_keep_question_marks, reread_the_running_cell

__all__ = ["load_ipython_extension", "unload_ipython_extension"]

_EXTRA_MAGICS = ("ExtractMagics",)
# The longest a cell waits for the warm-up (seconds): a stuck warm-up must not hang the kernel.
_WARM_UP_WAIT_S = 60.0
# The attribute of the shell where an unloaded session waits for the end of its cell (a reload).
_PARKED = "_nbopenai_parked_session"


def load_ipython_extension(ipython: Any) -> None:
    """Create the kernel's one ``Session``, make it current, register the magics and cell tracking.

    Parameters
    ----------
    ipython
        The running ``InteractiveShell`` (what ``%load_ext`` passes).
    """

    session = ipython.__dict__.pop(_PARKED, None)  # a reload: the same cell unloaded it
    if session is None:
        session = Session()
        _warm_start(ipython, session)
    use_session(session)
    magics = AskMagics(shell=ipython, session=session)
    ipython.register_magics(magics)
    try:
        from ._extract_magic import ExtractMagics  # noqa: PLC0415 - optional: a build may leave extraction out
    except ModuleNotFoundError as missing:  # only its absence is expected; its own errors must show
        if missing.name != f"{__name__}._extract_magic":
            raise
    else:
        ipython.register_magics(ExtractMagics(ipython, session=session))
    ipython.events.register("pre_run_cell", magics.pre_run_cell)
    ipython.events.register("post_run_cell", magics.post_run_cell)
    ipython.input_transformer_manager.line_transforms.append(ask_lines_keep_question_marks)
    reread_the_running_cell(ipython)  # this cell's `%ask ...?` lines were read before the transform existed


def _warm_start(ipython: Any, session: Any) -> None:
    """Load what the first ask needs while the user types: ``Session.warm_up`` in a thread that starts
    when the loading cell ends, and whose imports the next cell (an ask typed at once) waits for.

    So nothing else imports while it does (see ``Session.warm_up``), and ``%load_ext`` itself stays
    cheap. In a kernel it also loads the live view (anywidget, ipywidgets).
    """

    kernel = getattr(ipython, "kernel", None) is not None
    live_view = ("nbopenai.widgets._answer_view", "nbopenai.widgets._answer_widget") if kernel else ()
    # The shell builds its display formatters on the first display: the live view's, under the first answer.
    worker = session.warm_up(live_view, steps=[lambda: ipython.display_formatter.formatters])

    def start(result: Any = None) -> None:
        ipython.events.unregister("post_run_cell", start)
        if current_session() is session:  # not unloaded in the same cell
            worker.start()

    def wait(info: Any = None) -> None:
        if worker.ident is None and current_session() is session:
            return  # loaded outside a cell: it starts when this cell ends
        ipython.events.unregister("pre_run_cell", wait)
        if worker.ident is not None:  # its imports, not its computations (see Session.warm_up)
            worker.imported.wait(_WARM_UP_WAIT_S)

    ipython.events.register("post_run_cell", start)
    ipython.events.register("pre_run_cell", wait)


def unload_ipython_extension(ipython: Any) -> None:
    """Remove the magics and the event hooks; the session (server, loop, ledger) closes when the cell ends.

    Until then a load (``%reload_ext`` does unload + load) takes the same session back.
    """

    manager = ipython.magics_manager
    magics = manager.registry.pop("AskMagics", None)
    if magics is None:
        return
    ipython.events.unregister("pre_run_cell", magics.pre_run_cell)
    ipython.events.unregister("post_run_cell", magics.post_run_cell)
    transforms = ipython.input_transformer_manager.line_transforms
    if ask_lines_keep_question_marks in transforms:
        transforms.remove(ask_lines_keep_question_marks)
    for name in _EXTRA_MAGICS:
        extra = manager.registry.pop(name, None)
        if extra is not None:
            _unregister(ipython, extra)
    _unregister(ipython, magics)
    use_session(None)
    _park(ipython, magics.session)


def _park(ipython: Any, session: Any) -> None:
    """Keep ``session`` on the shell until the running cell ends, then close it unless loaded again."""
    setattr(ipython, _PARKED, session)

    def close_unless_loaded_again() -> None:
        ipython.events.unregister("post_execute", close_unless_loaded_again)
        if ipython.__dict__.get(_PARKED) is session:
            delattr(ipython, _PARKED)
            session.close()

    ipython.events.register("post_execute", close_unless_loaded_again)


def _unregister(ipython: Any, magics: Any) -> None:
    for kind, names in magics.magics.items():
        for name in names:
            ipython.magics_manager.magics[kind].pop(name, None)
    if magics in ipython.configurables:
        ipython.configurables.remove(magics)

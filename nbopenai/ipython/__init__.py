"""The IPython extension: ``%load_ext nbopenai`` registers ``%%ask``, ``%ask``, ``%nbopenai`` (and ``%%extract``).

Loading is cheap and never fails for lack of a key: the session is built from the environment
and the first ask says how to set a key (or to run ``%nbopenai local``) if none is there.
ipywidgets and pandas are imported only when a view or a table is first needed.
"""

from __future__ import annotations

from typing import Any

__all__ = ["load_ipython_extension", "unload_ipython_extension"]

_EXTRA_MAGICS = ("ExtractMagics",)


def load_ipython_extension(ipython: Any) -> None:
    """Create the kernel's one ``Session``, make it current, register the magics and cell tracking.

    Parameters
    ----------
    ipython
        The running ``InteractiveShell`` (what ``%load_ext`` passes).
    """
    from .._session import Session, use_session
    from ._magics import AskMagics
    from ._syntax import ask_lines_keep_question_marks

    session = Session()
    use_session(session)
    session.warm_up()  # SDK import + tokenizer load off the critical path of the first %%ask
    magics = AskMagics(shell=ipython, session=session)
    ipython.register_magics(magics)
    try:
        from ._extract_magic import ExtractMagics
    except ModuleNotFoundError as missing:  # only its absence is expected; its own errors must show
        if missing.name != f"{__name__}._extract_magic":
            raise
    else:
        ipython.register_magics(ExtractMagics(ipython, session=session))
    ipython.events.register("pre_run_cell", magics.pre_run_cell)
    ipython.events.register("post_run_cell", magics.post_run_cell)
    ipython.input_transformer_manager.line_transforms.append(ask_lines_keep_question_marks)


def unload_ipython_extension(ipython: Any) -> None:
    """Remove the magics and the event hooks, and close the session (its server, loop, ledger)."""
    from .._session import use_session
    from ._syntax import ask_lines_keep_question_marks

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
    magics.session.close()


def _unregister(ipython: Any, magics: Any) -> None:
    for kind, names in magics.magics.items():
        for name in names:
            ipython.magics_manager.magics[kind].pop(name, None)
    if magics in ipython.configurables:
        ipython.configurables.remove(magics)

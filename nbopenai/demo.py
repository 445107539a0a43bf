"""``python -m nbopenai.demo``: run a notebook top to bottom in a real kernel and keep the result.

By default the run is offline: the kernel gets no ``OPENAI_API_KEY``, so the notebook's setup cell
starts the bundled demo server (``%nbopenai local``). Pass ``--real`` to keep your key and use the
real API. The executed notebook is written to ``out/`` and its answers are printed here.

An offline run leaves no trace in your data folder: the demo server's calls are kept in memory
(``%nbopenai local`` does that), and the kernel's ``NBOPENAI_HOME`` is a temporary folder, removed
afterwards. A ``--real`` run costs money, so its calls go to your usage ledger as any other.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

__all__ = ["main", "run_notebook"]


def run_notebook(
    source: Path, target: Path, *, real: bool = False, timeout: int = 300, kernel_options: list[str] | None = None
) -> Path:
    """Execute ``source`` in a fresh ``python3`` kernel and save it to ``target``.

    ``kernel_options`` are passed on the kernel's command line (e.g. ``--IPKernelApp.exec_lines=...``).
    """
    import nbformat  # noqa: PLC0415 - optional (nbopenai[demo])
    from nbclient import NotebookClient  # noqa: PLC0415 - optional (nbopenai[demo])
    from traitlets.config import Config  # noqa: PLC0415 - optional (nbopenai[demo]: nbclient's own)

    notebook = nbformat.read(source, as_version=4)
    env = dict(os.environ)
    if not real:
        for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
            env.pop(name, None)
    with tempfile.TemporaryDirectory(prefix="nbopenai-demo-") as scratch:
        # Configured, not handed over: nbclient shuts down only a kernel manager it made, and drives its own
        # (asynchronous) kind; a given one was left running after the run, its folder removed under it.
        client = NotebookClient(
            notebook,
            config=Config({"KernelManager": _unix_sockets(scratch)}),
            timeout=timeout,
            kernel_name="python3",
            resources={"metadata": {"path": str(source.parent)}},
            extra_arguments=list(kernel_options or ()),
        )
        if not real:  # a data folder that is removed afterwards (a --real run keeps the user's own ledger)
            env["NBOPENAI_HOME"] = os.path.join(scratch, "home")
        client.execute(env=env)  # passed on to the kernel manager: the child's environment only
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, target)
    return target


def _unix_sockets(folder: str) -> dict[str, str]:
    """The kernel manager's settings for Unix sockets in ``folder``; none (TCP) where they cannot be used.

    A demo has no reason to open TCP ports (over which ipykernel warns that code and outputs travel
    unencrypted), but Windows has no Unix sockets, and a socket's path must fit in ``sockaddr_un``
    (zmq's ``IPC_PATH_MAX_LEN``, 107 bytes on Linux, 103 on macOS): under a deep ``TMPDIR`` the kernel
    could not listen. jupyter_client names each channel's socket ``PATH-N`` (N from 1 up).
    """
    import zmq  # noqa: PLC0415 - optional (nbopenai[demo]: jupyter_client's own)

    path = os.path.join(folder, "kernel")
    room = getattr(zmq, "IPC_PATH_MAX_LEN", 0)
    if os.name != "posix" or len(os.fsencode(path)) + len("-99") > room:
        return {}
    return {"transport": "ipc", "ip": path}


def _answers(notebook_path: Path) -> list[str]:
    notebook = json.loads(notebook_path.read_text())
    texts = []
    for cell in notebook["cells"]:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if "text/markdown" in data:
                texts.append("".join(data["text/markdown"]))
    return texts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nbopenai.demo", description=__doc__)
    parser.add_argument("notebook", nargs="?", default="notebooks/quickstart.ipynb", type=Path)
    parser.add_argument("--out", default=Path("out"), type=Path, help="folder for the executed notebook")
    parser.add_argument("--real", action="store_true", help="use OPENAI_API_KEY and the real API")
    args = parser.parse_args(argv)
    if not args.notebook.exists():
        parser.error(f"{args.notebook} not found (run from the repository root, or pass a path)")
    target = run_notebook(args.notebook, args.out / args.notebook.name, real=args.real)
    for text in _answers(target):
        print(text.strip(), end="\n\n")
    print(f"Executed notebook written to {target} (open it in JupyterLab: jupyter lab {target})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The environment of a kernel that a test starts: this checkout importable, OpenAI settings as given.

Shared by the kernel, notebook and secrets tests. ``NBOPENAI_HOME`` is already a fresh temporary
folder (conftest's autouse fixture), so the kernel's ledger and extraction cache start empty.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def kernel_env(**settings: str) -> dict[str, str]:
    """This process's environment without ``OPENAI_*``/``NBOPENAI_MODEL``, plus ``settings``."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("OPENAI_")}
    env.pop("NBOPENAI_MODEL", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(settings)
    return env


def local_kernel_env(server, key: str) -> dict[str, str]:
    """A kernel pointed at the offline ``server`` with ``key`` set (a fake that must never show)."""
    return kernel_env(OPENAI_BASE_URL=server.base_url, OPENAI_API_KEY=key, NBOPENAI_MODEL="nbopenai-local")


def run_notebook(sources: list[str], env: dict[str, str], folder: Path, name: str = "executed.ipynb"):
    """A notebook of code cells ``sources`` run top to bottom by nbclient (as Run All does), saved in ``folder``.

    Returns the executed notebook and the path it was saved at.
    """
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in sources])
    NotebookClient(nb, timeout=60, kernel_name="python3", resources={"metadata": {"path": str(folder)}}).execute(env=env)
    path = folder / name
    nbformat.write(nb, path)
    return nb, path

"""The environment of a kernel that a test starts: this checkout importable, OpenAI settings as given.

Shared by the kernel, notebook and secrets tests. ``NBOPENAI_HOME`` is already a fresh temporary
folder (conftest's autouse fixture), so the kernel's ledger and extraction cache start empty.
"""

from __future__ import annotations

import ast
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
    import nbformat  # noqa: PLC0415 - Jupyter machinery loads only in the tests that start a kernel or a browser
    from nbclient import NotebookClient  # noqa: PLC0415 - Jupyter machinery loads only in the tests that start a kernel or a browser

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in sources])
    NotebookClient(nb, timeout=60, kernel_name="python3", resources={"metadata": {"path": str(folder)}}).execute(
        env=env
    )
    path = folder / name
    nbformat.write(nb, path)
    return nb, path


class Kernel:
    """A kernel driven the way JupyterLab drives it: execute requests carry the cell's id."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        from jupyter_client.manager import start_new_kernel  # noqa: PLC0415 - Jupyter machinery loads only in the tests that start a kernel or a browser

        self.km, self.kc = start_new_kernel(kernel_name="python3", env=env, cwd=str(cwd))

    def execute(self, code: str, cell_id: str | None = None) -> tuple[str, str]:
        """Run ``code``; return the reply status and all text the front-end was sent."""
        content = {
            "code": code,
            "silent": False,
            "store_history": True,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": True,
        }
        msg = self.kc.session.msg("execute_request", content, metadata={"cellId": cell_id} if cell_id else {})
        self.kc.shell_channel.send(msg)
        texts = []
        while True:
            reply = self.kc.get_iopub_msg(timeout=30)
            if reply["parent_header"].get("msg_id") != msg["header"]["msg_id"]:
                continue
            kind, body = reply["msg_type"], reply["content"]
            if kind == "stream":
                texts.append(body["text"])
            elif kind in ("display_data", "update_display_data", "execute_result"):
                texts.append(body["data"].get("text/plain", ""))
            elif kind == "error":
                texts.append("\n".join(body["traceback"]))
            elif kind == "status" and body["execution_state"] == "idle":
                break
        while True:
            shell = self.kc.get_shell_msg(timeout=30)
            if shell["parent_header"].get("msg_id") == msg["header"]["msg_id"]:
                self.reply = shell["content"]  # the execute reply (its payloads: set_next_input...)
                return shell["content"]["status"], "".join(texts)

    def history_ids(self) -> list[str]:
        code = "import nbopenai; print([t['response_id'] for t in nbopenai.current_session().threads.history_rows()])"
        return ast.literal_eval(self.execute(code)[1].strip())

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)

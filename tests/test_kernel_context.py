"""The notebook as context in a real kernel: {Err[n]}, --explain, and code queued into the next cell."""

from __future__ import annotations

import pytest
from _kernels import Kernel, run_notebook
from conftest import SECRET_KEY

import nbopenai
from nbopenai._core._tokens import count_tokens
from nbopenai._turns._context import VARS_TOKEN_BUDGET

pytestmark = pytest.mark.kernel
pytest.importorskip("ipykernel")


def _asks(server) -> list[dict]:
    return [r.body for r in server.requests if r.path == "/v1/responses" and r.method == "POST"]


def _sent_text(server) -> str:
    content = _asks(server)[-1]["input"][-1]["content"]
    return content if isinstance(content, str) else content[0]["text"]


def _next_inputs(reply: dict) -> list[dict]:
    return [p for p in reply.get("payload", []) if p.get("source") == "set_next_input"]


def test_errors_explanations_and_code_into_the_next_cell(kernel: Kernel, local_server):
    assert kernel.execute("%load_ext nbopenai", "c0")[0] == "ok"
    status, shown = kernel.execute(f"key = {SECRET_KEY!r}\nrows = [1, 2]\nrows[5]", "c1")
    assert status == "error" and "IndexError" in shown

    # {Err[n]} by number and by position: the traceback as the kernel showed it, without colours or the key
    assert kernel.execute("%%ask\nWhat went wrong? {Err[2]}\n---\n{Err[-1]}", "c2")[0] == "ok"
    sent = _sent_text(local_server)
    by_number, by_position = sent.split("\n---\n")
    assert by_number.removeprefix("What went wrong? ") == by_position
    assert "IndexError: list index out of range" in sent and "----> 3 rows[5]" in sent
    assert "\x1b[" not in sent and SECRET_KEY not in sent and SECRET_KEY not in str(_asks(local_server)[-1])

    # --explain: the failing cell and its traceback; the answer's code is not queued without --fix
    status, shown = kernel.execute("%ask --explain", "c3")
    assert status == "ok" and not _next_inputs(kernel.reply)
    sent = _sent_text(local_server)
    assert "rows[5]" in sent and "IndexError: list index out of range" in sent and "Explain what caused it" in sent

    # --fix and --format code: the first code block becomes the next cell, not run
    for line in ("%ask --explain --fix", "%ask --format code Write a Python function that counts words."):
        status, shown = kernel.execute(line, "c4")
        assert status == "ok"
        (queued,) = _next_inputs(kernel.reply)
        assert queued["text"].startswith("def ") and queued["replace"] is False
        assert "```" not in queued["text"]


def test_vars_stays_small_beside_a_ten_million_row_frame(kernel: Kernel, local_server):
    assert kernel.execute("%load_ext nbopenai")[0] == "ok"
    setup = "".join(f"note_{n} = 'a note about thing {n} ' * 3\n" for n in range(300)) + (
        "import numpy as np, pandas as pd\n"
        "rows = 10_000_000\n"
        "events = pd.DataFrame({'user': np.arange(rows, dtype='int32'), 'score': np.ones(rows, dtype='float32')})\n"
    )
    assert kernel.execute(setup)[0] == "ok"
    status, shown = kernel.execute("%ask What is in {vars}?")
    assert status == "ok"
    sent = _sent_text(local_server)
    assert count_tokens(sent) <= VARS_TOKEN_BUDGET + 30
    # the newest names are kept: the frame (from its head only), then the last notes
    assert "- events: DataFrame 10,000,000 rows × 2 columns: user int32 [0, 1, 2, …]; score float32 [1, 1, 1, …]" in (
        sent
    )
    assert "note_299" in sent and "note_0:" not in sent and "more variables not shown" in sent
    status, _ = kernel.execute("%ask --context vars And {events}?")
    sent = _sent_text(local_server)
    assert count_tokens(sent) <= VARS_TOKEN_BUDGET + 1_500 + 40  # the variables and the frame's preview
    assert "DataFrame with 10,000,000 rows × 2 columns (user: int32, score: float32)" in sent
    assert "| 9999999 | 9999999 | 1 |" in sent  # the preview's tail row


def test_saved_answers_carry_their_provenance_and_read_back(local_server, kernel_env, tmp_path):
    sources = ["%load_ext nbopenai", "%%ask\nMy name is Ada.", "%%ask -t other -o reply\nWhat is my name?", "reply"]
    nb, path = run_notebook(sources, kernel_env, tmp_path, "answered.ipynb")

    kept = [o.metadata["nbopenai"] for c in nb.cells for o in c.outputs if "nbopenai" in o.get("metadata", {})]
    assert len(kept) == 3  # the two answers, and the Answer shown again by the last cell
    table = nbopenai.provenance(path)
    assert list(table["cell"]) == [1, 2, 3]
    assert table["response_id"].str.startswith("resp_").all()
    assert table["model"].eq("nbopenai-local").all() and table["thread"].tolist() == ["default", "other", "other"]
    assert table["turn"].tolist() == [1, 1, 1]
    assert (table["input_tokens"] > 0).all() and (table["output_tokens"] > 0).all()
    assert table["nbopenai_version"].eq(nbopenai.__version__).all() and not table["replayed"].any()
    assert table["answered_at"].notna().all() and table["cost_usd"].notna().all()
    first, second, shown_again = table["response_id"]
    assert second == shown_again and first != second


def test_run_all_twice_with_replay_sends_nothing_the_second_time(local_server, kernel_env, tmp_path):
    sources = [
        "%load_ext nbopenai\n%config AskMagics.replay = True",
        "%%ask\nMy name is Ada.",
        "%%ask\nI like tea.",
        "%%ask -o last\nWhat is my name?",
        "print(last.replayed)",
    ]
    before = len(_asks(local_server))
    _, first = run_notebook(sources, kernel_env, tmp_path, "first.ipynb")
    assert len(_asks(local_server)) == before + 3

    nb, second = run_notebook(sources, kernel_env, tmp_path, "second.ipynb")  # a new kernel: Run All again
    assert len(_asks(local_server)) == before + 3  # nothing sent
    assert nb.cells[4].outputs[0].text.strip() == "True"
    then, now = nbopenai.provenance(first), nbopenai.provenance(second)
    assert now["replayed"].all() and not then["replayed"].any()
    assert now["response_id"].tolist() == then["response_id"].tolist()
    shown = [o.data["text/markdown"] for c in nb.cells[1:4] for o in c.outputs if "text/markdown" in o.get("data", {})]
    assert len(shown) == 3 and all("replayed: the stored answer of" in text for text in shown)

    sources[2] = "%%ask\nI like coffee."  # the second ask edited: it and the one after it ask again
    nb, third = run_notebook(sources, kernel_env, tmp_path, "third.ipynb")
    sent = _asks(local_server)[before + 3 :]
    assert len(sent) == 2 and "I like coffee." in str(sent[0]["input"]) and "What is my name?" in str(sent[1]["input"])
    assert sent[0]["previous_response_id"] == then["response_id"][0]
    assert nbopenai.provenance(third)["replayed"].tolist() == [True, False, False]

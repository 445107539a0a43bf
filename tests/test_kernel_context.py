"""The notebook as context in a real kernel: {Err[n]}, --explain, and code queued into the next cell."""

from __future__ import annotations

import pytest

from conftest import SECRET_KEY
from test_kernel import Kernel, kernel, kernel_env  # noqa: F401 (fixtures)

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

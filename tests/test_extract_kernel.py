"""Extraction inside a real Jupyter kernel, whose own event loop is running, against the offline server."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.kernel

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

REPO = Path(__file__).resolve().parents[1]

SETUP = """
from typing import Optional
import pandas as pd
from pydantic import BaseModel
import nbopenai

class Person(BaseModel):
    name: str
    age: Optional[int]

bios = pd.Series(["Ada Lovelace is 36.", "Alan Turing is 41.", "Grace Hopper is 85."], index=["a", "b", "c"])
"""


def test_extract_and_the_magic_in_a_live_kernel(local_server, tmp_path):
    from nbclient import NotebookClient  # noqa: PLC0415 - Jupyter machinery loads only in the tests that start a kernel or a browser

    env = dict(os.environ)  # NBOPENAI_HOME is already a fresh temporary folder
    env.update(
        OPENAI_BASE_URL=local_server.base_url,
        NBOPENAI_MODEL="nbopenai-local",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
    )
    cell = nbformat.v4.new_code_cell
    nb = nbformat.v4.new_notebook(
        cells=[
            cell(SETUP),
            # A loop is running in the kernel's main thread: asyncio.run() would fail here.
            cell(
                "import asyncio\nassert asyncio.get_event_loop().is_running()\n"
                "df = nbopenai.extract(Person, bios, concurrency=2)\nprint(df['age'].tolist(), df['_status'].tolist())"
            ),
            cell("%load_ext nbopenai"),
            cell("%%extract Person --over bios -o people\nExtract the person."),
            cell("print(people.index.tolist(), people['name'].tolist())"),
        ]
    )
    NotebookClient(nb, timeout=90, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute(
        env=env
    )

    outputs = [[o for o in c.outputs] for c in nb.cells]
    errors = [o for cell_outputs in outputs for o in cell_outputs if o.output_type == "error"]
    assert not errors, errors
    assert outputs[1][-1].text.strip() == "[36, 41, 85] ['ok', 'ok', 'ok']"
    shown = [o for o in outputs[3] if o.output_type in ("execute_result", "display_data")]
    assert any("text/html" in o.data for o in shown)  # the frame
    lines = [o.data.get("text/plain", "") for o in shown]
    assert any("extract 3/3 · 3 ok · 0 failed" in line for line in lines)  # the widget, replaced by its final line
    assert not [o for o in shown if "application/vnd.jupyter.widget-view+json" in o.data]
    assert outputs[4][-1].text.strip() == "['a', 'b', 'c'] ['Ada Lovelace', 'Alan Turing', 'Grace Hopper']"
    requests = [r for r in local_server.requests if r.path == "/v1/responses"]
    assert len(requests) == 6


def test_the_stop_button_stops_run_all_after_binding_the_partial_frame(local_server, tmp_path):
    """Run All queues the cells; the stop button during ``%%extract`` must abort the ones after it."""

    from _kernels import kernel_env  # noqa: PLC0415 - Jupyter machinery loads only in the tests that start a kernel or a browser
    from jupyter_client.manager import start_new_kernel  # noqa: PLC0415 - Jupyter machinery loads only in the tests that start a kernel or a browser

    env = kernel_env(OPENAI_BASE_URL=local_server.base_url, NBOPENAI_MODEL="nbopenai-local")
    km, kc = start_new_kernel(kernel_name="python3", env=env, cwd=str(tmp_path))
    try:
        kc.execute_interactive(
            SETUP + "\nbios = pd.Series([f'Person {i} is {20 + i}.' for i in range(40)])\n%load_ext nbopenai",
            timeout=60,
        )
        local_server.configure(latency=0.2)
        slow = kc.execute(
            "%%extract Person --over bios -o people --no-cache --concurrency 1\nExtract the person.", stop_on_error=True
        )
        after = kc.execute("ran_next = True", stop_on_error=True)  # queued, as Run All queues it
        deadline = time.monotonic() + 60
        while len([r for r in local_server.requests if r.path == "/v1/responses"]) < 3:
            assert time.monotonic() < deadline, "the extraction never started"
            time.sleep(0.02)
        km.interrupt_kernel()
        replies = {}
        while len(replies) < 2:
            reply = kc.get_shell_msg(timeout=60)
            replies[reply["parent_header"]["msg_id"]] = reply["content"]
        assert replies[slow]["status"] == "error" and replies[slow]["ename"] == "KeyboardInterrupt"
        assert replies[after]["status"] == "aborted"  # the next cell did not run
        local_server.configure(latency=0.0)
        check = kc.execute(
            "print('ran_next' in globals(), people.attrs['interrupted'], (people['_status'] == 'ok').sum() >= 1)"
        )
        texts = []
        while True:
            message = kc.get_iopub_msg(timeout=30)
            if message["parent_header"].get("msg_id") != check:
                continue
            if message["msg_type"] == "stream":
                texts.append(message["content"]["text"])
            if message["msg_type"] == "status" and message["content"]["execution_state"] == "idle":
                break
        assert "".join(texts).strip() == "False True True"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def _cached_ages(folder: Path) -> dict[int, str]:
    """The extraction cache's answers (by the age extracted) and their response ids, read as another process would."""

    if not (folder / "extract.sqlite3").exists():
        return {}
    try:
        with sqlite3.connect(folder / "extract.sqlite3", timeout=10) as conn:
            rows = conn.execute("SELECT text, response_id FROM answers").fetchall()
    except sqlite3.OperationalError:  # the kernel is still creating it
        return {}
    return {json.loads(text)["age"]: response_id for text, response_id in rows}


def test_a_kernel_killed_mid_run_keeps_its_answers_and_the_rerun_pays_only_for_the_rest(local_server, tmp_path):
    """SIGKILL in the middle of ``%%extract``: what finished is in the cache (and billed in the ledger), the re-run
    sends only the rest."""

    from _kernels import kernel_env  # noqa: PLC0415 - Jupyter machinery loads only in the tests that start a kernel or a browser
    from jupyter_client.manager import start_new_kernel  # noqa: PLC0415 - Jupyter machinery loads only in the tests that start a kernel or a browser

    rows = 60
    folder = Path(os.environ["NBOPENAI_HOME"])  # both kernels' data folder
    env = kernel_env(OPENAI_BASE_URL=local_server.base_url, NBOPENAI_MODEL="nbopenai-local")
    setup = SETUP + f"\nbios = pd.Series([f'Someone is {{i}} years old.' for i in range({rows})])\n%load_ext nbopenai"
    cell = "%%extract Person --over bios -o people --concurrency 2\nExtract the person."

    km, kc = start_new_kernel(kernel_name="python3", env=env, cwd=str(tmp_path))
    try:
        kc.execute_interactive(setup, timeout=60)
        local_server.configure(latency=0.1)
        kc.execute(cell)
        deadline = time.monotonic() + 60
        while len(_cached_ages(folder)) < 10:
            assert time.monotonic() < deadline, "no answer reached the cache while the extraction ran"
            time.sleep(0.05)
        os.kill(km.provisioner.pid, signal.SIGKILL)  # no cleanup, no finally: the kernel just dies
        km.provisioner.process.wait(timeout=30)
    finally:
        kc.stop_channels()
        km.cleanup_resources()
    local_server.configure(latency=0.0)
    kept = _cached_ages(folder)
    assert 10 <= len(kept) < rows  # it died mid-run, with some answers kept
    with sqlite3.connect(folder / "usage.sqlite3", timeout=10) as conn:
        billed = {
            r for (r,) in conn.execute("SELECT response_id FROM usage WHERE kind = 'extract' AND status = 'completed'")
        }
    assert set(kept.values()) <= billed  # every cached answer's call is in the ledger

    local_server.clear_requests()
    km, kc = start_new_kernel(kernel_name="python3", env=env, cwd=str(tmp_path))
    try:
        kc.execute_interactive(setup, timeout=60)
        reply = kc.execute_interactive(cell, timeout=120)
        assert reply["content"]["status"] == "ok"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    resent = [
        int(re.search(r"is (\d+) years", r.body["input"])[1])
        for r in local_server.requests
        if r.path == "/v1/responses"
    ]
    assert sorted(resent) == sorted(set(range(rows)) - set(kept))  # only the rows not finished before
    assert len(_cached_ages(folder)) == rows

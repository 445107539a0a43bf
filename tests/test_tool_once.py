"""Tools with side effects run at most once per call id: across a re-run cell, a retried round, a kernel restart."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

import nbopenai
from nbopenai._extract import extract
from nbopenai._turns._recorder import NullSink
from nbopenai._turns._tool_ledger import ALREADY_DONE, STARTED_BEFORE, ToolLedger
from nbopenai._turns._tools import Toolbox, ToolCall


class Mailer:
    """A tool with an effect: each run sends one mail (counted)."""

    def __init__(self) -> None:
        self.sent: list[str] = []

        @nbopenai.tool(side_effects=True)
        def send_mail(to: str) -> str:
            """Send the report by mail."""
            self.sent.append(to)
            return f"mail {len(self.sent)} sent to {to}"

        self.send_mail = send_mail


def call_outputs(server):
    return [
        item["output"]
        for r in server.requests
        if r.path == "/v1/responses"
        for item in (r.body or {}).get("input", [])
        if isinstance(item, dict) and item.get("type") == "function_call_output"
    ]


@pytest.fixture
def stable(local_server):
    local_server.configure(stable_call_ids=True)
    return local_server


def test_a_rerun_cell_meets_the_same_call_and_does_not_run_it_again(stable, make, tmp_path):
    mailer = Mailer()
    session = make(ledger_path=str(tmp_path / "usage.sqlite3"))
    first = session.ask("use send_mail for ada@example.com", tools=[mailer.send_mail], cell_id="cell-1")
    again = session.ask("use send_mail for ada@example.com", tools=[mailer.send_mail], cell_id="cell-1")
    assert len(mailer.sent) == 1  # ran once
    assert first.tool_calls[0]["call_id"] == again.tool_calls[0]["call_id"]
    assert again.tool_calls[0]["note"] == ALREADY_DONE and "note" not in first.tool_calls[0]
    outputs = call_outputs(stable)
    assert len(outputs) == 2 and outputs[0] == outputs[1] == first.tool_calls[0]["output"]  # the kept output, again
    assert f"({ALREADY_DONE})" in again.tool_calls_markdown()


class FailNextRound(NullSink):
    """A sink that, once the tools ran, makes the server fail the request that sends their outputs back."""

    def __init__(self, server) -> None:
        self.server = server

    def tool_call(self, name, arguments, output):
        self.server.inject("server_error")


def test_a_round_that_failed_after_the_tool_ran_is_retried_without_running_it(stable, make, tmp_path):
    mailer = Mailer()
    session = make(ledger_path=str(tmp_path / "usage.sqlite3"), max_attempts=1)
    with pytest.raises(nbopenai.ServerError):  # the mail went out, then the round that reports it failed
        session.ask(
            "use send_mail for ada@example.com", tools=[mailer.send_mail], cell_id="cell-1", sink=FailNextRound(stable)
        )
    assert len(mailer.sent) == 1
    retried = session.ask("use send_mail for ada@example.com", tools=[mailer.send_mail], cell_id="cell-1")
    assert retried.status == "completed" and len(mailer.sent) == 1
    assert retried.tool_calls[0]["note"] == ALREADY_DONE


def test_a_kernel_restart_keeps_the_record(stable, make, tmp_path):
    mailer = Mailer()
    path = str(tmp_path / "usage.sqlite3")
    make(ledger_path=path).ask("use send_mail for ada@example.com", tools=[mailer.send_mail], cell_id="c")
    restarted = make(ledger_path=path)  # a new session on the same data folder: a new kernel
    answer = restarted.ask("use send_mail for ada@example.com", tools=[mailer.send_mail], cell_id="c")
    assert len(mailer.sent) == 1 and answer.tool_calls[0]["note"] == ALREADY_DONE


def test_a_call_that_started_but_never_finished_is_not_run_again(tmp_path):
    mailer = Mailer()
    ledger = ToolLedger(str(tmp_path / "tool_calls.sqlite3"))
    call = ToolCall("call_1", "send_mail", '{"to": "ada@example.com"}')
    assert ledger.claim("call_1", "send_mail", call.arguments) is None  # the kernel died while it ran
    result = Toolbox([mailer.send_mail], ledger=lambda: ToolLedger(ledger.path)).run(call)
    assert mailer.sent == [] and result.note == STARTED_BEFORE and result.output.startswith("Error: not run again")


def test_a_declined_call_may_run_when_asked_again_and_plain_tools_run_every_time():
    mailer = Mailer()
    box = Toolbox([mailer.send_mail])
    call = ToolCall("call_1", "send_mail", '{"to": "ada@example.com"}')
    assert box.run(call, confirm=lambda _: False).error == "declined by the user"
    assert box.run(call).output == "mail 1 sent to ada@example.com"
    assert box.run(call).note == ALREADY_DONE and mailer.sent == ["ada@example.com"]
    runs = []

    def plain(x: int) -> int:
        runs.append(x)
        return x

    plain_box = Toolbox([plain])
    for _ in range(2):
        plain_box.run(ToolCall("call_2", "plain", '{"x": 1}'))
    assert runs == [1, 1]


def test_a_record_that_cannot_be_written_means_the_tool_does_not_run(tmp_path):
    mailer = Mailer()
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    box = Toolbox([mailer.send_mail], ledger=lambda: ToolLedger(str(blocked / "tool_calls.sqlite3")))
    result = box.run(ToolCall("call_1", "send_mail", '{"to": "ada@example.com"}'))
    assert mailer.sent == [] and result.output.startswith("Error: not run: send_mail has side effects")


def test_a_create_carries_one_idempotency_key_for_all_its_attempts(local_server, make):
    session = make()
    local_server.inject("rate_limit", retry_after=0.01)  # the first attempt is refused; the retry is the same request
    session.ask("Hello")
    session.ask("Hello again")
    keys = [r.headers.get("idempotency-key") for r in local_server.requests if r.path == "/v1/responses"]
    assert len(keys) == 3 and keys[0] == keys[1] != keys[2] and keys[0].startswith("nbopenai-")


def test_extraction_rows_carry_their_own_keys(local_server, make):


    class City(BaseModel):
        name: str

    extract(make(), City, ["Paris", "Rome"], progress=False, cache=False)
    keys = {r.headers.get("idempotency-key") for r in local_server.requests if r.path == "/v1/responses"}
    assert len(keys) == 2 and None not in keys

"""The notebook as context: cell references ({In[n]}, {Out[n]}, {Err[n]}), names left as written."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import SECRET_KEY

from nbopenai import PreviousResponseNotFound, UsageError
from nbopenai._core._tokens import count_tokens
from nbopenai._turns._context import bounded, pick, strip_ansi, variables_summary
from nbopenai._turns._printer import StdoutSink
from nbopenai._turns._prompt import fill, interpolate, preview
from nbopenai._turns._replay import Replays


def _asks(server) -> list[dict]:
    return [r.body for r in server.requests if r.path == "/v1/responses" and r.method == "POST"]


# ---- the grammar -------------------------------------------------------------------------------


def test_cell_references_are_resolved_by_the_callers_resolver_and_nothing_else():
    seen = []

    def references(kind, index):
        seen.append((kind, index))
        if (kind, index) == ("Out", 99):
            raise LookupError(index)
        return f"<{kind} {index}>"

    template = "{In[3]} {Out[-1]} {Err[-2]} {Out[99]} {In[x]} {In[1].a} {In [1]} {In[+1]} {{In[1]}} {In}"
    filled = fill(template, {"In": ["", "a"]}, references=references)
    assert filled.text == "<In 3> <Out -1> <Err -2> {Out[99]} {In[x]} {In[1].a} {In [1]} {In[+1]} {In[1]} ['', 'a']"
    assert seen == [("In", 3), ("Out", -1), ("Err", -2), ("Out", 99)]
    assert filled.left_as_written == ("{Out[99]}",)


def test_without_a_resolver_cell_references_stay_literal():
    assert interpolate("{In[1]} {Err[-1]}", {}) == "{In[1]} {Err[-1]}"


def test_a_resolved_value_is_not_scanned_again():
    filled = fill("{In[1]}", {"secret": "TOPSECRET"}, references=lambda kind, index: "{secret} {In[1]}")
    assert filled.text == "{secret} {In[1]}"


def test_unknown_plain_names_are_listed_once_in_order():
    filled = fill('{b} {a} {b} {x.y} {"k": 1} {0} {{c}} {known}', {"known": 1})
    assert filled.text == '{b} {a} {b} {x.y} {"k": 1} {0} {c} 1'
    assert filled.left_as_written == ("{b}", "{a}")
    assert filled.left_note() == "left as written: {b}, {a}"
    assert fill("{known}", {"known": 1}).left_note() is None


def test_pick_counts_positive_numbers_as_execution_counts_and_negative_ones_back_from_the_running_cell():
    records = [(1, "a"), (2, "b"), (4, "d"), (5, "running")]
    assert pick(records, 4, running=5) == "d"
    assert pick(records, -1, running=5) == "d"
    assert pick(records, -3, running=5) == "a"
    for index in (0, 3, 5, -4, 6):
        with pytest.raises(LookupError):
            pick(records, index, running=5)


def test_bounded_keeps_the_head_and_mostly_the_tail():
    text = "HEAD" + "x" * 10_000 + "TAIL"
    cut = bounded(text, 600)
    assert cut.startswith("HEAD") and cut.endswith("TAIL") and len(cut) < 700 and "characters cut" in cut
    assert bounded("short", 600) == "short"


def test_strip_ansi_removes_colours_and_links():
    coloured = "\x1b[0;31mZeroDivisionError\x1b[0m: \x1b]8;;file:///x\x1b\\x\x1b]8;;\x1b\\"
    assert strip_ansi(coloured) == "ZeroDivisionError: x"


# ---- in a shell ----------------------------------------------------------------------------------


def _request_text(server) -> str:
    content = _asks(server)[-1]["input"][-1]["content"]
    return content if isinstance(content, str) else content[0]["text"]


def test_err_in_out_reach_the_request(ip, local_server):
    with pytest.raises(ZeroDivisionError):
        ip.run_cell("ratio = 1\nratio / 0", store_history=True)
    ip.run_cell("6 * 7", store_history=True)
    ip.run_cell("%%ask\nWhy? {Err[-1]} | {In[-1]} | {Out[-1]}", store_history=True)
    sent = _request_text(local_server)
    assert "ZeroDivisionError: division by zero" in sent and "ratio / 0" in sent
    assert "| 6 * 7 | 42" in sent
    assert "\x1b[" not in sent and "-----" not in sent


def test_err_is_scrubbed_and_bounded(ip, local_server):
    code = f"raise ValueError('key {SECRET_KEY} and sk-' + 'proj-AbCdEfGhIjKlMnOpQrStUvWx ' + 'x' * 50_000)"
    with pytest.raises(ValueError):
        ip.run_cell(code, store_history=True)
    magics = ip.magics_manager.registry["AskMagics"]
    error = magics.history.last_error()
    assert error.name == "ValueError" and error.number == ip.execution_count - 1
    assert SECRET_KEY not in error.traceback + error.cell and "sk-proj-AbCd" not in error.traceback
    assert len(error.traceback) < 7_000 and len(error.cell) < 5_000
    ip.run_cell("%ask Explain {Err[-1]}", store_history=True)
    assert SECRET_KEY not in str(_asks(local_server)[-1])


def test_unknown_names_are_said_before_sending_and_in_a_dry_run(ip, local_server, capsys):
    ip.run_cell("%%ask\nUse {undefined_var} in {\"json\": true} and {In[999]}", store_history=True)
    shown = capsys.readouterr().out
    assert shown.splitlines()[0] == "left as written: {undefined_var}, {In[999]}"
    assert _request_text(local_server).startswith('Use {undefined_var} in {"json": true} and {In[999]}')
    asked = len(_asks(local_server))
    ip.run_cell("%%ask --dry-run\nUse {undefined_var}")
    assert "left as written: {undefined_var}" in capsys.readouterr().out
    assert len(_asks(local_server)) == asked


# ---- --explain and code into the next cell ---------------------------------------------------------


def test_explain_sends_the_last_error_and_its_cell(ip, local_server, capsys):
    number = ip.execution_count
    with pytest.raises(KeyError):
        ip.run_cell("prices = {'tea': 3}\nprices['coffee']", store_history=True)
    ip.run_cell("ok = 1", store_history=True)  # a cell that works does not replace the error
    ip.run_cell("%ask --explain Is it the dictionary?", store_history=True)
    sent = _request_text(local_server)
    assert "Explain what caused it" in sent and sent.endswith("Is it the dictionary?")
    assert "prices['coffee']" in sent and "KeyError: 'coffee'" in sent and f"Cell In[{number}] raised KeyError" in sent
    # %nbopenai explain is the same request
    ip.run_cell("%nbopenai explain", store_history=True)
    assert "KeyError: 'coffee'" in _request_text(local_server)


def test_explain_with_no_error_says_so_and_sends_nothing(ip, local_server):
    with pytest.raises(UsageError, match="no cell has failed yet"):
        ip.run_cell("%ask --explain")
    assert not _asks(local_server)


def test_a_traceback_is_never_interpolated(ip, local_server):
    ip.run_cell("secret = 'TOPSECRET'")
    with pytest.raises(ValueError):
        ip.run_cell("raise ValueError('{secret} {In[1]}')", store_history=True)
    ip.run_cell("%ask --explain", store_history=True)
    assert "TOPSECRET" not in str(_asks(local_server)[-1]) and "{secret}" in _request_text(local_server)


def test_fix_in_a_terminal_prints_the_code_it_would_queue(ip, local_server, capsys):
    with pytest.raises(ZeroDivisionError):
        ip.run_cell("1 / 0", store_history=True)
    ip.rl_next_input = None
    ip.run_cell("%ask --fix", store_history=True)
    sent = _request_text(local_server)
    assert "corrected cell as one complete Python code block" in sent
    shown = capsys.readouterr().out
    assert "The code, to paste into the next cell:" in shown and "def " in shown
    assert ip.rl_next_input is None  # a terminal is not a notebook: nothing pre-filled


# ---- the kernel's variables, and better previews ---------------------------------------------------


def test_variables_summary_skips_private_modules_callables_and_secrets():



    class Weird:  # nothing of it is read: not its repr, not its attributes
        def __repr__(self):
            raise AssertionError("repr called")

        def __getattr__(self, name):
            raise AssertionError(f"attribute {name} read")

    frame = pd.DataFrame({"city": ["Oslo", "Lima", "Pune", "Kyiv"], "temp": [1 / 3, 2.5, 30.25, -4.0]})
    ns = {
        "frame": frame, "ratio": 2 / 3, "names": ["Ada", "Alan"], "grid": np.zeros((3, 4)),
        "os": os, "helper": print, "Model": dict, "_private": 1, "In": [], "Out": {},
        "api_key": "anything", "db_password": "hunter2", "my_token": 1, "leaked": SECRET_KEY,
        "opaque": "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZg", "oauth_client": "x",
        "author": "Ada", "session_obj": Weird(),
    }
    summary = variables_summary(ns)
    assert summary.splitlines() == [
        "- frame: DataFrame 4 rows × 2 columns: city str [Oslo, Lima, Pune, …]; temp float64 [0.333333, 2.5, 30.25, …]",
        "- ratio: float 0.666667",
        "- names: list of 2 items [Ada, Alan]",
        "- grid: ndarray shape (3, 4) float64",
        "- author: str of 3 characters: 'Ada'",
        "- session_obj: test_context.Weird",
    ]


def test_variables_summary_is_bounded_in_tokens_and_keeps_the_newest():
    ns = {f"value_{n}": f"text number {n} " * 5 for n in range(500)}
    summary = variables_summary(ns, budget=300)
    assert count_tokens(summary) <= 320
    assert "value_499" in summary and "value_0:" not in summary and "more variables not shown" in summary


def test_previews_show_a_series_as_a_series_round_floats_and_keep_head_and_tail():


    series = pd.Series([n / 3 for n in range(1000)], name="price")
    text = preview(series)
    assert text.startswith("Series 'price' with 1,000 values (float64)")
    assert "| 1 | 0.333333 |" in text and "| 999 | 333 |" in text and "| … | … |" in text
    assert "(980 more rows not shown)" in text and "0.3333333333" not in text


def test_vars_in_a_cell_and_as_context(ip, local_server):
    ip.run_cell("import pandas as pd\nsales = pd.DataFrame({'region': ['north', 'south'], 'units': [3, 5]})")
    ip.run_cell("%%ask\nWhich frame has units? {vars}")
    sent = _request_text(local_server)
    assert "The kernel's variables:\n" in sent and "- sales: DataFrame 2 rows × 2 columns: region" in sent
    assert "units int64 [3, 5]" in sent and "- pd:" not in sent and "get_ipython" not in sent
    ip.run_cell("%ask --context vars What can I plot?")
    sent = _request_text(local_server)
    assert sent.startswith("What can I plot?\n\nThe kernel's variables:\n") and "- sales: DataFrame" in sent
    ip.run_cell("vars = 'mine'\n%ask {vars}")  # a variable of the user's own comes first
    assert _request_text(local_server) == "mine"


# ---- replay ------------------------------------------------------------------------------------------


def test_replay_reuses_unchanged_turns_and_asks_from_the_first_change_on(ip, local_server, capsys):
    cells = ["My name is Ada.", "I like tea.", "What is my name?"]

    def run_all(prompts, replay="--replay"):
        before = len(_asks(local_server))
        answers = []
        for number, prompt in enumerate(prompts):
            ip.run_cell(f"%%ask {replay} {'--new' if number == 0 else ''} -o answer\n{prompt}")
            answers.append(ip.user_ns["answer"])
        return answers, _asks(local_server)[before:]

    first, sent = run_all(cells)
    assert len(sent) == 3 and not any(a.replayed for a in first)
    again, sent = run_all(cells)
    assert sent == [] and all(a.replayed for a in again)
    assert [a.text for a in again] == [a.text for a in first] and [a.turn for a in again] == [1, 2, 3]
    assert [a.response_id for a in again] == [a.response_id for a in first] and all(a.cost_usd == 0 for a in again)
    assert "replayed: the stored answer of" in again[0].notice and again[0].provenance()["replayed"] is True
    assert "(replayed: the stored answer of" in capsys.readouterr().out

    edited, sent = run_all([cells[0], "I like coffee.", cells[2]])
    assert [a.replayed for a in edited] == [True, False, False] and len(sent) == 2
    assert sent[0]["previous_response_id"] == first[0].response_id  # chained on the replayed turn
    assert sent[1]["previous_response_id"] == edited[1].response_id

    _, sent = run_all(cells, replay="")  # without --replay: every cell asks
    assert len(sent) == 3


def _reopened_with_its_head_gone(make, local_server, tmp_path, how):
    """A notebook asked once (replay on), then reopened in a new kernel after its stored response left the
    server: the replayed first cell puts that response back at the head of the thread, unsent."""
    path = str(tmp_path / "usage.sqlite3")
    first = make(ledger_path=path)
    answered = Replays(first).ask("My name is Ada.", new=True, cell_id="c1")
    if how == "deleted":
        first.client.responses.delete(answered.response_id)
    else:  # expired: the offline server keeps only its newest responses
        local_server.configure(max_responses=1)
        first.ask("Something else.", thread="other")
    first.close()
    session = make(ledger_path=path)
    replays = Replays(session)
    assert replays.ask("My name is Ada.", new=True, cell_id="c1").replayed
    return session, replays, answered.response_id


@pytest.mark.parametrize("how", ["deleted", "expired"])
def test_a_thread_whose_stored_response_is_gone_resends_its_turns_once(make, local_server, tmp_path, how, capsys):
    session, replays, gone = _reopened_with_its_head_gone(make, local_server, tmp_path, how)
    before = len(_asks(local_server))
    answer = replays.ask("What is my name?", cell_id="c2", sink=StdoutSink())
    refused, resent = _asks(local_server)[before:]
    assert refused["previous_response_id"] == gone  # the 400 previous_response_not_found: refused, not billed
    assert "previous_response_id" not in resent
    assert [item["role"] for item in resent["input"]] == ["user", "assistant", "user"]
    assert resent["input"][0]["content"] == "My name is Ada."
    assert "Your name is Ada." in answer.text and answer.turn == 2
    assert gone in answer.notice and "sent again as input" in answer.notice
    assert f"({answer.notice})" in capsys.readouterr().out  # said once, before the answer
    rows = session.usage()
    assert list(rows["status"]) == ["error", "completed"] and rows["cost_usd"].iloc[0] == 0
    follow_up = session.ask("And again?", cell_id="c3")  # chains on from the new response
    assert _asks(local_server)[-1]["previous_response_id"] == answer.response_id and follow_up.notice is None


def test_a_gone_chain_is_sent_again_by_a_tool_loop_and_a_background_job_too(make, local_server, tmp_path):
    session, _, gone = _reopened_with_its_head_gone(make, local_server, tmp_path, "deleted")

    def get_time(city: str) -> str:
        """The time in a city."""
        return "noon"

    looped = session.ask("use get_time for Paris", tools=[get_time], cell_id="c2")
    assert looped.tool_calls and gone in looped.notice and looped.turn == 2
    local_server.clear_requests()
    answer = session.submit("What is my name?", cell_id="c2").wait(timeout=30)  # the cell re-run: on the gone head
    assert "Your name is Ada." in answer.text and answer.turn == 2
    assert answer.notice.startswith("thread default: re-ran turn 2 of 2; ") and gone in answer.notice
    first, second = _asks(local_server)
    assert first["previous_response_id"] == gone and "previous_response_id" not in second and second["background"]


def test_a_gone_response_is_not_resent_after_an_attempt_that_may_have_been_billed(make, local_server, tmp_path):
    session, replays, gone = _reopened_with_its_head_gone(make, local_server, tmp_path, "deleted")
    before = len(_asks(local_server))
    local_server.inject("drop")  # cut after it was sent: the server may have started on it
    with pytest.raises(PreviousResponseNotFound) as raised:
        session.ask("What is my name?", cell_id="c2", stream=False)
    assert [body.get("previous_response_id") for body in _asks(local_server)[before:]] == [gone, gone]
    assert gone in raised.value.message and "--new" in raised.value.hint
    assert session.threads.get().head == gone  # the thread stays as it was


def test_replay_is_keyed_by_the_settings_and_the_endpoint(ip, local_server):
    ip.run_cell("%%ask --replay --new\nMy name is Ada.")
    asked = len(_asks(local_server))
    ip.run_cell("%%ask --replay --new --temperature 0.5\nMy name is Ada.")
    ip.run_cell("%%ask --replay --new -s 'Be brief.'\nMy name is Ada.")
    assert len(_asks(local_server)) == asked + 2
    ip.run_cell("%config AskMagics.replay = True")
    ip.run_cell("%%ask --new\nMy name is Ada.")
    assert len(_asks(local_server)) == asked + 2


def test_a_conversation_thread_is_never_replayed(ip, local_server):
    ip.run_cell("%%ask --replay -t talk --store conversation\nMy name is Ada.")
    asked = len(_asks(local_server))
    ip.run_cell("%%ask --replay -t talk2 --store conversation\nMy name is Ada.")
    assert len(_asks(local_server)) == asked + 1


def _open_files(name: str) -> list[str]:
    """The files named ``name`` this process holds open (its descriptors, as the OS lists them)."""
    fds = Path("/proc/self/fd")
    found = []
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):  # (the listing's own descriptor is gone by now)
            found.append(os.readlink(fd))
    return [target for target in found if Path(target).name == name]


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="lists open files through /proc")
def test_the_replay_store_is_closed_with_the_session_and_when_the_ledger_moves(make, tmp_path):
    """It lives beside the ledger and is opened on first use, as the extraction cache is; it was closed neither when
    the session closed nor when the ledger moved (each move left one more file open)."""
    session = make(ledger_path=str(tmp_path / "one" / "usage.sqlite3"))
    replays = Replays(session)
    replays.ask("My name is Ada.", new=True)
    assert _open_files("replay.sqlite3") == [str(tmp_path / "one" / "replay.sqlite3")]
    session.configure(ledger_path=str(tmp_path / "two" / "usage.sqlite3"))
    assert replays.ask("My name is Ada.", new=True).replayed is False  # a store of its own there
    assert _open_files("replay.sqlite3") == [str(tmp_path / "two" / "replay.sqlite3")]
    assert replays.ask("My name is Ada.", new=True).replayed is True
    session.close()
    assert _open_files("replay.sqlite3") == []


def test_replay_follows_a_thread_kept_on_this_side(ip, local_server):
    """With store=False the earlier turns are re-sent: they are the chain the key covers."""
    ip.run_cell("%config AskMagics.store = False")
    for _ in range(2):
        ip.run_cell("%%ask --replay -t mine --new\nMy name is Ada.")
        ip.run_cell("%%ask --replay -t mine -o answer\nWhat is my name?")
    assert len(_asks(local_server)) == 2 and ip.user_ns["answer"].replayed
    assert "Your name is Ada." in ip.user_ns["answer"].text
    ip.run_cell("%%ask --replay -t mine --new\nMy name is Grace.")
    ip.run_cell("%%ask --replay -t mine -o answer\nWhat is my name?")
    assert len(_asks(local_server)) == 4 and "Your name is Grace." in ip.user_ns["answer"].text

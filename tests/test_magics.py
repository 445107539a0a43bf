"""``%%ask``, ``%ask`` and ``%nbopenai`` in a real IPython shell against the offline server.

The shell's ``run_cell`` raises a failing cell's error (after IPython has shown it), so each test
sees both what the user saw (captured output) and the typed failure. ``local_server.requests``
is what went over the wire.
"""

from __future__ import annotations

import _thread
import io
import itertools
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from conftest import SECRET_KEY
from IPython.utils.capture import capture_output

import nbopenai
from nbopenai._core._retry import RATE_LIMIT_ATTEMPTS
from nbopenai.ipython._errors import TITLES
from nbopenai.ipython._render import PLAIN_PREVIEW_CHARS, answer_bundle, preview
from nbopenai.local import start


def asks(server) -> list[dict]:
    return [r.body for r in server.requests if r.method == "POST" and r.path == "/v1/responses"]


def magics_of(ip):
    return ip.magics_manager.registry["AskMagics"]


def turns(ip, thread: str = "default"):
    return magics_of(ip).session.threads.get(thread).turns


def run(ip, source: str, *, cell_id: str | None = None) -> str:
    """Run a cell, return everything it printed (stdout, stderr, displays' text)."""
    with capture_output() as captured:
        ip.run_cell(source, cell_id=cell_id)
    return captured.stdout + captured.stderr + "".join(o.data.get("text/plain", "") for o in captured.outputs)


def user_texts(body: dict) -> str:
    return " ".join(str(item.get("content")) for item in body["input"])


# ---- loading ---------------------------------------------------------------------------------


def test_load_ext_registers_the_magics(ip):
    magics = ip.magics_manager.magics
    assert "ask" in magics["line"] and "ask" in magics["cell"] and "nbopenai" in magics["line"]
    assert nbopenai.current_session() is magics_of(ip).session
    extract = ip.magics_manager.registry.get("ExtractMagics")
    if extract is not None:  # registered when its module imports, on the same session
        assert extract.session is magics_of(ip).session and "extract" in magics["cell"]


def test_a_question_mark_at_the_end_asks_instead_of_opening_help(ip, local_server):
    run(ip, "%ask What is my name?")
    assert asks(local_server)[0]["input"][-1]["content"] == "What is my name?"


def test_unload_removes_the_magics_and_closes_the_session(ip):
    session = magics_of(ip).session
    ip.run_cell("%unload_ext nbopenai")
    assert "ask" not in ip.magics_manager.magics["line"]
    assert "AskMagics" not in ip.magics_manager.registry
    assert session.loop._loop is None
    ip.run_cell("%load_ext nbopenai")  # the fixture unloads again


def test_loading_imports_neither_pandas_nor_ipywidgets():
    code = (
        "import sys\n"
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "ip = InteractiveShell.instance()\n"
        "ip.run_line_magic('load_ext', 'nbopenai')\n"
        "print('pandas' in sys.modules, 'ipywidgets' in sys.modules)\n"
    )
    env = {"PATH": "", "NBOPENAI_HOME": "/nonexistent", "PYTHONPATH": ":".join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.split()[-2:] == ["False", "False"]


def test_the_warm_up_runs_between_cells_and_the_next_cell_waits_for_it(shell, local_server, monkeypatch):
    """What the first ask needs loads after the loading cell (``%load_ext`` stays cheap, and nothing
    imports beside it), and is imported when the next cell starts: the client is built by then. Only the
    tokenizer's vocabulary, which imports nothing, may still be building (so this holds in any test order)."""
    monkeypatch.setenv("OPENAI_BASE_URL", local_server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET_KEY)
    shell.run_cell("%load_ext nbopenai\nimport threading\n_during = [t.name for t in threading.enumerate()]")
    try:
        session = shell.magics_manager.registry["AskMagics"].session
        assert "nbopenai-warm-up" not in shell.user_ns["_during"]
        shell.run_cell("_after = [t.imported.is_set() for t in threading.enumerate() if t.name == 'nbopenai-warm-up']")
        assert all(shell.user_ns["_after"])  # the cell started once its imports were done
        assert session._clients is not None and session._clients._sync is not None
    finally:
        shell.run_cell("%unload_ext nbopenai")


def test_loading_without_a_key_fails_only_at_the_first_ask(shell):
    shell.run_cell("%load_ext nbopenai")  # no key, no base URL: loading still works
    try:
        with capture_output() as captured, pytest.raises(nbopenai.ConfigurationError):
            shell.run_cell("%ask hello")
        assert "OPENAI_API_KEY" in captured.stdout and "%nbopenai local" in captured.stdout
        assert "Traceback" not in captured.stdout + captured.stderr
    finally:
        shell.run_cell("%unload_ext nbopenai")


# ---- conversation state ----------------------------------------------------------------------


def test_turns_chain_by_previous_response_id_with_instructions_every_turn(ip, local_server):
    ip.run_cell('%config AskMagics.instructions = "Answer briefly."')
    out = run(ip, "%%ask\nMy name is Ada.")
    assert "Noted: your name is Ada." in out
    out = run(ip, "%%ask\nWhat is my name?")
    assert "Your name is Ada." in out

    first, second = asks(local_server)
    first_id = turns(ip)[0].response_id
    assert "previous_response_id" not in first
    assert second["previous_response_id"] == first_id
    assert "My name is Ada" not in user_texts(second)  # the chain carries it, not the request
    assert first["instructions"] == second["instructions"] == "Answer briefly."


def test_rerunning_a_cell_rewinds_its_thread_and_says_so(ip, local_server):
    run(ip, "%%ask\nMy name is Ada.", cell_id="c1")
    run(ip, "%%ask\nI like tea.", cell_id="c2")
    run(ip, "%%ask\nWhat is my name?", cell_id="c3")
    first_id = turns(ip)[0].response_id

    out = run(ip, "%%ask\nI like coffee.", cell_id="c2")

    assert out.count("thread default: re-ran turn 2 of 3, 1 later turn dropped") == 1
    assert asks(local_server)[-1]["previous_response_id"] == first_id
    assert [t.prompt for t in turns(ip)] == ["My name is Ada.", "I like coffee."]


def test_run_all_twice_gives_the_same_conversation(ip, local_server):
    cells = [("a", "%%ask\nMy name is Ada."), ("b", "%%ask\nWhat is my name?")]
    for _ in range(2):
        for cell_id, source in cells:
            run(ip, source, cell_id=cell_id)
    assert [t.cell_id for t in turns(ip)] == ["a", "b"]
    assert "previous_response_id" not in asks(local_server)[2]  # the second run started over


def test_without_cell_ids_turns_append(ip, local_server):
    for _ in range(3):
        run(ip, "%ask What is my name?")
    assert len(turns(ip)) == 3
    ids = [t.response_id for t in turns(ip)]
    assert [body.get("previous_response_id") for body in asks(local_server)] == [None, *ids[:2]]


def test_two_asks_in_one_cell_are_two_turns_and_rerun_together(ip):
    source = "%ask My name is Ada.\n%ask I like tea."
    run(ip, source, cell_id="c1")
    run(ip, source, cell_id="c1")
    assert [t.prompt for t in turns(ip)] == ["My name is Ada.", "I like tea."]


def test_named_threads_and_new(ip, local_server):
    run(ip, "%%ask\nMy name is Ada.")
    run(ip, "%%ask -t other\nWhat is my name?")
    run(ip, "%%ask --new\nWhat is my name?")
    _, other, fresh = asks(local_server)
    assert "previous_response_id" not in other and "previous_response_id" not in fresh
    assert len(turns(ip, "other")) == 1 and len(turns(ip)) == 1


def test_store_false_keeps_items_client_side_and_resends_them(ip, local_server):
    ip.run_cell("%config AskMagics.store = False")
    run(ip, "%%ask\nMy name is Ada.")
    out = run(ip, "%%ask\nWhat is my name?")
    first, second = asks(local_server)
    assert first["store"] is False and "previous_response_id" not in second
    assert "My name is Ada." in user_texts(second)
    assert "Your name is Ada." in out


def test_store_false_for_a_new_thread(ip, local_server):
    ip.run_cell("%config AskMagics.store = False")
    run(ip, "%%ask --new -t private\nMy name is Ada.")
    out = run(ip, "%%ask -t private\nWhat is my name?")
    first, second = asks(local_server)
    assert first["store"] is False and second["store"] is False
    assert "previous_response_id" not in second
    assert "My name is Ada." in user_texts(second)
    assert "Your name is Ada." in out


# ---- prompt building, options, values --------------------------------------------------------


def test_line_prompt_is_the_rest_of_the_line_verbatim(ip, local_server):
    run(ip, """%ask -t q what's  "-5" plus 'one'? -m x""")
    body = asks(local_server)[0]
    assert body["input"][-1]["content"] == """what's  "-5" plus 'one'? -m x"""
    assert body["model"] == "nbopenai-local"
    run(ip, '%ask say "hi')  # an unbalanced quote is part of the prompt, not an error
    assert asks(local_server)[1]["input"][-1]["content"] == 'say "hi'


def test_options_reach_the_request(ip, local_server):
    run(ip, '%%ask -m gpt-4.1 -s "Be terse." --temperature 0.5 --max-output-tokens 64 --reasoning low --no-stream\nHi')
    body = asks(local_server)[0]
    assert body["model"] == "gpt-4.1" and body["instructions"] == "Be terse."
    assert body["temperature"] == 0.5 and body["max_output_tokens"] == 64
    assert body["reasoning"] == {"effort": "low"} and not body.get("stream")


def test_interpolation_is_one_pass_from_the_namespace(ip, local_server):
    ip.user_ns.update(name="Ada", secret="{name}", df=pd.DataFrame({"a": [1, 2]}))
    run(ip, "%%ask\nI am {name}; {secret}; {{name}}; {name.upper}; {missing}\n{df}")
    text = asks(local_server)[0]["input"][-1]["content"]
    assert text.startswith("I am Ada; {name}; {name}; {name.upper}; {missing}\n")
    assert "DataFrame with 2 rows × 1 columns" in text


def test_line_magic_does_not_let_ipython_expand_expressions(ip, local_server):
    ip.user_ns["x"] = 2
    run(ip, "%ask what is {x+1} and {x} and $x")
    assert asks(local_server)[0]["input"][-1]["content"] == "what is {x+1} and 2 and $x"


def test_out_binds_the_answer_which_renders_as_markdown(ip):
    run(ip, "%%ask -o reply\nMy name is Ada.")
    reply = ip.user_ns["reply"]
    assert isinstance(reply, nbopenai.Answer) and reply.turn == 1
    bundle = reply.mime_bundle()
    assert "Noted: your name is Ada." in bundle["text/markdown"] and "text/plain" in bundle


def test_dry_run_shows_the_exact_request_and_sends_nothing(ip, local_server):
    run(ip, "%%ask\nMy name is Ada.")
    out = run(ip, '%%ask --dry-run -o request -s "Be brief."\nWhat is my name?')
    assert len(asks(local_server)) == 1
    request = ip.user_ns["request"]
    assert request.params["previous_response_id"] == turns(ip)[0].response_id
    assert request.params["instructions"] == "Be brief." and request.estimated_input_tokens > 0
    assert local_server.base_url in out and '"previous_response_id"' in out and "nothing sent" in out
    assert SECRET_KEY not in out and "Authorization" not in out
    assert len(turns(ip)) == 1


def test_cell_magic_rejects_a_prompt_on_its_line(ip):
    with pytest.raises(nbopenai.UsageError, match="takes its prompt from the cell"):
        run(ip, "%%ask -t x oops\nHello")


def test_bad_options_are_usage_errors(ip):
    with pytest.raises(nbopenai.UsageError):
        run(ip, "%%ask --reasoning extreme\nHi")
    with pytest.raises(nbopenai.UsageError, match="unrecognized") as caught:
        run(ip, "%ask --bogus hi")
    assert caught.value._render_traceback_() == ["\x1b[0;31mUsage error\x1b[0m: unrecognized arguments: --bogus"]
    with pytest.raises(nbopenai.UsageError):
        run(ip, "%%ask\n   ")


def test_help_has_examples(ip):
    with capture_output() as captured:
        ip.run_cell("%%ask?")
    assert "Examples" in captured.stdout and "--dry-run" in captured.stdout and "%(" not in captured.stdout
    assert "Examples" in ip.magics_manager.magics["line"]["nbopenai"].__doc__


@pytest.mark.parametrize("fmt, expected", [("json", '```json\n{\n  "a": 1\n}\n```'), ("text", "```text\n")])
def test_formats(fmt, expected):
    answer = nbopenai.Answer(text='{"a": 1}', model="m")
    assert expected in answer_bundle(answer, fmt)["text/markdown"]


def test_code_format_keeps_only_the_code_blocks():
    answer = nbopenai.Answer(text="Here:\n```python\nprint(1)\n```\nand\n```\nx = 2\n```\nDone.", model="m")
    bundle = answer_bundle(answer, "code")
    assert bundle["text/markdown"].startswith("```python\nprint(1)\n```\n\n```\nx = 2\n```")
    assert "Here:" not in bundle["text/markdown"] and bundle["text/plain"].startswith("print(1)\n\nx = 2")


def test_json_format_that_does_not_parse_says_so():
    bundle = answer_bundle(nbopenai.Answer(text="not json", model="m"), "json")
    assert "not valid JSON" in bundle["text/markdown"] and "application/json" not in bundle



def test_a_long_answer_is_sent_once_as_markdown_and_previewed_as_text():
    """The final output must not carry the answer twice: text/plain is a bounded preview that says so."""
    long_text = " ".join(f"word{i}" for i in range(2_000))
    bundle = answer_bundle(nbopenai.Answer(text=long_text, model="m", status="incomplete", error="max tokens"))
    assert long_text in bundle["text/markdown"]
    plain = bundle["text/plain"]
    assert len(plain) < PLAIN_PREVIEW_CHARS + 300 and plain.startswith("word0 word1 ")
    shown = plain.split("\n[…")[0]
    assert long_text.startswith(shown) and long_text[len(shown)] == " "  # cut between words
    assert f"{len(long_text) - len(shown):,} more characters" in plain
    assert "[incomplete: max tokens]" in plain and "-- m ·" in plain  # the status and footer stay whole
    short = answer_bundle(nbopenai.Answer(text="A short answer.", model="m"))
    assert short["text/plain"].startswith("A short answer.\n-- m")

@pytest.mark.parametrize(
    "unit",
    ["e\u0301", "\U0001f468\u200d\U0001f469\u200d\U0001f467", "\U0001f1eb\U0001f1f7", "\U0001f44b\U0001f3fd",
     "\u2764\ufe0f", "\u0e01\u0e34\u0e48"],
    ids=["accent", "zwj-family", "flag", "skin-tone", "variation", "thai-marks"],
)
def test_a_preview_cut_with_no_space_to_cut_at_keeps_each_character_whole(unit):
    """An answer with no space or line end near the cut (Thai, emoji, text in decomposed form) is cut where the
    limit falls; it must not part a letter from its marks, nor an emoji from its joined or modifying parts."""
    for lead in range(len(unit)):  # the limit falls at every position inside a cluster
        text = "x" * lead + unit * (2 * PLAIN_PREVIEW_CHARS // len(unit))
        shown = preview(text).split("\n[…")[0]
        assert text.startswith(shown) and len(shown) > PLAIN_PREVIEW_CHARS // 2
        assert (len(shown) - lead) % len(unit) == 0, (lead, shown[-4:])


# ---- configuration ---------------------------------------------------------------------------


def test_config_magic_changes_the_next_request(ip, local_server):
    ip.run_cell('%config AskMagics.model = "gpt-4.1-mini"')
    ip.run_cell("%config AskMagics.temperature = 0.25")
    ip.run_cell("%config AskMagics.max_output_tokens = 100")
    run(ip, "%ask Hi")
    body = asks(local_server)[0]
    assert (body["model"], body["temperature"], body["max_output_tokens"]) == ("gpt-4.1-mini", 0.25, 100)


def test_ipython_config_file_settings_apply_at_load(shell, local_server, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", local_server.base_url)
    shell.config.AskMagics.model = "gpt-4.1-nano"  # what `c.AskMagics.model = ...` in ipython_config.py does
    shell.config.AskMagics.instructions = "From the config file."
    shell.config.AskMagics.read_timeout = 33.0
    shell.run_cell("%load_ext nbopenai")
    try:
        run(shell, "%ask Hi")
        body = asks(local_server)[0]
        assert body["model"] == "gpt-4.1-nano" and body["instructions"] == "From the config file."
        assert magics_of(shell).session.settings.timeouts.read == 33.0
    finally:
        shell.run_cell("%unload_ext nbopenai")


def test_trait_defaults_follow_the_session(ip, local_server):
    magics = magics_of(ip)
    assert magics.model == "nbopenai-local" and magics.base_url == local_server.base_url
    assert magics.read_timeout == magics.session.settings.timeouts.read


def test_invalid_config_is_refused_and_changes_nothing(ip):
    magics = magics_of(ip)
    with capture_output():
        ip.run_cell("%config AskMagics.temperature = 3")
        ip.run_cell("%config AskMagics.max_attempts = 0")
    assert magics.session.settings.temperature is None and magics.session.settings.max_attempts >= 1


# ---- %nbopenai ---------------------------------------------------------------------------------


def test_admin_threads_history_reset(ip):
    run(ip, "%ask My name is Ada.")
    run(ip, "%ask -t other Hello")
    with capture_output():
        threads = ip.run_cell("%nbopenai threads").result
        history = ip.run_cell("%nbopenai history").result
    assert sorted(threads["thread"]) == ["default", "other"]
    assert list(history.columns[:5]) == ["turn", "cell", "prompt", "answer", "response_id"]
    assert history.loc[0, "prompt"] == "My name is Ada." and "input_tokens" in history.columns
    assert run(ip, "%nbopenai reset -t other").strip() == "Forgot thread other."
    assert "other" not in magics_of(ip).session.threads
    run(ip, "%nbopenai reset --all")
    assert magics_of(ip).session.threads.names() == []


def test_status_masks_the_key(ip):
    out = run(ip, "%nbopenai status")
    assert f"sk-...{SECRET_KEY[-4:]}" in out and SECRET_KEY not in out
    assert "nbopenai-local" in out


def test_status_counts_each_threads_turns_in_words(ip):
    run(ip, "%ask -t a Hi")
    run(ip, "%ask -t b Hi")
    run(ip, "%ask -t b Again")
    assert "a (1 turn), b (2 turns)" in run(ip, "%nbopenai status")


def test_help_and_usage(ip):
    assert "%%ask" in run(ip, "%nbopenai")
    run(ip, "%ask Hi")
    with capture_output():
        rows = ip.run_cell("%nbopenai usage").result
        summary = ip.run_cell("%nbopenai usage --summary --since 1h").result
    assert list(rows["status"]) == ["completed"]
    assert int(summary["calls"].sum()) == 1


def test_local_starts_the_demo_server_for_this_session(ip, local_server):
    out = run(ip, "%nbopenai local")
    session = magics_of(ip).session
    assert session.local_server is not None and session.local_server.base_url in out
    run(ip, "%ask My name is Ada.")
    assert asks(local_server) == [] and len(session.local_server.requests) == 1


def test_background_job_returns_at_once_and_fills_in(ip, local_server):
    out = run(ip, "%%ask --background -o job\nMy name is Ada.")
    job = ip.user_ns["job"]
    assert job.id in out
    answer = job.wait(timeout=20)
    assert answer.status == "completed" and "Ada" in answer.text
    assert asks(local_server)[0]["background"] is True
    with capture_output():
        jobs = ip.run_cell("%nbopenai jobs").result
    assert list(jobs["job"]) == [job.id]


def test_a_background_job_can_be_cancelled(ip, local_server):
    local_server.configure(background_delay=30)  # stays queued until cancelled
    run(ip, "%%ask --background -o job\nMy name is Ada.")
    job = ip.user_ns["job"]
    assert run(ip, f"%nbopenai cancel {job.id}").strip() == f"Asked the server to cancel {job.id}."
    job.wait(timeout=20)
    assert job.status == "cancelled" and turns(ip) == []
    with pytest.raises(nbopenai.UsageError, match="no job"):
        run(ip, "%nbopenai cancel job-0")


# ---- errors ------------------------------------------------------------------------------------


ERROR_CASES = {  # fault kind: (its parameters, AskMagics settings, the error the user gets)
    "unauthorized": ({}, {}, nbopenai.AuthenticationError),
    "rate_limit": ({"retry_after": 0, "count": RATE_LIMIT_ATTEMPTS}, {"max_attempts": 2}, nbopenai.RateLimitError),
    # a server that echoes the key in its message: it is masked all the same
    "bad_request": ({"message": f"Unsupported parameter 'x' (key {SECRET_KEY})."}, {}, nbopenai.BadRequestError),
    "context_length_exceeded": ({}, {}, nbopenai.ContextLengthExceeded),
    "slow": ({"delay": 1.0}, {"read_timeout": 0.2, "max_attempts": 1}, nbopenai.TimeoutError),
    "drop": ({"count": 2}, {"max_attempts": 2}, nbopenai.ConnectionError),  # cut before any byte (--no-stream)
    "server_error": ({"count": 2}, {"max_attempts": 2}, nbopenai.ServerError),
}


@pytest.mark.parametrize("kind", list(ERROR_CASES))
def test_each_failure_is_one_short_message_and_never_moves_the_thread(ip, local_server, kind):
    params, config, error = ERROR_CASES[kind]
    run(ip, "%ask My name is Ada.")
    head = turns(ip)[-1].response_id
    for name, value in config.items():
        setattr(magics_of(ip), name, value)
    count = params.pop("count", 1)
    local_server.inject(kind, count=count, **params)

    with capture_output() as captured, pytest.raises(error) as raised:
        ip.run_cell("%ask --no-stream What is my name?")

    shown = captured.stdout + captured.stderr
    title = next(t for cls, t in TITLES if isinstance(raised.value, cls))
    assert shown.count(title) == 1, shown
    assert "Traceback" not in shown and "site-packages" not in shown and len(shown.strip().splitlines()) <= 3
    assert SECRET_KEY not in shown and SECRET_KEY not in str(raised.value)
    assert turns(ip)[-1].response_id == head and len(turns(ip)) == 1
    if config.get("max_attempts", 1) > 1:
        attempts = RATE_LIMIT_ATTEMPTS if kind == "rate_limit" else 2  # 429s with retry-after get more
        assert f"after {attempts} attempts" in shown


@pytest.mark.parametrize(
    "kind, error",
    [
        ("midstream_error", nbopenai.StreamError),
        ("midstream_error_flat", nbopenai.StreamError),
        ("drop", nbopenai.ConnectionError),
    ],
)
def test_mid_stream_failure_keeps_the_partial_text_marked_and_the_thread(ip, local_server, kind, error):
    run(ip, "%ask My name is Ada.")
    head = turns(ip)[-1].response_id
    local_server.inject(kind, after=3)
    with capture_output() as captured, pytest.raises(error):
        ip.run_cell("%ask What is my name?")
    shown = captured.stdout
    assert "(nbopenai offline demo" in shown  # the text that arrived stays
    assert "[failed" in shown and shown.count("Traceback") == 0
    assert turns(ip)[-1].response_id == head and len(turns(ip)) == 1
    run(ip, "%ask What is my name?")
    assert asks(local_server)[-1]["previous_response_id"] == head


def test_incomplete_answer_is_kept_marked_partial(ip, local_server):
    local_server.inject("incomplete")
    out = run(ip, "%%ask -o reply\nMy name is Ada.")
    assert "[incomplete" in out and ip.user_ns["reply"].partial


class _InterruptingStdout(io.StringIO):
    """Presses the stop button (SIGINT to the main thread) while the Nth delta is written."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after, self.writes = after, 0

    def write(self, text: str) -> int:
        self.writes += 1
        if self.writes == self.after:
            _thread.interrupt_main()
        return super().write(text)


def test_keyboard_interrupt_mid_stream_keeps_partial_text_and_thread(ip, local_server, monkeypatch):
    run(ip, "%ask My name is Ada.")
    session = magics_of(ip).session
    head = turns(ip)[-1].response_id
    stdout = _InterruptingStdout(after=4)
    monkeypatch.setattr(sys, "stdout", stdout)
    with pytest.raises(KeyboardInterrupt):
        ip.run_cell("%ask What is my name?")
    monkeypatch.undo()
    shown = stdout.getvalue()
    assert "(nbopenai offline" in shown and "[interrupted" in shown
    assert shown.count("KeyboardInterrupt") == 1 and "Traceback" not in shown
    assert turns(ip)[-1].response_id == head and len(turns(ip)) == 1
    statuses = list(session.usage()["status"])
    assert statuses == ["completed", "interrupted"]


# ---- the widget view through the magic ---------------------------------------------------------


def test_notebook_view_streams_in_a_widget_then_leaves_static_markdown(ip, recording_comm):
    ip.run_cell('%config AskMagics.widgets = "on"')
    with capture_output() as captured:
        ip.run_cell("%%ask\nMy name is Ada.", cell_id="c1")
    first, *rest = captured.outputs
    assert "application/vnd.jupyter.widget-view+json" in first.data
    final = rest[-1].data
    assert "Noted: your name is Ada." in final["text/markdown"] and "nbopenai-local" in final["text/markdown"]
    assert "Noted: your name is Ada." in final["text/plain"]
    assert "Noted" not in captured.stdout  # nothing went to stdout: the widget carried the stream
    assert all(comm.closed for comm in recording_comm.comms)


def test_background_job_in_the_notebook_view_fills_in_when_done(ip, recording_comm):
    ip.run_cell('%config AskMagics.widgets = "on"')
    with capture_output() as captured:
        ip.run_cell("%%ask --background -o job\nMy name is Ada.")
        ip.user_ns["job"].wait(timeout=20)
    first, *rest = captured.outputs
    assert "application/vnd.jupyter.widget-view+json" in first.data
    assert "Noted: your name is Ada." in rest[-1].data["text/markdown"]
    assert not any(comm.closed for comm in recording_comm.comms)  # kept, filled in, as a fallback


def test_notebook_view_is_removed_when_the_ask_fails_early(ip, local_server, recording_comm):
    ip.run_cell('%config AskMagics.widgets = "on"')
    local_server.inject("unauthorized")
    with capture_output() as captured, pytest.raises(nbopenai.AuthenticationError):
        ip.run_cell("%ask Hi")
    assert captured.outputs[-1].data == {"text/plain": ""}
    assert all(comm.closed for comm in recording_comm.comms)


def test_tools_and_figures_from_the_namespace_reach_the_request(ip, local_server):
    import matplotlib  # noqa: PLC0415 - the Agg backend is chosen before pyplot loads

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 - after matplotlib.use("Agg")

    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    figure, axes = plt.subplots()
    axes.plot([1, 2, 3])
    ip.user_ns.update(get_weather=get_weather, fig=figure)
    ip.run_cell("%%ask --tools get_weather -o answer\nuse get_weather for Paris, and look at {fig}")
    answer = ip.user_ns["answer"]
    first, second = [r.body for r in local_server.requests if r.path == "/v1/responses"]
    assert [t["name"] for t in first["tools"]] == ["get_weather"]
    parts = first["input"][-1]["content"]
    assert parts[0]["text"].endswith("look at [image 1: fig]")
    assert parts[1]["type"] == "input_image" and parts[1]["image_url"].startswith("data:image/png;base64,")
    assert second["input"][0]["type"] == "function_call_output"
    assert "sunny in Paris" in answer.text
    plt.close(figure)


def test_an_unknown_tool_name_is_a_usage_error_and_nothing_is_sent(ip, local_server):
    with pytest.raises(Exception) as caught:
        ip.run_cell("%%ask --tools nope\nuse nope")
    assert "nope" in str(caught.value)
    assert [r for r in local_server.requests if r.path == "/v1/responses"] == []


# ---- the session's life in a kernel ---------------------------------------------------------------


def test_a_key_fixed_in_the_kernel_after_a_401_is_used_without_a_restart(ip, local_server):
    right = "sk-right-" + "R1ghtK3y" * 3
    local_server.configure(require_api_key=right)
    with capture_output() as refused, pytest.raises(nbopenai.AuthenticationError):
        ip.run_cell("%ask Hello")
    assert "os.environ['OPENAI_API_KEY']" in refused.stdout and "no restart" in refused.stdout
    ip.run_cell(f"import os\nos.environ['OPENAI_API_KEY'] = {right!r}")
    status = run(ip, "%nbopenai status")
    assert f"sk-...{right[-4:]}" in status and right not in status
    assert "Hello" in run(ip, "%ask Hello")
    assert local_server.requests[-1].headers["authorization"] == f"Bearer {right}"


def test_a_base_url_changed_in_the_kernel_is_used_by_the_next_ask(ip, local_server):
    with start() as other:
        ip.run_cell(f"import os\nos.environ['OPENAI_BASE_URL'] = {other.base_url!r}")
        assert other.base_url in run(ip, "%nbopenai status")
        run(ip, "%ask Hello")
        assert len(other.requests) == 1 and asks(local_server) == []


def test_reload_ext_keeps_the_session(ip):
    run(ip, "%nbopenai local")
    session = magics_of(ip).session
    run(ip, "%ask My name is Ada.")
    ip.run_cell("%config AskMagics.instructions = 'Be brief.'")
    ip.run_cell("%reload_ext nbopenai")
    assert magics_of(ip).session is session and nbopenai.current_session() is session
    assert session.local_server is not None and session.settings.instructions == "Be brief."
    assert "Your name is Ada." in run(ip, "%ask What is my name?")  # same thread, same server
    assert len(session.usage()) == 2


def test_ask_in_python_uses_the_extensions_session_unless_in_a_with_block(ip, local_server):
    ip.run_cell(
        "import nbopenai\n"
        f"mine = nbopenai.Session(base_url={local_server.base_url!r}, model='nbopenai-local', ledger_path=':memory:')\n"
        "nbopenai.ask('hello')\n"
        "with mine:\n"
        "    nbopenai.ask('hello')\n"
        "    inside = len(mine.usage())\n"
    )
    assert len(magics_of(ip).session.usage()) == 1 and ip.user_ns["inside"] == 1


def _point_at(local_server, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", local_server.base_url)
    monkeypatch.setenv("NBOPENAI_MODEL", "nbopenai-local")


def test_a_question_in_the_cell_that_loads_the_extension_asks(shell, local_server, monkeypatch):
    """IPython transformed that cell before the `%ask ...?` rewrite existed: it must still ask."""
    _point_at(local_server, monkeypatch)
    try:
        with capture_output() as captured:
            shell.run_cell("%load_ext nbopenai\n%ask My name is Ada. What is my name?\nlen?\n")
        shown = captured.stdout + "".join(o.data.get("text/plain", "") for o in captured.outputs)
        assert [body["input"][-1]["content"] for body in asks(local_server)] == ["My name is Ada. What is my name?"]
        assert "Your name is Ada." in shown and "not found" not in shown
        assert not hasattr(shell.magics_manager.magics["line"]["pinfo"], "__wrapped__")  # IPython's own again
    finally:
        shell.run_cell("%unload_ext nbopenai")


def test_ipython_runs_a_script_that_loads_the_extension_and_asks(local_server, tmp_path):
    from _kernels import kernel_env  # noqa: PLC0415 - Jupyter machinery loads only in the tests that start a kernel or a browser

    script = tmp_path / "ask.ipy"
    script.write_text("%load_ext nbopenai\n%ask My name is Ada. What is my name?\n")
    env = kernel_env(OPENAI_BASE_URL=local_server.base_url, NBOPENAI_MODEL="nbopenai-local", IPYTHONDIR=str(tmp_path))
    done = subprocess.run(
        [sys.executable, "-m", "IPython", "--colors=nocolor", str(script)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=tmp_path,
    )
    assert "Your name is Ada." in done.stdout, done.stdout + done.stderr
    assert "not found" not in done.stdout + done.stderr


def test_a_prompt_larger_than_the_window_is_refused_before_sending(ip, local_server):
    ip.user_ns["big"] = "word " * 200_000  # 1 MB, 200,000 tokens; the demo model's window is 128,000
    with capture_output() as refused, pytest.raises(nbopenai.ContextLengthExceeded):
        ip.run_cell("%%ask --new\nSummarise this: {big}")
    assert asks(local_server) == []
    assert "This prompt alone is 200,00" in refused.stdout and "the window is 128,000" in refused.stdout
    assert "--new" not in refused.stdout and "Nothing was sent" in refused.stdout
    assert magics_of(ip).session.usage().empty


def test_the_demo_servers_calls_stay_out_of_the_ledger_on_disk(ip):
    said = run(ip, "%nbopenai local")
    assert "kept in memory, for this session only, not in your usage ledger" in said
    run(ip, "%ask Hi")
    assert len(magics_of(ip).session.usage()) == 1 and "in memory" in run(ip, "%nbopenai status")
    assert not (Path(os.environ["NBOPENAI_HOME"]) / "usage.sqlite3").exists()


def test_the_demo_servers_calls_are_free_whatever_the_model(ip):
    run(ip, "%nbopenai local")
    said = run(ip, "%ask -m gpt-4.1 Hi")  # the demo server answers OpenAI's model names too
    usage = magics_of(ip).session.usage()
    assert list(usage["model"]) == ["gpt-4.1"] and list(usage["cost_usd"]) == [0.0]
    assert "$0.000000" in said
    run(ip, f"%config AskMagics.base_url = {'http://127.0.0.1:9/v1'!r}")  # away from the demo server: priced again
    assert magics_of(ip).session.prices.cost("gpt-4.1", 1_000_000) > 0


# ---- every example in the magics' help runs on the demo server ---------------------------------

EXAMPLE_NAMESPACE = """
import pandas as pd
from pydantic import BaseModel

class Person(BaseModel):
    name: str
    born: str | None

class LineItem(BaseModel):
    description: str
    amount: float | None

df = pd.DataFrame({"bio": ["Ada Lovelace, born 1815 in London.", "Alan Turing, born 1912 in London."]})
invoices = pd.DataFrame({"text": ["2 pencils, 3.50; 1 notebook, 4.00", "1 stapler, 12.00"]})
"""


def help_examples(doc: str) -> list[str]:
    """The cells of a magic's ``Examples`` section: a ``%%`` block is one cell, other lines one each."""

    lines = doc.split("Examples\n", 1)[1].split("::\n", 1)[1].splitlines()
    indented = list(itertools.takewhile(lambda line: not line.strip() or line[0].isspace(), lines))
    section = "\n".join(indented)  # up to the parser's own help, which magic_arguments appends
    cells = []
    for block in textwrap.dedent(section).strip().split("\n\n"):
        block = block.strip("\n")
        cells.extend([block] if block.startswith("%%") else block.splitlines())
    return cells


@pytest.mark.parametrize("kind, name", [("cell", "ask"), ("cell", "extract"), ("line", "nbopenai")])
def test_every_help_example_runs_on_the_demo_server(ip, local_server, kind, name):
    ip.run_cell(EXAMPLE_NAMESPACE)
    magic = ip.magics_manager.magics[kind][name]
    examples = help_examples(magic.__doc__)
    assert len(examples) >= 5
    for example in examples:
        # What an example takes for granted is made first, on the server the session uses by then
        # (`%nbopenai local` moves it): a thread with turns to compact, a job to cancel (ids count
        # per process, so the example's job-1 becomes the job made here).
        if example.startswith("%nbopenai compact"):
            with capture_output():
                ip.run_cell("%ask My name is Ada.")
        if "cancel job-1" in example:
            job = magics_of(ip).session.submit("A job for `%nbopenai cancel` to cancel.")
            example = example.replace("cancel job-1", f"cancel {job.id}")
        with capture_output() as captured:
            ip.run_cell(example)  # raises the cell's error, if any
        shown = captured.stdout + captured.stderr + "".join(o.data.get("text/plain", "") for o in captured.outputs)
        assert "not valid JSON" not in shown and "Error" not in shown, (example, shown)
    if name == "ask":
        assert ip.user_ns["result"].text and "```json" in ip.user_ns["result"].text

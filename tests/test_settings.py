"""Settings check themselves: one rule per setting, the same error from every entry point.

``Session(...)``, ``Session.configure``, ``%config AskMagics.x``, ``%%ask --flag``, ``extract(...)``
and ``%%extract --flag`` all go through the rules of ``nbopenai._core._settings``; the request
they build comes from one builder (``_core._request``); the traits of ``AskMagics`` and the help
of ``%nbopenai`` are generated, so a new setting or flag cannot be forgotten by either.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

import pydantic
import pytest
from IPython.utils.capture import capture_output

import nbopenai
from nbopenai._core._request import RequestOptions
from nbopenai._core._settings import REASONING_EFFORTS, Settings, default_data_dir, setting_fields
from nbopenai.ipython._admin import COMMANDS
from nbopenai.ipython._args import REQUEST_FLAGS

# (setting, a value its rule refuses, the words of the one message that says so)
BAD = [
    ("temperature", 5, "temperature must be a number from 0 to 2, not 5"),
    ("top_p", 1.5, "top_p must be a number from 0 to 1, not 1.5"),
    ("max_output_tokens", 8, "max_output_tokens must be a whole number of at least 16"),
    ("reasoning_effort", "extreme", "reasoning_effort must be one of none, minimal, low, medium, high"),
    ("verbosity", "chatty", "verbosity must be one of low, medium, high, not 'chatty'"),
    ("model", "gpt 4.1", "model must be a model name"),
    ("concurrency", 0, "concurrency must be a whole number of at least 1, not 0"),
    ("max_attempts", 0, "max_attempts must be a whole number of at least 1, not 0"),
    ("read_timeout", 0, "read_timeout must be a positive number, not 0"),
    ("connect_timeout", -1.0, "connect_timeout must be a positive number, not -1.0"),
    ("budget_usd", -0.5, "budget_usd must be a number of 0 or more, not -0.5"),
    ("budget_tokens", 1.5, "budget_tokens must be a whole number of 0 or more, not 1.5"),
    ("update_rate", 0, "update_rate must be a positive number, not 0"),
    ("store", "no", "store must be True or False, not 'no'"),
    ("base_url", "localhost:8000/v1", "base_url must be an http(s) URL"),
]


def bodies(server) -> list[dict]:
    return [r.body for r in server.requests if r.method == "POST" and r.path == "/v1/responses"]


@pytest.mark.parametrize("name, value, message", BAD, ids=[b[0] for b in BAD])
def test_every_setting_is_checked_by_its_rule_wherever_it_is_set(name, value, message, local_server):
    message = re.escape(message)
    with pytest.raises(nbopenai.UsageError, match=message):
        Settings().replace(**{name: value})
    with pytest.raises(nbopenai.UsageError, match=message):
        nbopenai.Session(**{"base_url": local_server.base_url, "ledger_path": ":memory:", name: value})
    with nbopenai.Session(base_url=local_server.base_url, model="nbopenai-local", ledger_path=":memory:") as session:
        before = session.settings
        with pytest.raises(nbopenai.UsageError, match=message):
            session.configure(**{name: value})
        assert session.settings is before
    assert bodies(local_server) == []


def test_a_session_with_a_bad_temperature_sends_nothing(local_server):
    with pytest.raises(nbopenai.UsageError, match="temperature must be a number from 0 to 2"):
        with nbopenai.Session(base_url=local_server.base_url, model="nbopenai-local", ledger_path=":memory:",
                              temperature=5) as session:
            session.ask("Hi")
    assert bodies(local_server) == []


class Person(pydantic.BaseModel):
    name: str


@pytest.mark.parametrize("option, value, message", [
    ("temperature", 3, "temperature must be a number from 0 to 2, not 3"),
    ("max_output_tokens", 4, "max_output_tokens must be a whole number of at least 16"),
    ("reasoning", "extreme", "reasoning must be one of none, minimal, low, medium, high, xhigh, max, not 'extreme'"),
    ("model", Person, "model must be a model name such as 'gpt-4.1-mini' \\(no spaces\\), not the class Person"),
])
def test_per_call_options_obey_the_same_rules_in_ask_and_extract(option, value, message, session, local_server):
    with pytest.raises(nbopenai.UsageError, match=message):
        session.ask("Hi", **{option: value})
    with pytest.raises(nbopenai.UsageError, match=message):
        nbopenai.extract(Person, ["Ada"], session=session, progress=False, **{option: value})
    assert bodies(local_server) == []


def test_one_list_of_reasoning_efforts_for_ask_extract_and_settings(session, local_server):
    for effort in REASONING_EFFORTS:
        assert session.prepare("Hi", reasoning=effort).params["reasoning"] == {"effort": effort}
        plan = nbopenai.extract(Person, ["Ada"], session=session, reasoning=effort, dry_run=True)
        assert plan.request["reasoning"] == {"effort": effort}
        assert Settings(reasoning_effort=effort).reasoning_effort == effort


def test_ask_and_extract_share_the_request_settings(make, local_server):
    session = make(temperature=0.3, top_p=0.9, max_output_tokens=64, reasoning_effort="low", verbosity="low")
    asked = session.prepare("Hi").params
    plan = nbopenai.extract(Person, ["Ada"], session=session, dry_run=True)
    shared = {"model", "temperature", "top_p", "max_output_tokens", "reasoning", "store"}
    assert {k: asked[k] for k in shared} == {k: plan.request[k] for k in shared}
    assert asked["text"] == {"verbosity": "low"} and plan.request["text"]["verbosity"] == "low"
    assert plan.request["text"]["format"]["type"] == "json_schema"
    overridden = session.prepare("Hi", temperature=1.5, verbosity="high", reasoning="high").params
    assert overridden["temperature"] == 1.5 and overridden["text"] == {"verbosity": "high"}
    assert overridden["reasoning"] == {"effort": "high"}


# ---- the IPython edge -------------------------------------------------------------------------


def magics_of(ip):
    return ip.magics_manager.registry["AskMagics"]


@pytest.mark.parametrize("name, value, message", BAD[:6], ids=[b[0] for b in BAD[:6]])
def test_config_refuses_a_bad_value_with_the_rule_message(name, value, message, ip, caplog):
    magics = magics_of(ip)
    before = magics.session.settings
    with capture_output() as captured:
        ip.run_cell(f"%config AskMagics.{name} = {value!r}")
    shown = captured.stdout + captured.stderr + caplog.text
    assert message.split(",")[0] in shown
    assert magics.session.settings == before
    with pytest.raises(nbopenai.UsageError, match=re.escape(message)):
        setattr(magics, name, value)


@pytest.mark.parametrize("magic", ["%%ask --temperature 5\nHi", "%%extract Person --temperature 5\nAda"])
def test_magic_flags_give_the_same_error(magic, ip, local_server):
    ip.user_ns["Person"] = Person
    with pytest.raises(nbopenai.UsageError) as refused:
        with capture_output():
            ip.run_cell(magic)
    assert str(refused.value) == "temperature must be a number from 0 to 2, not 5"  # as Session(temperature=5) says
    assert bodies(local_server) == []


def test_every_setting_is_a_trait_that_follows_the_session(ip, local_server):
    magics = magics_of(ip)
    configurable = set(type(magics).class_traits(config=True))
    assert set(setting_fields()) - {"concurrency"} <= configurable  # concurrency: ExtractMagics.concurrency
    assert "api_key" not in configurable
    ip.run_cell("%config AskMagics.verbosity = 'low'")
    ip.run_cell("%config AskMagics.write_timeout = 7")
    assert magics.session.settings.verbosity == "low" and magics.session.settings.timeouts.write == 7.0
    magics.session.configure(model="gpt-4.1-nano", top_p=0.5)  # changed behind the magics' back
    assert (magics.model, magics.top_p) == ("gpt-4.1-nano", 0.5)
    with capture_output():
        ip.run_cell("%nbopenai local")
    assert magics.base_url == magics.session.local_server.base_url and magics.model == "nbopenai-local"


def test_config_shows_what_the_next_request_uses_after_the_environment_changed(ip, local_server, monkeypatch):
    """Settings read from the environment follow it (the next request takes up a changed variable), so ``%config
    AskMagics`` and the traits show the new value, as ``%nbopenai status`` does; they showed the value read at load."""
    magics = magics_of(ip)
    elsewhere = local_server.base_url.replace("127.0.0.1", "localhost")
    monkeypatch.setenv("NBOPENAI_MODEL", "gpt-4.1-nano")
    monkeypatch.setenv("OPENAI_BASE_URL", elsewhere)
    assert (magics.model, magics.base_url) == ("gpt-4.1-nano", elsewhere)
    with capture_output() as shown:
        ip.run_cell("%config AskMagics")
    assert "'gpt-4.1-nano'" in shown.stdout and repr(elsewhere) in shown.stdout
    assert "'nbopenai-local'" not in shown.stdout and repr(local_server.base_url) not in shown.stdout
    ip.run_cell("%ask --dry-run -o plan hello")  # and it is what the request would use
    plan = ip.user_ns["plan"]
    assert plan.params["model"] == "gpt-4.1-nano" and plan.url.startswith(elsewhere)


def test_a_configured_value_equal_to_the_static_default_still_applies(shell, local_server, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", local_server.base_url)
    shell.config.AskMagics.store = False
    shell.config.AskMagics.verbosity = "high"
    shell.run_cell("%load_ext nbopenai")
    try:
        settings = magics_of(shell).session.settings
        assert settings.store is False and settings.verbosity == "high"
    finally:
        shell.run_cell("%unload_ext nbopenai")


def test_help_lists_every_option_of_every_magic(ip):
    with capture_output() as captured:
        ip.run_cell("%nbopenai help")
    shown = captured.stdout

    magics = ip.magics_manager.magics
    for kind, name in [("cell", "ask"), ("cell", "extract"), ("line", "nbopenai")]:
        parser = magics[kind][name].parser
        for action in parser._actions:  # each option by one of its names (the usage line shows the first)
            if action.option_strings and action.dest != "help":
                assert any(f"[{flag}" in shown for flag in action.option_strings), f"{action.dest} of %{name}"
    for command in COMMANDS:
        assert command in shown
    for flag in ("--tools", "--confirm", "--max-tool-rounds", "--image", "--verbosity", "--top-p"):
        assert flag in shown


def test_a_new_request_setting_reaches_both_magics_flags():
    names = {f.name for f in dataclasses.fields(RequestOptions)} - {"model", "instructions"}
    assert set(REQUEST_FLAGS) == names


@pytest.mark.skipif(sys.platform != "linux", reason="the Linux folder existing users' ledgers are in")
def test_the_data_folder_stays_where_existing_ledgers_are(monkeypatch, tmp_path):
    monkeypatch.delenv("NBOPENAI_HOME", raising=False)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    assert default_data_dir() == Path.home() / ".local" / "share" / "nbopenai"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_data_dir() == tmp_path / "nbopenai"
    monkeypatch.setenv("NBOPENAI_HOME", str(tmp_path / "mine"))
    assert default_data_dir() == tmp_path / "mine"

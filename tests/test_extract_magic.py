"""``%%extract`` through a test shell whose ``run_cell`` raises the cell's error."""

from __future__ import annotations

import pytest
from traitlets import TraitError

import nbopenai
from nbopenai import SchemaError, UsageError

SETUP = '''
from typing import Optional
import pandas as pd
from pydantic import BaseModel

class Person(BaseModel):
    name: str
    age: Optional[int]

df = pd.DataFrame({"bio": ["Ada Lovelace is 36.", "Alan Turing is 41.", "Grace Hopper is 85."]}, index=["a", "b", "c"])
'''


@pytest.fixture
def shell(ip):
    ip.run_cell(SETUP)
    return ip


def model_requests(server) -> list:
    return [r for r in server.requests if r.path == "/v1/responses"]


def test_over_a_column_binds_the_aligned_frame(shell, local_server):
    result = shell.run_cell("%%extract Person --over df.bio -o people --concurrency 2\nExtract the person.").result
    people = shell.user_ns["people"]
    assert result is people
    assert list(people.index) == ["a", "b", "c"] and list(people["age"]) == [36, 41, 85]
    bodies = [r.body for r in model_requests(local_server)]
    assert {b["instructions"] for b in bodies} == {"Extract the person."}
    assert sorted(b["input"] for b in bodies) == ["Ada Lovelace is 36.", "Alan Turing is 41.", "Grace Hopper is 85."]


def test_the_cell_is_the_text_with_interpolation(shell, local_server):
    shell.user_ns["who"] = "Ada Lovelace"
    frame = shell.run_cell("%%extract Person -s 'Be exact.'\n{who} is 36.").result
    assert len(frame) == 1 and frame.loc[0, "name"] == "Ada Lovelace"
    body = model_requests(local_server)[0].body
    assert body["input"] == "Ada Lovelace is 36." and body["instructions"] == "Be exact."


def test_a_name_that_names_nothing_is_left_as_written_and_said_once(shell, local_server, capsys):
    """As in %%ask: a {name} naming nothing stays as typed, and the cell says so in one line before sending
    (it stayed silent, so a typo in the instructions went to every row unnoticed)."""
    shell.run_cell("%%extract Person --over df.bio -o people\nExtract {who} from {bio_text}, {who} again; {{x}}.")
    shown = capsys.readouterr().out
    assert shown.count("left as written") == 1  # once for the cell, not once a row
    assert shown.splitlines()[0] == "left as written: {who}, {bio_text}"
    instructions = {r.body["instructions"] for r in model_requests(local_server)}
    assert instructions == {"Extract {who} from {bio_text}, {who} again; {x}."}
    shell.user_ns["who"] = "Ada Lovelace"
    shell.run_cell("%%extract Person --dry-run\n{who} is 36 and {age_here}.")
    assert capsys.readouterr().out.splitlines()[0] == "left as written: {age_here}"
    shell.run_cell("%%extract Person\n{who} is 36.")
    assert "left as written" not in capsys.readouterr().out


def test_many(shell):
    frame = shell.run_cell("%%extract Person --many\nAda Lovelace is 36.\nAlan Turing is 41.").result
    assert frame.index.names == ["source", "item"] and frame["name"].tolist() == ["Ada Lovelace", "Alan Turing"]


def test_dry_run_sends_nothing(shell, local_server):
    plan = shell.run_cell("%%extract Person --over df.bio --dry-run\nExtract.").result
    assert plan.to_send == 3 and model_requests(local_server) == []


def test_a_schema_error_names_the_fields_before_sending(shell, local_server):
    shell.run_cell("class Bad(BaseModel):\n    counts: dict[str, int]\n    pair: tuple[int, int]")
    with pytest.raises(SchemaError) as caught:
        shell.run_cell("%%extract Bad --over df.bio\nExtract.")
    assert "counts" in str(caught.value) and "pair" in str(caught.value)
    assert model_requests(local_server) == []


def test_unknown_names_are_usage_errors(shell):
    with pytest.raises(UsageError):
        shell.run_cell("%%extract Nobody --over df.bio\nExtract.")
    with pytest.raises(UsageError):
        shell.run_cell("%%extract Person --over nothing_here\nExtract.")


def test_retry_failed_redoes_only_the_failed_rows_of_the_named_frame(shell, local_server):
    local_server.inject("bad_request")
    shell.run_cell("%%extract Person --over df.bio -o people --concurrency 1 --no-cache\nExtract.")
    assert shell.user_ns["people"]["_status"].tolist() == ["error", "ok", "ok"]
    local_server.clear_requests()
    shell.run_cell("%%extract Person --over df.bio -o people --retry-failed --no-cache\nExtract.")
    assert len(model_requests(local_server)) == 1
    assert shell.user_ns["people"]["_status"].tolist() == ["ok"] * 3


def test_batch_and_no_wait(shell):
    frame = shell.run_cell("%%extract Person --over df.bio --batch\nExtract.").result
    assert frame["_status"].tolist() == ["ok"] * 3 and frame.attrs["batch_job"].startswith("extract-")
    job = shell.run_cell("%%extract Person --over df.bio --batch --no-wait --no-cache -o job\nExtract.").result
    assert shell.user_ns["job"] is job
    assert job.wait(progress=False)["_status"].tolist() == ["ok"] * 3


def test_configuration_is_validated(shell):
    shell.run_cell("%config ExtractMagics.concurrency = 4")
    assert shell.magics_manager.registry["ExtractMagics"].concurrency == 4
    with pytest.raises(TraitError):
        shell.magics_manager.registry["ExtractMagics"].concurrency = 0


def test_help_has_examples(shell):
    doc = shell.magics_manager.magics["cell"]["extract"].__doc__
    assert "Examples" in doc and "--over" in doc and "--retry-failed" in doc


def test_the_cache_command_shows_its_size_and_clears_by_schema_or_model(shell, local_server, capsys):
    shell.run_cell("class Pet(BaseModel):\n    name: str\n")
    shell.run_cell("%%extract Person --over df.bio -o people\nExtract the person.")
    shell.run_cell("%%extract Pet --over df.bio -o pets\nExtract the pet.")
    capsys.readouterr()
    shell.run_cell("%nbopenai cache")
    shown = capsys.readouterr().out
    assert "6 answers" in shown and "Person with nbopenai-local: 3" in shown and "Pet with nbopenai-local: 3" in shown
    shell.run_cell("%nbopenai cache clear --schema Pet")
    assert "Removed 3 cached answers (schema Pet)" in capsys.readouterr().out
    shell.run_cell("%nbopenai cache clear --model another-model")
    assert "Removed 0 cached answers" in capsys.readouterr().out
    local_server.clear_requests()
    again = shell.run_cell("%%extract Person --over df.bio\nExtract the person.").result
    assert again["_from_cache"].all() and model_requests(local_server) == []
    shell.run_cell("%nbopenai cache clear")
    assert "Removed 3 cached answers." in capsys.readouterr().out
    shell.run_cell("%nbopenai cache")
    assert "0 answers" in capsys.readouterr().out


def test_a_frame_where_the_schema_goes_is_named_by_its_type_not_printed(shell, local_server):
    shell.run_cell("tickets = pd.DataFrame({'text': [f'ticket number {i} about a printer' for i in range(500)]})")
    with pytest.raises(nbopenai.UsageError) as caught:
        shell.run_cell("%%extract tickets\nThe printer is broken.")
    message = str(caught.value)
    assert "got a pandas.DataFrame" in message and "--over" in message
    assert "ticket number" not in message and len(message) < 400
    assert model_requests(local_server) == []

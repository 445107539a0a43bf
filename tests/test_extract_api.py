"""The public surface of extraction: ``nbopenai.extract``, lazy imports, the errors a user sees first."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import BaseModel

import nbopenai
from nbopenai._core._settings import Settings
from nbopenai._extract._cache import request_scope
from nbopenai.local import start


class Person(BaseModel):
    name: str
    age: int | None


def test_importing_extraction_loads_no_pandas_ipython_or_widgets():
    code = (
        "import sys, nbopenai, nbopenai._extract, nbopenai._extract._batch, nbopenai.local._batches\n"
        "print(sorted(m for m in ('pandas', 'IPython', 'ipywidgets') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_package_level_function_uses_the_given_session(session, local_server):
    frame = nbopenai.extract(Person, ["Ada Lovelace is 36."], session=session, progress=False)
    assert frame.loc[0, "age"] == 36 and frame.attrs["session_id"] == session.session_id


def test_no_key_and_no_server_is_a_configuration_error_before_anything_runs(monkeypatch):
    with nbopenai.Session(ledger_path=":memory:") as session:
        with pytest.raises(nbopenai.ConfigurationError):
            nbopenai.extract(Person, ["Ada"], session=session, progress=False)


def test_a_budget_is_checked_before_sending(session, local_server):
    session.configure(budget_tokens=1)
    session.ledger  # noqa: B018 - an empty ledger: nothing spent yet
    with pytest.raises(nbopenai.BudgetExceeded):
        nbopenai.extract(Person, ["Ada Lovelace is 36."] * 3, session=session, progress=False)
    assert [r for r in local_server.requests if r.path == "/v1/responses"] == []


# ---- an honest cache: an answer is served only to the same endpoint and the same request ---------

TEXTS = ["Ada Lovelace is 36.", "Alan Turing is 41."]


def _model_requests(server) -> list:
    return [r for r in server.requests if r.path == "/v1/responses"]


def _extract(session, **options):
    return nbopenai.extract(Person, TEXTS, session=session, progress=False, **options)


def test_a_second_endpoint_never_gets_the_first_ones_cached_answer(session, local_server):
    assert not _extract(session)["_from_cache"].any()
    other = start()
    try:
        session.configure(base_url=other.base_url)  # the same model name, somewhere else
        assert not _extract(session)["_from_cache"].any()
        assert len(_model_requests(other)) == len(TEXTS)
        session.configure(organization="org-elsewhere")  # the same URL, another organisation
        assert not _extract(session)["_from_cache"].any()
        assert len(_model_requests(other)) == 2 * len(TEXTS)
    finally:
        other.stop()
    local_server.clear_requests()
    session.configure(base_url=local_server.base_url + "/", organization=None)  # the first one, spelled with a slash
    assert _extract(session)["_from_cache"].all() and _model_requests(local_server) == []


@pytest.mark.parametrize(
    ("option", "first", "second"),
    [("temperature", 0.2, 0.9), ("top_p", 0.5, 0.9), ("max_output_tokens", 200, 300), ("reasoning", "low", "high"),
     ("verbosity", "low", "high"), ("instructions", "Extract.", "Extract exactly.")],
)
def test_a_cached_answer_is_served_only_to_the_same_request(session, local_server, option, first, second):
    assert not _extract(session, **{option: first})["_from_cache"].any()
    local_server.clear_requests()
    assert _extract(session, **{option: first})["_from_cache"].all() and _model_requests(local_server) == []
    assert not _extract(session, **{option: second})["_from_cache"].any()
    assert len(_model_requests(local_server)) == len(TEXTS)


def test_the_key_tells_azure_resources_and_deployments_apart():
    params = {"model": "my-gpt", "instructions": "Extract."}
    scopes = {
        request_scope(Settings(), params),
        request_scope(Settings(azure_endpoint="https://one.openai.azure.com"), params),
        request_scope(Settings(azure_endpoint="https://two.openai.azure.com"), params),
        request_scope(Settings(azure_endpoint="https://two.openai.azure.com", api_version="2024-10-21"), params),
        request_scope(
            Settings(azure_endpoint="https://two.openai.azure.com", deployments={"my-gpt": "gpt-4.1"}), params
        ),
    }
    assert len(scopes) == 5
    assert request_scope(Settings(azure_endpoint="https://one.openai.azure.com/"), params) == request_scope(
        Settings(azure_endpoint="https://one.openai.azure.com"), params
    )


def test_a_change_that_cannot_alter_the_answer_keeps_the_cache(session, local_server):
    _extract(session)
    session.configure(store=not session.settings.store)
    local_server.clear_requests()
    assert _extract(session)["_from_cache"].all() and _model_requests(local_server) == []


def test_the_summary_line_says_how_many_rows_came_from_the_cache(session, local_server):
    _extract(session)
    snapshots = []
    frame = nbopenai.extract(Person, [*TEXTS, "Grace Hopper is 85."], session=session, progress=snapshots.append)
    assert frame["_from_cache"].tolist() == [True, True, False]
    assert "2 from cache" in snapshots[-1].line() and snapshots[-1].finished
    snapshots.clear()
    nbopenai.extract(Person, TEXTS, session=session, progress=snapshots.append)  # nothing to send: still a summary
    assert (
        len(snapshots) == 1 and snapshots[0].finished and "2/2 · 2 ok · 0 failed · 2 from cache" in snapshots[0].line()
    )

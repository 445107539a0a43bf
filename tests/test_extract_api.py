"""The public surface of extraction: ``nbopenai.extract``, lazy imports, the errors a user sees first."""

from __future__ import annotations

import subprocess
import sys
from typing import Optional

import pytest
from pydantic import BaseModel

import nbopenai


class Person(BaseModel):
    name: str
    age: Optional[int]


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

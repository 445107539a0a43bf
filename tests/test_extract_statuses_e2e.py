"""Row statuses end to end: a refusal and an answer that is not JSON, injected by the server."""

import pytest
from pydantic import BaseModel

import nbopenai
from nbopenai import Session, Settings
from nbopenai.local import start


class Person(BaseModel):
    name: str
    age: int | None


@pytest.fixture(scope="module")
def server():
    with start() as srv:
        yield srv


def test_refusal_and_invalid_json_become_row_statuses_and_no_row_is_lost(server):
    server.reset()
    session = Session(Settings(base_url=server.base_url, model="nbopenai-local"), ledger_path=":memory:")
    server.inject("refusal")
    server.inject("invalid_json", count=2)  # the first answer and its one re-ask
    texts = ["Ada Lovelace is 36.", "Grace Hopper is 85.", "Alan Turing is 41."]
    frame = nbopenai.extract(Person, texts, session=session, concurrency=1, progress=False, cache=False)
    assert list(frame.index) == [0, 1, 2]
    assert list(frame["_status"]) == ["refusal", "invalid", "ok"]
    assert frame.loc[0, "_error"] and "can't help" in frame.loc[0, "_error"]
    assert frame.loc[1, "_attempts"] == 2
    assert frame.loc[2, "name"] == "Alan Turing"
    # Every attempt that reached the server is in the ledger: 1 + 2 + 1.
    assert len(session.usage()) == len([r for r in server.requests if r.path == "/v1/responses"]) == 4

"""A 2xx whose body is cut short or badly compressed: billed, so never re-sent; recorded ``unreadable``.

Written against a server that sends exact bytes (``_byte_server``): a ``Content-Length`` longer than
the body it sends, or a ``gzip`` body that is not gzip. Before, the SDK's ``APIConnectionError`` was
retried like a connection that never got an answer (billed again), recorded with 0 tokens, or (a
decoding error is not a transport error) not recorded at all.
"""

from __future__ import annotations

import json

import pytest
from _byte_server import ByteServer, http_reply
from conftest import SECRET_KEY
from pydantic import BaseModel

import nbopenai
from nbopenai._core._retry import UNREADABLE_IN_A_ROW
from nbopenai._extract import extract

ANSWER = {
    "id": "resp_1", "object": "response", "created_at": 0, "status": "completed", "model": "m",
    "output": [{"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
                "content": [{"type": "output_text", "text": '{"name": "Ada", "age": 36}', "annotations": []}]}],
    "usage": {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15},
}
BODY = json.dumps(ANSWER).encode()


def cut_short(request) -> bytes:
    return http_reply(200, BODY[:60], length=len(BODY))


def bad_gzip(request) -> bytes:
    return http_reply(200, b"\x1f\x8b\x08\x00not really gzip" + BODY[:40], headers={"content-encoding": "gzip"})


class Person(BaseModel):
    name: str
    age: int | None


def _session(server, key: str | None = None) -> nbopenai.Session:
    return nbopenai.Session(base_url=server.base_url, model="gpt-4.1-mini", ledger_path=":memory:", backoff_base=0.001,
                            api_key=key)


@pytest.mark.parametrize("answer", [cut_short, bad_gzip])
@pytest.mark.parametrize("stream", [False, True])  # (a server that ignores stream=true answers JSON)
@pytest.mark.parametrize("key", [None, SECRET_KEY])  # (with a key, every body passes the scrubber first)
def test_ask_records_an_unreadable_answer_once_and_does_not_resend_it(answer, stream, key):
    with ByteServer(answer) as server, _session(server, key) as session:
        with pytest.raises(nbopenai.UnreadableAnswer) as caught:
            session.ask("Tell me about Ada Lovelace in one line.", stream=stream)
        assert len(server.requests) == 1  # billed once, paid once
        ledger = session.usage()
    assert list(ledger["status"]) == ["unreadable"]
    assert ledger["input_tokens"].iloc[0] > 0  # estimated: the answer's own usage never arrived
    assert "billed" in caught.value.message and "not sent again" in caught.value.message


@pytest.mark.parametrize("answer", [cut_short, bad_gzip])
def test_an_extraction_row_with_an_unreadable_answer_is_billed_once(answer):
    with ByteServer(answer) as server, _session(server) as session:
        frame = extract(session, Person, ["Ada Lovelace is 36.", "Alan Turing is 41."], progress=False, cache=False,
                        concurrency=1)
        assert len(server.requests) == 2  # one per row: none re-sent
        ledger = session.usage()
    assert list(frame["_status"]) == ["error", "error"]
    assert "could not be read" in frame.loc[0, "_error"]
    assert list(ledger["status"]) == ["unreadable", "unreadable"]
    assert (frame["_input_tokens"] > 0).all() and list(frame["_attempts"]) == [1, 1]


@pytest.mark.parametrize("answer", [cut_short, bad_gzip])
def test_an_extraction_whose_every_answer_is_unreadable_stops_after_a_few(answer):
    """Something between us and the API corrupting every body: each answer is billed and lost, so the run stops
    after ``UNREADABLE_IN_A_ROW`` of them, as it stops for an answer no row can get past, instead of paying for
    every row. The unreadable ones are kept (rows ``error``, ledger ``unreadable``, none re-sent); the rest are
    ``cancelled``, for ``retry_failed``. Before, all 40 rows were sent, billed and lost."""
    texts = [f"Person {i} is {20 + i} years old." for i in range(40)]
    with ByteServer(answer) as server, _session(server) as session:
        with pytest.raises(nbopenai.UnreadableAnswer) as caught:
            extract(session, Person, texts, progress=False, cache=False, concurrency=8)
        sent = len(server.requests)
        ledger = session.usage()
    assert sent == UNREADABLE_IN_A_ROW  # one at a time: an unreadable answer does not show the model can answer
    assert list(ledger["status"]) == ["unreadable"] * sent and (ledger["input_tokens"] > 0).all()
    frame = caught.value.partial
    assert (frame["_status"] == "error").sum() == sent and (frame["_status"] == "cancelled").sum() == 40 - sent
    assert f"{sent} answers in a row" in caught.value.message and "--retry-failed" in caught.value.message


def test_an_unreadable_answer_among_readable_ones_costs_only_its_row():
    """Scattered unreadable answers (a bad moment of the network) are each their row's error; the run goes on."""
    count = iter(range(1000))

    def every_third_cut(request) -> bytes:
        return cut_short(request) if next(count) % 3 == 1 else http_reply(200, BODY)

    with ByteServer(every_third_cut) as server, _session(server) as session:
        frame = extract(session, Person, [f"Person {i}." for i in range(12)], progress=False, cache=False,
                        concurrency=1)
        assert len(server.requests) == 12
    assert list(frame["_status"]).count("error") == 4 and list(frame["_status"]).count("ok") == 8

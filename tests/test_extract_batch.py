"""The Batch API path end to end against the offline server's ``/v1/files`` and ``/v1/batches``."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from openai import OpenAI
from pydantic import BaseModel

import nbopenai
from nbopenai import UsageError
from nbopenai._extract import _batch, extract
from nbopenai._extract._batch import batch_jobs, collect_batch, split_lines
from nbopenai.local._batches import LINE_PATH, controls


class Person(BaseModel):
    name: str
    age: int | None


TEXTS = [f"Ada Lovelace is {30 + i} years old." for i in range(5)]


def run(session, texts=TEXTS, **options):
    options.setdefault("progress", False)
    return extract(session, Person, texts, batch=True, **options)


def test_split_lines_by_count_and_size():
    lines = [(i, "x" * 9) for i in range(5)]  # 10 bytes each with the newline
    assert [len(p) for p in split_lines(lines, max_lines=2, max_bytes=1000)] == [2, 2, 1]
    assert [len(p) for p in split_lines(lines, max_lines=100, max_bytes=25)] == [2, 2, 1]
    assert split_lines([], 10, 10) == []


def test_round_trip_gives_the_live_frame_shape(session, local_server, monkeypatch):
    monkeypatch.setattr(_batch, "MAX_LINES", 2)
    texts = pd.Series(TEXTS, index=pd.Index(list("abcde"), name="doc"))
    frame = run(session, texts)
    live = extract(session, Person, texts, progress=False, cache=False)
    assert list(frame.columns) == list(live.columns) and (frame.dtypes == live.dtypes).all()
    assert frame.index.equals(texts.index)
    assert list(frame["_status"]) == ["ok"] * 5 and list(frame["age"]) == [30, 31, 32, 33, 34]
    assert len(frame.attrs["batch_ids"]) == 3  # 5 rows at 2 lines a part
    uploads = [r for r in local_server.requests if r.path == "/v1/files" and r.method == "POST"]
    assert len(uploads) == 3
    ledger = session.usage()
    assert (ledger["kind"] == "batch").sum() == 5


def test_the_jsonl_is_what_the_batch_api_expects(session, local_server):
    job = run(session, TEXTS[:2], wait=False)
    job.wait(progress=False)
    client = OpenAI(api_key="x", base_url=local_server.base_url)
    part = job.parts[0]
    lines = [json.loads(line) for line in client.files.content(part.input_file_id).text.splitlines()]
    assert [line["custom_id"] for line in lines] == ["row-0", "row-1"]
    assert {line["url"] for line in lines} == {"/v1/responses"} and {line["method"] for line in lines} == {"POST"}
    assert lines[0]["body"]["input"] == TEXTS[0]
    assert lines[0]["body"]["text"]["format"]["strict"] is True
    batch = client.batches.retrieve(part.batch_id)
    assert batch.endpoint == "/v1/responses" and batch.completion_window == "24h"
    assert batch.metadata["nbopenai_job"] == job.id


def test_failed_lines_become_error_rows(session, local_server):
    local_server.inject("server_error", path=LINE_PATH)
    frame = run(session, TEXTS[:3])
    assert list(frame["_status"]) == ["error", "ok", "ok"]
    assert "HTTP 500" in frame.loc[0, "_error"]


def test_an_expired_part_is_resubmitted_alone(session, local_server, monkeypatch):
    monkeypatch.setattr(_batch, "MAX_LINES", 3)
    controls(local_server.state).outcome("expired", after=1)  # the first part answers one line, then expires
    job = run(session, wait=False)
    frame = job.wait(progress=False)
    assert list(frame["_status"]) == ["ok", "cancelled", "cancelled", "ok", "ok"]
    assert "expired" in frame.loc[1, "_error"]
    first_part = job.parts[0].batch_id
    uploads = len([r for r in local_server.requests if r.path == "/v1/files" and r.method == "POST"])

    job.resubmit()
    frame = job.wait(progress=False)
    assert (frame["_status"] == "ok").all()
    assert job.parts[0].batch_id != first_part and job.parts[0].earlier[0]["batch_id"] == first_part
    resent = [r for r in local_server.requests if r.path == "/v1/files" and r.method == "POST"][uploads:]
    assert len(resent) == 1  # only the expired part's two rows went again
    assert (session.usage()["kind"] == "batch").sum() == 5  # each answered line once in the ledger


def test_a_failed_part_marks_its_rows_cancelled(session, local_server):
    controls(local_server.state).outcome("failed")
    frame = run(session, TEXTS[:2])
    assert list(frame["_status"]) == ["cancelled", "cancelled"]
    assert "made to fail" in frame.loc[0, "_error"]


def test_a_restarted_kernel_collects_the_job(local_server, tmp_path):
    ledger = str(tmp_path / "usage.sqlite3")
    controls(local_server.state).outcome("hold")
    with nbopenai.Session(base_url=local_server.base_url, model="nbopenai-local", ledger_path=ledger) as first:
        job = run(first, pd.Series(TEXTS[:3], index=[10, 20, 30]), wait=False)
        assert job.status == "running"
        job_id = job.id
    controls(local_server.state).release()
    with nbopenai.Session(base_url=local_server.base_url, model="nbopenai-local", ledger_path=ledger) as second:
        assert batch_jobs(second)[0]["id"] == job_id
        frame = collect_batch(second, job_id, Person, progress=False)
        assert list(frame.index) == [10, 20, 30]
        assert list(frame["_status"]) == ["ok"] * 3 and list(frame["age"]) == [30, 31, 32]
        local_server.clear_requests()
        cached = extract(second, Person, pd.Series(TEXTS[:3], index=[10, 20, 30]), progress=False)
        assert cached["_from_cache"].all() and local_server.requests == []

        class Other(BaseModel):
            title: str

        with pytest.raises(UsageError):
            collect_batch(second, job_id, Other)


def test_wait_false_polls_in_the_background(session, local_server):
    controls(local_server.state).outcome("hold")
    job = run(session, TEXTS[:2], wait=False)
    assert not job.done()
    with pytest.raises(UsageError):
        job.result()
    partial = job.frame()
    assert partial.attrs["interrupted"] is True and "still running" in partial.loc[0, "_error"]
    controls(local_server.state).release()
    frame = job.wait()
    assert job.done() and (frame["_status"] == "ok").all()
    assert "completed" in repr(job) and "batch job" in job._repr_mimebundle_()["text/html"]


def test_cancel(session, local_server):
    controls(local_server.state).outcome("hold")
    job = run(session, TEXTS[:2], wait=False)
    job.cancel()
    frame = job.wait(progress=False)
    assert list(frame["_status"]) == ["cancelled", "cancelled"]


def test_cached_rows_are_not_sent_again(session, local_server):
    extract(session, Person, TEXTS[:2], progress=False)
    local_server.clear_requests()
    frame = run(session, TEXTS[:3])
    assert list(frame["_from_cache"]) == [True, True, False]
    assert (frame["_status"] == "ok").all()
    client = OpenAI(api_key="x", base_url=local_server.base_url)
    batch = client.batches.retrieve(frame.attrs["batch_ids"][0])
    sent = [json.loads(line)["custom_id"] for line in client.files.content(batch.input_file_id).text.splitlines()]
    assert sent == ["row-2"]


def test_the_server_routes_pass_the_sdks_strict_validation(local_server):
    client = OpenAI(api_key="x", base_url=local_server.base_url, _strict_response_validation=True)
    body = {"model": "nbopenai-local", "input": "Hi"}
    line = {"custom_id": "a", "method": "POST", "url": "/v1/responses", "body": body}
    uploaded = client.files.create(
        file=("in.jsonl", (json.dumps(line) + "\n").encode(), "application/jsonl"), purpose="batch"
    )
    assert client.files.retrieve(uploaded.id).bytes == uploaded.bytes
    assert [f.id for f in client.files.list().data] == [uploaded.id]
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/responses", completion_window="24h")
    assert batch.status == "validating" and [b.id for b in client.batches.list().data] == [batch.id]
    while batch.status not in ("completed", "failed"):
        batch = client.batches.retrieve(batch.id)
    assert batch.status == "completed" and batch.request_counts.completed == 1 and batch.usage.input_tokens > 0
    output = json.loads(client.files.content(batch.output_file_id).text)
    assert output["custom_id"] == "a" and output["response"]["status_code"] == 200
    assert client.batches.cancel(batch.id).status == "completed"  # nothing left to cancel
    assert client.files.delete(uploaded.id).deleted


def test_invalid_input_files_fail_validation(local_server):
    client = OpenAI(api_key="x", base_url=local_server.base_url, _strict_response_validation=True)
    line = {"custom_id": "a", "method": "POST", "url": "/v1/responses", "body": {"model": "m", "input": "x"}}
    content = "\n".join([json.dumps(line), json.dumps(line), "not json"]).encode()
    uploaded = client.files.create(file=("in.jsonl", content, "application/jsonl"), purpose="batch")
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/responses", completion_window="24h")
    while batch.status not in ("completed", "failed"):
        batch = client.batches.retrieve(batch.id)
    assert batch.status == "failed"
    assert [e.code for e in batch.errors.data] == ["duplicate_custom_id", "invalid_json"]

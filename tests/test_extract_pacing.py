"""Pacing to the account's limits: learned from ``x-ratelimit-*`` headers (or ``--rpm``/``--tpm``), so the
buckets, not 429s, set the pace. Against the offline server enforcing per-minute limits over one-second
windows, with 429s that say "try again in 20ms" and nothing else."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

import nbopenai
from nbopenai._core._pacing import Pacer, read_limits
from nbopenai._extract import extract
from nbopenai._extract._progress import Snapshot

ROWS = [f"Person {i} lives in Paris and is {20 + i % 50} years old." for i in range(60)]


class Person(BaseModel):
    name: str
    age: int | None


def model_requests(server) -> list:
    return [r for r in server.requests if r.path == "/v1/responses"]


def rejected(server) -> int:
    return sum(1 for r in model_requests(server) if r.fault == "rate_limit")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


HEADERS = {
    "x-ratelimit-limit-requests": "600", "x-ratelimit-remaining-requests": "599", "x-ratelimit-reset-requests": "100ms",
    "x-ratelimit-limit-tokens": "60000", "x-ratelimit-remaining-tokens": "59000", "x-ratelimit-reset-tokens": "1s",
}


def test_limits_are_read_from_the_headers():
    assert read_limits(HEADERS) == {"requests": 600, "tokens": 60000}
    assert read_limits({"x-ratelimit-limit-requests": "soon"}) == {}


def test_the_pacer_learns_the_limits_and_spreads_requests_over_the_minute():
    clock = Clock()
    pacer = Pacer(clock=clock)
    assert not pacer.active and pacer.wait_for(100) == 0  # nothing known: nothing paced
    pacer.take(10)  # sent before any limit was known: it still counts once they are
    pacer.learn(HEADERS)
    assert pacer.describe() == "paced to 600 requests/min and 60,000 tokens/min"
    sent = 0
    while clock.now < 10.0:
        if pacer.wait_for(50) == 0:
            pacer.take(50)
            sent += 1
        clock.now += 0.001
    assert 95 <= sent <= 105  # 10 a second for 10 s (a little under, plus half a second to start), not 600 at once


def test_a_429_holds_every_row_back_for_the_wait_it_asked():
    clock = Clock()
    pacer = Pacer(rpm=600, clock=clock)
    assert pacer.wait_for(1) == 0
    pacer.rejected({}, "requests", 2.0)
    assert pacer.wait_for(1) > 1.9


def test_given_limits_win_over_the_headers():
    pacer = Pacer(rpm=60)
    pacer.learn(HEADERS)
    assert pacer.describe() == "paced to 60 requests/min and 60,000 tokens/min"


def test_an_extraction_learns_the_limits_and_is_not_rejected(local_server, make):
    local_server.configure(rpm=1200, rate_limit_window=1.0)  # 20 a second, no more than 20 in any second
    frame = extract(make(), Person, ROWS, progress=False, cache=False, concurrency=30)
    assert (frame["_status"] == "ok").all()
    assert rejected(local_server) <= 1  # was one 429 for every other request


def test_the_tokens_limit_paces_too(local_server, make):
    local_server.configure(tpm=30_000, rate_limit_window=1.0)  # ~500 tokens a second: ~12 of these rows
    session = make()
    lines = []
    frame = extract(session, Person, ROWS[:40], progress=lambda snapshot: lines.append(snapshot.line()), cache=False,
                    concurrency=30, max_output_tokens=16)  # the output cap counts against the limit, as the API's
    assert (frame["_status"].isin(["ok", "incomplete"])).all()
    assert rejected(local_server) <= 1
    assert any("paced to 30,000 tokens/min" in line for line in lines)


def test_rpm_and_tpm_given_are_used_from_the_first_request(local_server, make):
    local_server.configure(rpm=1200, rate_limit_window=1.0)
    session = make(rpm=1200)
    assert session.pacer.describe() == "paced to 1,200 requests/min"
    extract(session, Person, ROWS[:40], progress=False, cache=False, concurrency=30, tpm=10**6)
    assert rejected(local_server) <= 1


def test_per_minute_limits_are_checked():
    with pytest.raises(nbopenai.UsageError, match="rpm must be a whole number of at least 1"):
        nbopenai.Settings(rpm=0)
    with pytest.raises(nbopenai.UsageError, match="tpm must be a whole number of at least 1"):
        nbopenai.Settings(tpm=1.5)


def test_the_progress_line_shows_the_pace_and_an_eta():
    snapshot = Snapshot(total=1000, done=250, ok=250, failed=0, retrying=0, cached=0, input_tokens=1, output_tokens=1,
                        cost_usd=0.0, elapsed_s=5.0, limit=50, pace="paced to 3,000 requests/min", eta_s=15.0,
                        rows_per_s=50.0)
    line = snapshot.line()
    assert "50.0 rows/s" in line and "ETA 15 s" in line and "paced to 3,000 requests/min" in line


def test_the_magic_takes_rpm_and_tpm(ip, local_server):
    ip.run_cell("from typing import Optional\nfrom pydantic import BaseModel\n"
                "class Person(BaseModel):\n    name: str\n    age: Optional[int]\n")
    ip.user_ns["bios"] = ROWS[:30]
    local_server.configure(rpm=1200, rate_limit_window=1.0)
    frame = ip.run_cell("%%extract Person --over bios --no-cache --concurrency 30 --rpm 1200 --tpm 1000000\n"
                        "Extract the person.").result
    assert (frame["_status"] == "ok").all() and rejected(local_server) <= 1
    with pytest.raises(Exception, match="rpm"):
        ip.run_cell("%%extract Person --over bios --rpm 0\nExtract the person.")


def test_a_held_back_pace_longer_than_the_cap_ends_the_next_run_saying_how_long(local_server, make):
    # A 429 asking for an hour ends its run (issue 13 item 8) and holds the session's pacer for that hour:
    # the next run sat silent for the hour, sending nothing, until the stop button.
    local_server.configure(rpm=6000)
    session = make()
    extract(session, Person, ROWS[:3], progress=False, cache=False)  # the limits are learned
    local_server.inject("rate_limit", retry_after=3600)
    with pytest.raises(nbopenai.RateLimitError):
        extract(session, Person, ROWS[3:6], progress=False, cache=False)
    sent = len(model_requests(local_server))
    with pytest.raises(nbopenai.RateLimitError) as caught:
        extract(session, Person, ROWS[6:9], progress=False, cache=False)
    assert len(model_requests(local_server)) == sent
    assert "60 min" in caught.value.message and "longer than the 2 min" in caught.value.message
    assert list(caught.value.partial["_status"]) == ["cancelled"] * 3

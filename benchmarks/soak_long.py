"""A soak: many asks and extraction rows with random faults at a fixed seed, then the books are checked.

    python -m benchmarks.soak_long                       # 5,000 asks and 20,000 rows (a few minutes)
    python -m benchmarks.soak_long --asks 500 --rows 2000  # the size tests/test_soak.py runs in CI

The offline server runs in a subprocess (so the memory measured is the client's alone), with
``fault_rate`` random faults drawn from a fixed seed, plus 429s with a short ``retry-after`` queued
at fixed points (a random 429 would ask for the default one second). Asks go round threads of about 100 turns,
streamed and not, ``store=True``; then one extraction runs at high concurrency. Afterwards
``SoakReport.problems()`` lists every broken promise:

- the ledger holds one row per create request the server saw, and each response the server made
  is in it exactly once (none charged twice by a retry, none missing);
- every request of every ask chained to its thread's last good response, and each thread's turns
  form one unbroken chain on the server;
- the frame has every input row once, in order, each with its own answer;
- resident memory grew by less than ``max_growth_mb`` (a resource bound, not a timing).

``tests/test_soak.py`` runs the CI size and asserts ``problems() == []``; this script prints the
figures and exits 1 if there is any problem.
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import os
import resource
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_REPO = Path(__file__).resolve().parent.parent
if str(_REPO) not in sys.path[:1]:
    sys.path.insert(0, str(_REPO))  # our checkout first, also when run as a file

__all__ = ["SoakReport", "run_soak", "main", "RANDOM_KINDS"]

# Faults drawn at random (each as its default shape). `slow` is left out: it only bites with a read
# timeout shorter than its delay, that is with waiting; the fault matrix covers it.
RANDOM_KINDS = ("server_error", "unavailable", "midstream_error", "midstream_error_flat", "drop", "incomplete")
TURNS_PER_THREAD = 100  # threads grow with the asks: a thread of 1,000 turns would pass the context window
RATE_LIMIT_EVERY = 25  # a queued 429 (retry-after 10 ms) before every 25th ask; a burst before the extraction


def rss_mb() -> float:
    """Resident memory now (``VmRSS``), in MB; the peak (``ru_maxrss``) where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024 if sys.platform == "darwin" else 1024)


@dataclass
class SoakReport:
    asks: int
    rows: int
    seed: int
    fault_rate: float
    concurrency: int
    seconds: float = 0.0
    ask_seconds: float = 0.0
    extract_seconds: float = 0.0
    rss_before_mb: float = 0.0
    rss_after_mb: float = 0.0
    max_growth_mb: float = 150.0
    requests: int = 0  # POST /v1/responses the server saw
    ledger_rows: int = 0
    made: int = 0  # requests after which the server had made a response
    ledger_response_ids: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    ask_outcomes: dict[str, int] = field(default_factory=dict)
    row_statuses: dict[str, int] = field(default_factory=dict)
    ledger_statuses: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)  # every broken promise, in words

    @property
    def threads(self) -> int:
        return max(1, -(-self.asks // TURNS_PER_THREAD))

    @property
    def rss_growth_mb(self) -> float:
        return self.rss_after_mb - self.rss_before_mb

    def problems(self) -> list[str]:
        found = list(self.errors)
        if self.ledger_rows != self.requests:
            found.append(f"the ledger has {self.ledger_rows} rows for {self.requests} requests the server saw")
        if self.ledger_response_ids != self.made:
            found.append(f"the server made {self.made} responses; the ledger names {self.ledger_response_ids}")
        if self.rss_growth_mb >= self.max_growth_mb:
            found.append(f"resident memory grew by {self.rss_growth_mb:.0f} MB (limit {self.max_growth_mb:.0f} MB)")
        return found

    def summary(self) -> str:
        return "\n".join(
            [
                f"soak: {self.asks:,} asks on {self.threads} threads + {self.rows:,} extraction rows at concurrency "
                f"{self.concurrency}, fault_rate {self.fault_rate} (seed {self.seed})",
                f"  time        {self.seconds:.1f} s "
                f"(asks {self.ask_seconds:.1f} s, extraction {self.extract_seconds:.1f} s)",
                f"  RSS         {self.rss_before_mb:.0f} MB before, {self.rss_after_mb:.0f} MB after "
                f"({self.rss_growth_mb:+.0f} MB; limit {self.max_growth_mb:.0f} MB)",
                f"  requests    {self.requests:,} seen by the server, {self.ledger_rows:,} ledger rows "
                f"({self.made:,} responses made, {self.ledger_response_ids:,} in the ledger)",
                f"  faults      {json.dumps(self.faults, sort_keys=True)}",
                f"  asks        {json.dumps(self.ask_outcomes, sort_keys=True)}",
                f"  rows        {json.dumps(self.row_statuses, sort_keys=True)}",
                f"  ledger      {json.dumps(self.ledger_statuses, sort_keys=True)}",
                f"  problems    {len(self.problems())}" + "".join(f"\n    - {p}" for p in self.problems()[:20]),
            ]
        )


def _made_a_response(request: Any) -> bool:
    """Whether the server made (and would bill) a response for this request: the fault's own rule."""
    from nbopenai.local._faults import FAULTS

    if request.fault is None:
        return True
    body = request.body if isinstance(request.body, dict) else {}
    return FAULTS[request.fault].makes_response(body.get("stream") is True, body.get("background") is True)


def _marker(request: Any) -> str | None:
    """The ``Soak ask #N`` a request carried, if it was an ask."""
    body = request.body if isinstance(request.body, dict) else {}
    text = json.dumps(body.get("input"))
    start = text.find("Soak ask #")
    if start < 0:
        return None
    return text[start:].split(":", 1)[0]


def run_soak(
    asks: int = 500,
    rows: int = 2000,
    *,
    seed: int = 20240611,
    fault_rate: float = 0.1,
    concurrency: int = 50,
    max_growth_mb: float = 150.0,
    workdir: str | os.PathLike | None = None,
    echo: bool = False,
) -> SoakReport:
    """Run the soak and check it; see the module docstring. ``workdir`` holds the ledger file."""

    from pydantic import BaseModel

    import nbopenai
    from nbopenai.local import start_subprocess

    class Record(BaseModel):
        name: str
        age: int | None

    report = SoakReport(asks, rows, seed, fault_rate, concurrency, max_growth_mb=max_growth_mb)
    say = print if echo else (lambda *a, **k: None)
    tmp = tempfile.TemporaryDirectory() if workdir is None else None
    ledger_path = str(Path(workdir or tmp.name) / "soak-usage.sqlite3")
    server = start_subprocess(seed=seed)
    settings = nbopenai.Settings(base_url=server.base_url, model="nbopenai-local")
    session = nbopenai.Session(
        settings, ledger_path=ledger_path, backoff_base=0.001, backoff_max=0.01, max_attempts=4, concurrency=concurrency
    )
    try:
        # Warm up (imports, encodings, pools) so the memory baseline is the steady state.
        for i in range(3):
            session.ask(f"Warm-up {i}", thread="warm-up")
        nbopenai.extract(
            Record, [f"Warm-up person {i}" for i in range(20)], session=session, progress=False, cache=False
        )
        gc.collect()
        report.rss_before_mb = rss_mb()
        server.configure(fault_rate=fault_rate, fault_kinds=list(RANDOM_KINDS))
        began = time.perf_counter()

        expected_prev: dict[str, str | None] = {}
        committed: dict[str, list[tuple[str, str]]] = collections.defaultdict(list)  # thread -> (marker, response id)
        outcomes: collections.Counter[str] = collections.Counter()
        for i in range(asks):
            thread = f"t{i % report.threads}"
            marker = f"Soak ask #{i}"
            expected_prev[marker] = session.threads.get(thread).head
            if i % RATE_LIMIT_EVERY == 0:
                server.inject("rate_limit", retry_after_ms=10)
            try:
                answer = session.ask(f"{marker}: say something about the number {i}.", thread=thread, stream=i % 4 != 0)
            except nbopenai.APIError as error:
                outcomes[type(error).__name__] += 1
                if session.threads.get(thread).head != expected_prev[marker]:
                    report.errors.append(f"{marker} failed ({type(error).__name__}) but moved thread {thread}")
                continue
            outcomes[answer.status] += 1
            committed[thread].append((marker, answer.response_id))
            if session.threads.get(thread).head != answer.response_id:
                report.errors.append(f"{marker} answered but thread {thread} is not at its answer")
            if i and i % 100 == 0:
                say(f"  {i:,} asks, {time.perf_counter() - began:.1f} s")
        report.ask_seconds = time.perf_counter() - began
        report.ask_outcomes = dict(outcomes)

        extract_began = time.perf_counter()
        # A burst of 429s at the start (more would make rows give up after every attempt was a 429).
        server.inject("rate_limit", count=min(20, max(1, rows // 100)), retry_after_ms=10)
        texts = [f"Person {i} is called Ada Lovelace." for i in range(rows)]
        frame = nbopenai.extract(Record, texts, session=session, concurrency=concurrency, progress=False, cache=False)
        report.extract_seconds = time.perf_counter() - extract_began
        report.seconds = time.perf_counter() - began
        gc.collect()
        report.rss_after_mb = rss_mb()
        say(f"  {rows:,} rows, {report.extract_seconds:.1f} s")

        _check_frame(report, frame, rows)
        _check_books(report, session, server, expected_prev, committed)
    finally:
        session.close()
        server.stop()
        if tmp is not None:
            tmp.cleanup()
    return report


def _check_frame(report: SoakReport, frame: Any, rows: int) -> None:
    report.row_statuses = {str(k): int(v) for k, v in frame["_status"].value_counts().items() if v}
    if len(frame) != rows or list(frame.index) != list(range(rows)):
        report.errors.append(
            f"the frame has {len(frame)} rows (index {frame.index[:3].tolist()}...), not {rows} in order"
        )
        return
    unknown = set(report.row_statuses) - {"ok", "incomplete", "error"}
    if unknown:
        report.errors.append(f"unexpected row statuses {sorted(unknown)}")
    ids = frame["_response_id"].dropna()
    if ids.duplicated().any():
        report.errors.append(f"{int(ids.duplicated().sum())} response ids appear on more than one row")
    ok = frame[frame["_status"] == "ok"]
    wrong = ok[ok["age"].astype("Int64") != ok.index.to_series()]  # "Person {i}": the demo model reads i back
    if len(wrong):
        report.errors.append(f"{len(wrong)} rows hold another row's answer (first: {wrong.index[0]})")


def _check_books(report: SoakReport, session: Any, server: Any, expected_prev: dict, committed: dict) -> None:
    requests = [r for r in server.requests if r.method == "POST" and r.path == "/v1/responses"]
    records = session.ledger.records(session_id=session.session_id)
    report.requests = len(requests)
    report.ledger_rows = len(records)
    report.faults = dict(collections.Counter(r.fault or "none" for r in requests))
    report.ledger_statuses = dict(collections.Counter(r.status for r in records))
    report.made = sum(1 for r in requests if _made_a_response(r))
    ids = [r.response_id for r in records if r.response_id]
    report.ledger_response_ids = len(set(ids))
    if len(ids) != len(set(ids)):
        report.errors.append(f"{len(ids) - len(set(ids))} responses are in the ledger more than once")
    for record in records:
        if record.status in ("error", "rate_limited") and (record.total_tokens or record.response_id):
            report.errors.append(f"a rejected attempt has tokens or a response id: {record}")
            break
    # Every attempt of every ask chained to its thread's last good response.
    by_marker: dict[str, list[Any]] = collections.defaultdict(list)
    for request in requests:
        if (marker := _marker(request)) is not None:
            by_marker[marker].append(request)
    for marker, prev in expected_prev.items():
        sent = by_marker.get(marker, [])
        if not sent:
            report.errors.append(f"{marker} never reached the server")
        for request in sent:
            if request.body.get("previous_response_id") != prev:
                report.errors.append(f"{marker} chained to {request.body.get('previous_response_id')}, not {prev}")
    # And each thread's turns are one chain: turn k was asked on top of turn k-1.
    for thread, turns in committed.items():
        held = [t.response_id for t in session.threads.get(thread).turns]
        if held != [rid for _, rid in turns]:
            report.errors.append(f"thread {thread} holds {len(held)} turns; {len(turns)} answers were committed")
        for (_, previous), (marker, _) in zip(turns, turns[1:], strict=False):
            if expected_prev[marker] != previous:
                report.errors.append(f"{marker} in {thread} did not follow {previous}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak_long", description=__doc__.split("\n\n")[0])
    parser.add_argument("--asks", type=int, default=5000)
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=20240611)
    parser.add_argument("--fault-rate", type=float, default=0.1)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--max-growth-mb", type=float, default=250.0)
    args = parser.parse_args(argv)
    report = run_soak(
        args.asks,
        args.rows,
        seed=args.seed,
        fault_rate=args.fault_rate,
        concurrency=args.concurrency,
        max_growth_mb=args.max_growth_mb,
        echo=True,
    )
    print(report.summary())
    return 1 if report.problems() else 0


if __name__ == "__main__":
    sys.exit(main())

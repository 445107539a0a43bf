"""9. Ledger: ``usage()`` against ``pandas.read_sql`` of the same query, and the budget check before a call.

A ledger file of 100,000 rows (``--quick``: 2,000), all of one session, as a long extraction leaves it.
``session.usage()`` builds the session's frame (nullable dtypes, UTC times); the baseline is
``pd.read_sql`` of the very query it runs, on its own connection to the same file (plain numpy/object
dtypes: less work than ours, so the ratio is an upper bound on what we add). CPU time, interleaved.

The budget check runs before every call with a budget set: it reads the session's running totals,
kept up to date as rows are written; the baseline is the ``SUM`` over the session's rows it used to run.
"""

from __future__ import annotations

import random
import sqlite3
import time

from ._harness import Context, Row, fmt_ms, fmt_ratio, fmt_us, interleaved, median, verdict

NAME = "ledger"
TITLE = "9. Ledger"
GOAL = 1.2
BUDGET_GOAL = 0.1  # of the sum it replaces
_MODELS = ("gpt-4.1-mini", "gpt-4.1", "o4-mini", "unpriced-model")
_STATUSES = ("completed", "completed", "completed", "error", "rate_limited", "incomplete")


def _fill(session, rows: int) -> None:
    """``rows`` ledger rows of ``session``, varied as real ones are (some unpriced, some failed)."""
    from nbopenai._ledger._usage import UsageRecord

    rng = random.Random(7)
    start = time.time() - rows
    records = []
    for i in range(rows):
        status = rng.choice(_STATUSES)
        tokens_in, tokens_out = rng.randint(50, 2_000), rng.randint(0, 500) if status == "completed" else 0
        model = rng.choice(_MODELS)
        records.append(
            UsageRecord(
                time=start + i,
                session_id=session.session_id,
                kind="extract",
                model=model,
                status=status,
                thread=None if i % 3 else "default",
                cell_id=f"cell-{i // 1_000}",
                response_id=f"resp_{i:012x}",
                input_tokens=tokens_in,
                cached_tokens=tokens_in // 4,
                output_tokens=tokens_out,
                total_tokens=tokens_in + tokens_out,
                latency_s=rng.uniform(0.2, 3.0),
                ttft_s=None,
                cost_usd=None if model == "unpriced-model" else tokens_in * 1e-6,
                attempt=1 + (status != "completed"),
                error=None if status == "completed" else f"{status}: try again",
            )
        )
    for begin in range(0, rows, 10_000):
        session.ledger.record_many(records[begin : begin + 10_000])


def run(ctx: Context) -> list[Row]:
    import pandas as pd

    import nbopenai
    from nbopenai._ledger._usage import _COLUMNS

    rows = 2_000 if ctx.quick else 100_000
    path = ctx.scratch / f"ledger-{rows}.sqlite3"
    session = nbopenai.Session(ledger_path=str(path), budget_usd=1e9, model="gpt-4.1-mini")
    try:
        _fill(session, rows)
        query = f"SELECT {', '.join(_COLUMNS)} FROM usage WHERE session_id = ? ORDER BY time, id"
        plain = sqlite3.connect(path)
        runs = 1 if ctx.quick else max(11, ctx.runs * 2 + 1)
        times = interleaved(
            {
                "usage": lambda: session.usage(),
                "read_sql": lambda: pd.read_sql(query, plain, params=[session.session_id]),
            },
            runs,
            clock=time.process_time,
        )
        ours, baseline = median(times["usage"]), median(times["read_sql"])
        frame = session.usage()
        same = len(frame) == rows and list(frame.columns) == list(_COLUMNS)

        sum_query = "SELECT COUNT(*), SUM(total_tokens), SUM(cost_usd) FROM usage WHERE session_id = ?"
        checks = 100 if ctx.quick else 2_000
        budget_times = interleaved(
            {
                "check": lambda: _repeat(checks, lambda: session.check_budget("gpt-4.1-mini", 500)),
                "sum": lambda: _repeat(
                    max(1, checks // 100), lambda: plain.execute(sum_query, [session.session_id]).fetchone()
                ),
            },
            runs,
            clock=time.process_time,
        )
        check = median(budget_times["check"]) / checks
        summed = median(budget_times["sum"]) / max(1, checks // 100)
        ratio = ours / baseline
        if ratio > GOAL:
            from ._harness import profile_diff

            ctx.note(
                f"{TITLE}: where the time goes",
                profile_diff(lambda: session.usage(), lambda: pd.read_sql(query, plain, params=[session.session_id])),
            )
        plain.close()
    finally:
        session.close()
    budget_ratio = check / summed
    result = [
        Row(
            TITLE,
            f"`usage()` of a {rows:,}-row session (DataFrame, nullable dtypes); CPU, median of {runs}",
            fmt_ms(ours),
            f"`pd.read_sql` of the same query {fmt_ms(baseline)}",
            fmt_ratio(ratio),
            f"<= {GOAL}x",
            verdict(ratio <= GOAL),
            data={"usage": times["usage"], "read_sql": times["read_sql"]},
        ),
        Row(TITLE, "same rows and columns as the ledger", "yes" if same else "no", goal="identical", met=verdict(same)),
        Row(
            TITLE,
            f"budget check before a call, {rows:,} rows in the session (running totals)",
            fmt_us(check),
            f"SUM over the session's rows {fmt_ms(summed, 2)}",
            fmt_ratio(budget_ratio),
            f"<= {BUDGET_GOAL}x",
            verdict(budget_ratio <= BUDGET_GOAL),
        ),
    ]
    return result


def _repeat(times: int, fn) -> None:
    for _ in range(times):
        fn()

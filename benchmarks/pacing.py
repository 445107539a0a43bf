"""8. Pacing to the account's limits: 1,000 rows against a server enforcing 3,000 RPM and a TPM limit that binds.

The offline server enforces per-minute limits as the API does (``nbopenai.local._limits``): each limit
is spread over one-second windows (3,000 RPM admits about 50 requests in any second), every answer
carries the six ``x-ratelimit-*`` headers, and a request over a limit gets a 429 with no
``retry-after``, only "Please try again in 20ms." in its message. Here the TPM limit binds (about
1.5x the time the RPM limit would take), and 100 ms latency, concurrency 50.

Ours: ``nbopenai.extract(Person, texts, concurrency=50, cache=False)`` in a fresh session, no
``rpm``/``tpm`` given: it learns the limits from the first answer's headers and paces itself
(``nbopenai/_core/_pacing.py``). Side by side, the same with pacing and the circuit breaker switched
off (``pace=False``, a breaker that never opens and no cautious first contact): the behaviour before
pacing, where only 429s slow the run down.

"What the limits allow" is computed from the server's own rules: the requests (and the tokens the
server counted, from the answers' usage) beyond one window's allowance, at the limit's rate, plus one
request's latency. Rejected: the 429s the server sent, as a share of the rows.
"""

from __future__ import annotations

import time

from ._harness import Context, Row, fmt_ratio, fmt_s, median, verdict
from ._texts import extraction_texts
from .extraction import INSTRUCTIONS, _person  # the same rows and schema as figure 5

NAME = "pacing"
TITLE = "8. Pacing to the account's limits"
TIME_GOAL = 1.15
REJECTED_GOAL = 0.02


def _allowed(rows: int, tokens: int, rpm: int, tpm: int, window: float, latency: float) -> float:
    """Seconds the server's limits allow for ``rows`` requests of ``tokens`` tokens in all."""
    by_requests = max(0.0, rows - rpm * window / 60) / (rpm / 60)
    by_tokens = max(0.0, tokens - tpm * window / 60) / (tpm / 60)
    return max(by_requests, by_tokens) + latency


def _unguarded(session, model: str) -> None:
    """Switch the session's circuit breaker off: it never opens, and the first contact is already over."""
    from nbopenai._core._breaker import CircuitBreaker

    breaker = CircuitBreaker(threshold=10**9)
    breaker.settle(None, model=model)
    session._breaker = breaker


def _one_run(ctx: Context, server, texts: list[str], limits: dict, *, paced: bool) -> dict:
    import nbopenai

    server.configure(rpm=None, tpm=None)  # fresh buckets: every run starts with a full window
    server.configure(**limits)
    server.clear_requests()
    settings = nbopenai.Settings(base_url=server.base_url, model="nbopenai-local")
    with nbopenai.Session(settings, ledger_path=":memory:") as session:
        if not paced:
            _unguarded(session, "nbopenai-local")
        lines: list[str] = []
        started = time.perf_counter()
        frame = nbopenai.extract(_person(), texts, session=session, concurrency=50, cache=False, pace=paced,
                                 instructions=INSTRUCTIONS, progress=lambda snapshot: lines.append(snapshot.line()))
        wall = time.perf_counter() - started
    requests = [r for r in server.requests if r.path == "/v1/responses" and r.method == "POST"]
    return {
        "wall": wall,
        "ok": int((frame["_status"] == "ok").sum()),
        "rejected": sum(1 for r in requests if r.fault == "rate_limit"),
        "requests": len(requests),
        "tokens": int(frame["_input_tokens"].sum()),  # the server's count: its usage is what its TPM limit charged
        "line": lines[len(lines) // 2] if lines else "",
    }


def run(ctx: Context) -> list[Row]:
    # --quick runs the same proportions in a few seconds (the smoke test's time, not a figure)
    rows_n = 40 if ctx.quick else 1000
    latency = 0.1
    rpm = 1200 if ctx.quick else 3000
    tpm = 30_000 if ctx.quick else 70_000  # ~37 input tokens a row: the tokens limit binds (~1.6x the requests one)
    window = 1.0
    runs = 1 if ctx.quick else ctx.runs
    texts = extraction_texts(rows_n)
    limits = {"rpm": rpm, "tpm": tpm, "rate_limit_window": window}
    results: dict[str, list[dict]] = {"paced": [], "unpaced": []}
    with ctx.server(latency=latency, seed=7) as server:
        _one_run(ctx, server, texts[:4], {}, paced=True)  # warm up: imports, the tokenizer, the schema
        for index in range(runs):
            for who in (("paced", "unpaced") if index % 2 == 0 else ("unpaced", "paced")):
                ctx.log(f"{TITLE}: {rows_n} rows, {who}, run {index + 1}/{runs}")
                results[who].append(_one_run(ctx, server, texts, limits, paced=who == "paced"))
    out: list[Row] = []
    ours, off = results["paced"], results["unpaced"]
    allowed = _allowed(rows_n, median([r["tokens"] for r in ours]), rpm, tpm, window, latency)
    wall, wall_off = median([r["wall"] for r in ours]), median([r["wall"] for r in off])
    rejected = max(r["rejected"] for r in ours) / rows_n
    rejected_off = max(r["rejected"] for r in off) / rows_n
    setting = f"{rows_n:,} rows, {rpm:,} RPM and {tpm:,} TPM (binding), {latency * 1000:.0f} ms latency, concurrency 50"
    out.append(Row(TITLE, f"{setting}: wall time against what the limits allow ({fmt_s(allowed)})", fmt_s(wall),
                   f"pacing and breaker off: {fmt_s(wall_off)} ({fmt_ratio(wall_off / allowed)})",
                   fmt_ratio(wall / allowed),
                   f"<= {TIME_GOAL}x", verdict(wall / allowed <= TIME_GOAL),
                   data={"ours": [r["wall"] for r in ours], "off": [r["wall"] for r in off], "allowed": allowed}))
    out.append(Row(TITLE, "requests rejected (429), as a share of the rows (worst run)",
                   f"{rejected:.1%} ({max(r['rejected'] for r in ours)})",
                   f"pacing and breaker off: {rejected_off:.1%} ({max(r['rejected'] for r in off)})", "",
                   f"< {REJECTED_GOAL:.0%}", verdict(rejected < REJECTED_GOAL),
                   data={"ours": [r["rejected"] for r in ours], "off": [r["rejected"] for r in off]}))
    out.append(Row(TITLE, "rows ok", f"{min(r['ok'] for r in ours)}/{rows_n}",
                   f"pacing and breaker off: {min(r['ok'] for r in off)}/{rows_n}", goal="all",
                   met=verdict(min(r["ok"] for r in ours) == rows_n)))
    if ours and ours[0]["line"]:
        ctx.note(f"{TITLE}: the progress line mid-run", f"`{ours[0]['line']}`")
    return out

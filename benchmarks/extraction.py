"""5. Extraction throughput: 1,000 rows at 100 ms latency, concurrency 50.

Ours: ``nbopenai.extract(Person, texts, concurrency=50, cache=False, progress=...)`` on a session
with a ledger file (as by default). Baseline, same run, same server: what a user would write with
the raw SDK: ``asyncio.gather`` over ``AsyncOpenAI.responses.create`` with the strict JSON schema
written out once, ``Person.model_validate_json`` on each answer, behind an
``asyncio.Semaphore(50)``, on one client reused across runs. (``responses.parse(text_format=...)``,
the SDK's convenience, rebuilds the strict schema on every call and is slower; it is not used.)

nbopenai sends rows through the SDK's documented low-level ``client.post`` and reads the answer
with ``json.loads`` (``nbopenai._core._client.create_response_dict``), which skips the SDK's parameter
transform and ``Response`` model construction. So a second raw baseline does exactly that, with
nothing else of ours: the gap to it is what our runner, validation, ledger and progress cost.

Also: the ideal (rows x latency / concurrency), a sequential loop (the sync SDK, one row after
another; measured on 100 rows and scaled, since it is linear), and ours against ``responses.create``
with 10% of requests answered 429 (``retry-after: 1``, as the server sends it; the SDK retries up
to 3 times, as many as our ``max_attempts=4``).
Client CPU per row is the whole client process's CPU time (all threads) divided by the rows.
"""

from __future__ import annotations

import asyncio
import cProfile
import json
import pstats
import threading
import time

from ._harness import Context, Row, fmt_ms, fmt_ratio, fmt_s, median, verdict
from ._texts import extraction_texts

INSTRUCTIONS = "Extract the person from the text."
NAME = "extraction"
TITLE = "5. Extraction throughput"
GOAL = 1.05

# Person's strict schema, written out once as a user of the raw SDK would.
_TEXT_FORMAT = {
    "type": "json_schema",
    "name": "Person",
    "strict": True,
    "schema": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
            "city": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        },
        "required": ["name", "age", "city"],
        "additionalProperties": False,
    },
}


def _person():
    from pydantic import BaseModel

    class Person(BaseModel):
        name: str
        age: int | None
        city: str | None

    return Person


class _Baseline:
    """The raw-SDK extraction loop, on its own event loop thread so the client is reused across runs."""

    def __init__(self, base_url: str, model, concurrency: int) -> None:
        import openai

        self.model = model
        self.concurrency = concurrency
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.client = self._call(self._make(openai, base_url))

    async def _make(self, openai, base_url):  # noqa: ANN001
        return openai.AsyncOpenAI(base_url=base_url, api_key="local", max_retries=3)

    def _call(self, coro):  # noqa: ANN001
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    async def _run(self, texts: list[str]) -> list:
        semaphore = asyncio.Semaphore(self.concurrency)

        async def one(text: str):
            async with semaphore:
                response = await self.client.responses.create(
                    model="nbopenai-local",
                    instructions=INSTRUCTIONS,
                    input=text,
                    text={"format": _TEXT_FORMAT},
                )
                return self.model.model_validate_json(response.output_text)

        return await asyncio.gather(*(one(t) for t in texts), return_exceptions=True)

    async def _run_post(self, texts: list[str]) -> list:
        """The same through ``client.post`` and ``json.loads``, the request path nbopenai uses."""

        import httpx2

        semaphore = asyncio.Semaphore(self.concurrency)
        body = {"model": "nbopenai-local", "instructions": INSTRUCTIONS, "text": {"format": _TEXT_FORMAT}}

        async def one(text: str):
            async with semaphore:
                raw = await self.client.post("/responses", body={**body, "input": text}, cast_to=httpx2.Response)
                response = json.loads(raw.content)
                answer = "".join(part["text"] for item in response["output"] if item["type"] == "message"
                                 for part in item["content"] if part["type"] == "output_text")
                return self.model.model_validate_json(answer)

        return await asyncio.gather(*(one(t) for t in texts), return_exceptions=True)

    def run(self, texts: list[str]) -> list:
        return self._call(self._run(texts))

    def run_post(self, texts: list[str]) -> list:
        return self._call(self._run_post(texts))

    def close(self) -> None:
        self._call(self.client.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


def _sequential(base_url: str, model, texts: list[str]) -> float:
    import openai

    with openai.OpenAI(base_url=base_url, api_key="local", max_retries=3) as client:
        started = time.perf_counter()
        for text in texts:
            response = client.responses.create(model="nbopenai-local", instructions="Extract the person from the text.",
                                               input=text, text={"format": _TEXT_FORMAT})
            model.model_validate_json(response.output_text)
        return time.perf_counter() - started


def _pool_size(settings) -> int | None:  # noqa: ANN001
    """How many connections the session's async client may open (None if we cannot tell)."""
    try:
        from nbopenai._core._client import _limits

        return _limits(settings).max_connections
    except Exception:
        return None


def _timed(fn) -> tuple[float, float, object]:  # noqa: ANN001
    cpu, started = time.process_time(), time.perf_counter()
    result = fn()
    return time.perf_counter() - started, time.process_time() - cpu, result


_FAILURES: dict[str, int] = {}


def _ok_ours(frame) -> int:  # noqa: ANN001
    failed = frame[frame["_status"] != "ok"]
    for status, error in zip(failed["_status"], failed["_error"], strict=False):
        key = f"{status}: {str(error)[:160]}"
        _FAILURES[key] = _FAILURES.get(key, 0) + 1
    return int((frame["_status"] == "ok").sum())


def _ok_raw(results: list) -> int:
    return sum(1 for r in results if not isinstance(r, BaseException) and r is not None)


def _measure(ctx: Context, session, baseline: _Baseline, model, texts: list[str], concurrency: int, runs: int) -> dict:
    import nbopenai

    out = {
        "ours": [],
        "raw": [],
        "post": [],
        "ours_cpu": [],
        "raw_cpu": [],
        "post_cpu": [],
        "ours_ok": [],
        "raw_ok": [],
        "post_ok": [],
        "limits": [],
    }

    def ours():
        # A progress callback (ten calls a second) records the adaptive concurrency limit.
        # The same instructions as the baseline's request, so both send the same tokens.
        return nbopenai.extract(
            model,
            texts,
            session=session,
            concurrency=concurrency,
            cache=False,
            instructions=INSTRUCTIONS,
            progress=lambda snapshot: out["limits"].append(snapshot.limit),
        )

    contenders = {"raw": baseline.run, "post": baseline.run_post}
    ours()  # warm up: connections, schema, tokenizer
    for run_raw in contenders.values():
        run_raw(texts)
    for index in range(runs):
        order = ("ours", "raw", "post") if index % 2 == 0 else ("post", "raw", "ours")
        for who in order:
            if who == "ours":
                wall, cpu, frame = _timed(ours)
                out["ours_ok"].append(_ok_ours(frame))
            else:
                wall, cpu, results = _timed(lambda who=who: contenders[who](texts))
                out[f"{who}_ok"].append(_ok_raw(results))
            out[who].append(wall)
            out[f"{who}_cpu"].append(cpu)
    out["profile"] = ours
    return out


def _where(session, fn, repeat: int = 1) -> str:
    """cProfile of ``fn`` in the caller's thread and in the session's loop thread (where rows run)."""

    loop = session.loop.loop
    profiler = cProfile.Profile()
    ready = threading.Event()
    loop.call_soon_threadsafe(lambda: (profiler.enable(), ready.set()))
    ready.wait(5)
    for _ in range(repeat):
        fn()
    done = threading.Event()
    loop.call_soon_threadsafe(lambda: (profiler.disable(), done.set()))
    done.wait(5)
    stats = pstats.Stats(profiler)
    total = sum(entry[2] for entry in stats.stats.values()) or 1.0
    from ._harness import _short_path, split_by_package

    ours = sorted(
        (
            (ct, name, filename)
            for (filename, _, name), (_, _, _, ct, _) in stats.stats.items()
            if "nbopenai/" in filename
        ),
        reverse=True,
    )[:6]
    lines = ["Own time by package (loop thread):", split_by_package(stats), "", "Our functions, cumulative:"]
    lines += [f"- `{_short_path(f)}:{n}` — {ct / total:.1%}" for ct, n, f in ours]
    return "\n".join(lines)


def run(ctx: Context) -> list[Row]:
    import nbopenai

    rows_n = 40 if ctx.quick else 1000
    latency = 0.02 if ctx.quick else 0.1
    concurrency = 10 if ctx.quick else 50
    sequential_n = 10 if ctx.quick else 100
    runs = 1 if ctx.quick else ctx.runs
    texts = extraction_texts(rows_n)
    model = _person()
    ideal = rows_n * latency / concurrency
    rows: list[Row] = []
    with ctx.server(latency=latency, seed=7) as server:
        settings = nbopenai.Settings(base_url=server.base_url, model="nbopenai-local")
        session = nbopenai.Session(settings, ledger_path=str(ctx.scratch / "extract-ledger.sqlite3"))
        baseline = _Baseline(server.base_url, model, concurrency)
        pool = _pool_size(settings)
        try:
            ctx.log(f"{TITLE}: {rows_n} rows x {runs}, ours vs raw SDK")
            clean = _measure(ctx, session, baseline, model, texts, concurrency, runs)
            if median(clean["ours"]) / median(clean["raw"]) > GOAL:
                clean["where"] = _where(session, clean["profile"])
            ctx.log(f"{TITLE}: sequential loop on {sequential_n} rows")
            sequential = _sequential(server.base_url, model, texts[:sequential_n]) * rows_n / sequential_n
            ctx.log(f"{TITLE}: with 10% answered 429")
            server.configure(fault_rate=0.1, fault_kinds=["rate_limit"], seed=7)
            limited = _measure(ctx, session, baseline, model, texts, concurrency, runs)
            server.configure(fault_rate=0.0)
        finally:
            baseline.close()
            session.close()
    ours, raw = median(clean["ours"]), median(clean["raw"])
    ratio = ours / raw
    rows.append(
        Row(
            TITLE,
            f"{rows_n:,} rows, {latency * 1000:.0f} ms latency, concurrency {concurrency}: wall time",
            fmt_s(ours),
            f"raw SDK gather + semaphore: {fmt_s(raw)}",
            fmt_ratio(ratio),
            f"<= {GOAL}x",
            verdict(ratio <= GOAL),
            data={"ours": clean["ours"], "raw": clean["raw"]},
        )
    )
    post = median(clean["post"])
    rows.append(
        Row(
            TITLE,
            "the same, against the raw SDK on nbopenai's request path (`client.post` + `json.loads`)",
            fmt_s(ours),
            f"raw SDK via client.post: {fmt_s(post)}",
            fmt_ratio(ours / post),
            data={"post": clean["post"], "post_cpu": clean["post_cpu"]},
        )
    )
    rows.append(
        Row(
            TITLE,
            f"against the ideal (rows x latency / concurrency = {fmt_s(ideal)})",
            fmt_s(ours),
            f"raw SDK: {fmt_s(raw)} ({fmt_ratio(raw / ideal)} of ideal)",
            fmt_ratio(ours / ideal),
        )
    )
    rows.append(
        Row(
            TITLE,
            f"against a sequential loop (sync SDK; {sequential_n} rows measured, scaled x{rows_n // sequential_n})",
            fmt_s(ours),
            f"sequential: {fmt_s(sequential)}",
            fmt_ratio(ours / sequential),
        )
    )
    if ratio > GOAL:
        text = clean.get("where", "")
        if pool is not None and pool < concurrency:
            text = (
                f"The session's connection pool allows {pool} connections (`nbopenai._core._client._limits`, from "
                f"`Settings.concurrency`), fewer than the {concurrency} requests `extract(concurrency={concurrency})` "
                f"keeps in flight: the rest wait for a connection.\n\n" + text
            )
        ctx.note(f"{TITLE}: where the time goes (no faults)", text)
    l_ours, l_raw = median(limited["ours"]), median(limited["raw"])
    rows.append(
        Row(
            TITLE,
            "with 10% of requests answered 429 (retry-after 1 s): wall time",
            f"{fmt_s(l_ours)} ({min(limited['ours_ok'])}/{rows_n} ok)",
            f"raw SDK (max_retries=3): {fmt_s(l_raw)} ({min(limited['raw_ok'])}/{rows_n} ok)",
            fmt_ratio(l_ours / l_raw),
            data={"ours": limited["ours"], "raw": limited["raw"]},
        )
    )
    if _FAILURES:
        worst = sorted(_FAILURES.items(), key=lambda item: -item[1])[:5]
        ctx.note(
            f"{TITLE}: rows that did not end ok (all runs)", "\n".join(f"- {count} x {what}" for what, count in worst)
        )
        _FAILURES.clear()
    limits = sorted(limited["limits"])
    if limits and l_ours / l_raw > GOAL and median(limits) < concurrency / 2:
        ctx.note(
            f"{TITLE}: where the time goes with 10% 429s",
            (
                f"Our adaptive concurrency limit spent the run at a median of {median(limits):.0f} (of {concurrency}): "
                "`nbopenai/_extract/_runner.py:AdaptiveLimit.rate_limited` halves the limit on a 429 from any request "
                "sent since the last cut, and `succeeded` adds one back per `limit` successes. With 429s scattered at "
                "random (10% here) a new cut comes before the limit recovers, so it settles near 1/rate; the raw SDK "
                "keeps all its requests in flight and just waits out each `retry-after`."
            ),
        )
    if limits:
        rows.append(
            Row(
                TITLE,
                "with 10% 429: our adaptive concurrency limit during the run (median of progress ticks)",
                f"{median(limits):.0f} (min {limits[0]}, max {limits[-1]})",
                f"raw SDK: {concurrency} throughout",
                data={"limits": limits},
            )
        )
    cpu_ours, cpu_raw = median(clean["ours_cpu"]) / rows_n, median(clean["raw_cpu"]) / rows_n
    cpu_post = median(clean["post_cpu"]) / rows_n
    rows.append(
        Row(
            TITLE,
            "client CPU per row (whole process)",
            fmt_ms(cpu_ours, 2),
            f"raw SDK: {fmt_ms(cpu_raw, 2)}; via client.post: {fmt_ms(cpu_post, 2)}",
            fmt_ratio(cpu_ours / cpu_raw),
            data={"ours": clean["ours_cpu"], "raw": clean["raw_cpu"]},
        )
    )
    rows.append(
        Row(
            TITLE,
            "rows ok (no faults)",
            f"{min(clean['ours_ok'])}/{rows_n}",
            f"raw SDK: {min(clean['raw_ok'])}/{rows_n}",
            goal="all",
            met=verdict(min(clean["ours_ok"]) == rows_n),
        )
    )
    return rows

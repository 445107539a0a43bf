"""The Batch API path: the same rows as a live run, sent as JSONL, merged back into the same frame.

``submit`` writes one line per row (``custom_id`` = ``row-<position>``, ``url`` = ``/v1/responses``,
``body`` = the live request), splits the lines into parts of at most 50,000 lines and 200 MB,
uploads each part (``purpose="batch"``) and creates its batch (``completion_window="24h"``). The
job's record (batch ids, row keys, the index) is saved in the extraction store after every part,
so ``collect_batch`` can finish the job from a restarted kernel.

Polling runs on the session's loop. Waiting (the default) blocks with progress; ``wait=False``
returns the ``BatchJob`` at once and polls in the background, so the kernel stays free. When a
part ends, its output and error files are read and every line classified exactly as a live answer
(``_rows.classify``); each line becomes a ledger row (``kind="batch"``, at half the live price).
Rows of a part that failed, expired or was cancelled end ``cancelled``; ``BatchJob.resubmit()``
sends just those rows again as a new batch for that part, re-using the part's uploaded lines.
Batch answers cannot be re-asked, so an ``invalid`` row stays invalid: re-run it live with
``retry_failed``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from .._core._errors import UsageError, translate
from .._turns._answer import Usage
from ._format import strict_format
from ._prepared import Prepared
from ._progress import NoProgress, Snapshot, TextProgress, choose_view
from ._rows import RowResult, classify
from ._runner import LedgerBuffer, drive

if TYPE_CHECKING:
    import pandas

    from .._session import Session

__all__ = ["BatchJob", "Part", "submit", "collect_batch", "batch_jobs", "split_lines", "MAX_LINES", "MAX_BYTES"]

MAX_LINES = 50_000
MAX_BYTES = 200 * 1024 * 1024
BATCH_PRICE_FACTOR = 0.5  # the Batch API bills half the live price
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
_POLL_FIRST, _POLL_MAX = 0.1, 10.0
_UNFINISHED = {
    "batch_expired": "the batch expired before this row ran",
    "batch_cancelled": "the batch was cancelled before this row ran",
}


@dataclass
class Part:
    """One batch of the job: which rows it holds and where it stands."""

    number: int
    positions: list[int]
    input_file_id: str | None = None
    batch_id: str | None = None
    status: str = "new"
    output_file_id: str | None = None
    error_file_id: str | None = None
    completed: int = 0
    failed: int = 0
    collected: bool = False
    error: str | None = None
    earlier: list[dict[str, Any]] = field(default_factory=list)  # attempts replaced by resubmit()

    @property
    def done(self) -> bool:
        return self.status in TERMINAL and self.collected


def split_lines(
    lines: list[tuple[int, str]], max_lines: int = MAX_LINES, max_bytes: int = MAX_BYTES
) -> list[list[tuple[int, str]]]:
    """``(position, line)`` pairs in parts of at most ``max_lines`` lines and ``max_bytes`` bytes."""
    parts: list[list[tuple[int, str]]] = []
    current: list[tuple[int, str]] = []
    size = 0
    for position, line in lines:
        length = len(line.encode("utf-8")) + 1
        if current and (len(current) >= max_lines or size + length > max_bytes):
            parts.append(current)
            current, size = [], 0
        current.append((position, line))
        size += length
    if current:
        parts.append(current)
    return parts


def _lines(prepared: Prepared, positions: list[int]) -> list[tuple[int, str]]:
    # The shared body is serialised once; each line only adds its custom_id and its text.
    shared = json.dumps(prepared.params, ensure_ascii=False, separators=(",", ":"))[:-1]
    return [
        (
            p,
            f'{{"custom_id":"row-{p}","method":"POST","url":"/v1/responses","body":{shared},'
            f'"input":{json.dumps(prepared.inputs.texts[p], ensure_ascii=False)}}}}}',
        )
        for p in positions
    ]


class BatchJob:
    """A batch extraction: its parts, their progress, and (once they end) the frame.

    Build it with ``extract(..., batch=True, wait=False)`` or ``collect_batch(job_id, Model)``.
    """

    def __init__(self, session: Session, prepared: Prepared, record: dict[str, Any], parts: list[Part]) -> None:
        self.session = session
        self.prepared = prepared
        self.record = record
        self.parts = parts
        self.id: str = record["id"]
        self.cached = 0
        self._ledger = LedgerBuffer(session)
        self._task: asyncio.Task[None] | None = None
        self._future: Any = None
        self._started = time.perf_counter()
        self._view: Any = None

    # ---- state ------------------------------------------------------------------------------

    @property
    def status(self) -> str:
        """``submitting``, ``running``, ``completed`` (every part), or ``ended`` (some part failed, expired or was
        cancelled)."""
        if any(p.batch_id is None for p in self.parts):
            return "submitting"
        if not all(p.done for p in self.parts):
            return "running"
        return "completed" if all(p.status == "completed" for p in self.parts) else "ended"

    @property
    def batch_ids(self) -> list[str]:
        return [p.batch_id for p in self.parts if p.batch_id]

    def done(self) -> bool:
        return all(p.done for p in self.parts)

    def snapshot(self, *, finished: bool = False) -> Snapshot:
        results = self.prepared.results
        collected = [r for r in results if r.status != "pending"]
        ok = sum(1 for r in collected if r.status == "ok")
        running = sum(p.completed + p.failed for p in self.parts if not p.collected)
        running_failed = sum(p.failed for p in self.parts if not p.collected)
        return Snapshot(
            total=len(results),
            done=len(collected) + running,
            ok=ok + running - running_failed,
            failed=len(collected) - ok + running_failed,
            retrying=0,
            cached=self.cached,
            input_tokens=sum(r.input_tokens for r in collected),
            output_tokens=sum(r.output_tokens for r in collected),
            cost_usd=sum(r.cost_usd or 0.0 for r in collected),
            elapsed_s=time.perf_counter() - self._started,
            limit=len(self.parts),
            finished=finished,
            label=f"batch {self.id}",
        )

    def _save(self) -> None:
        self.record["parts"] = [asdict(p) for p in self.parts]
        self.session.extract_store.save_batch(self.id, self.record)

    # ---- network (on the session's loop) --------------------------------------------------------

    async def _call(self, make: Any, *, idempotent: bool = False) -> Any:
        try:
            return await self.session.retry.acall(make, idempotent=idempotent)
        except Exception as exc:  # every batch call ends in one of our errors (cancel, resubmit, polling)
            raise translate(exc) from None

    async def _create(self, client: Any, part: Part, data: bytes) -> None:
        name = f"nbopenai-{self.id}-part{part.number}.jsonl"
        uploaded = await self._call(
            lambda: client.files.create(file=(name, data, "application/jsonl"), purpose="batch")
        )
        part.input_file_id = uploaded.id
        metadata = {"nbopenai_job": self.id, "part": f"{part.number}/{len(self.parts)}"}
        batch = await self._call(
            lambda: client.batches.create(
                input_file_id=uploaded.id, endpoint="/v1/responses", completion_window="24h", metadata=metadata
            )
        )
        part.batch_id, part.status, part.collected = batch.id, batch.status, False
        self._save()

    async def _submit(self, texts: list[list[tuple[int, str]]]) -> None:
        async with self.session.holding_clients() as clients:  # see _poll
            for part, lines in zip(self.parts, texts, strict=False):
                if part.batch_id is None:
                    await self._create(clients.async_client(), part,
                                       "".join(line + "\n" for _, line in lines).encode("utf-8"))

    async def _download(self, client: Any, file_id: str | None) -> list[dict[str, Any]]:
        if not file_id:
            return []
        content = await self._call(lambda: client.files.content(file_id), idempotent=True)
        return [json.loads(line) for line in content.text.splitlines() if line.strip()]

    async def _collect(
        self, client: Any, part: Part, output_file_id: str | None, error_file_id: str | None, write_ledger: bool
    ) -> None:
        lines = await self._download(client, output_file_id) + await self._download(client, error_file_id)
        seen = set()
        for line in lines:
            position = _position(line.get("custom_id"))
            if position is None or position >= len(self.prepared.results):
                continue
            seen.add(position)
            self._apply(position, line, write_ledger)
        unfinished = part.status in ("failed", "expired", "cancelled")
        reason = part.error or f"the batch {part.status}"
        for position in part.positions:
            if position not in seen and self.prepared.results[position].status == "pending":
                self.prepared.results[position] = (
                    RowResult(status="cancelled", error=f"{reason}; not run (job.resubmit() sends it again)")
                    if unfinished
                    else RowResult(status="error", error="the batch returned no line for this row")
                )

    def _apply(self, position: int, line: dict[str, Any], write_ledger: bool) -> None:
        result = RowResult(attempts=1)
        response = line.get("response")
        error = line.get("error")
        if response is None:
            code = (error or {}).get("code")
            message = _UNFINISHED.get(code) or (error or {}).get("message") or "no answer"
            status = "cancelled" if code in _UNFINISHED else "error"
            self.prepared.results[position] = RowResult(
                status=status, error=f"{message}; job.resubmit() sends it again" if status == "cancelled" else message
            )
            return
        body = response.get("body") or {}
        model = self.prepared.model
        if response.get("status_code") == 200:
            outcome = classify(body, self.prepared.fmt.parse)
            usage = Usage.from_api(body.get("usage"))
            model = body.get("model") or model
            result.response_id = body.get("id")
            result.status, result.value, result.text, result.error = (
                outcome.status,
                outcome.value,
                outcome.text,
                outcome.error,
            )
            ledger_status = body.get("status") or "completed"
        else:
            detail = body.get("error") or {}
            result.status = "error"
            result.error = f"{detail.get('message') or 'the request failed'} (HTTP {response.get('status_code')})"
            usage, ledger_status = None, "error"
        row = self.session.usage_record(
            kind="batch",
            model=model,
            status=ledger_status,
            usage=usage,
            response_id=result.response_id,
            started=float(body.get("created_at") or time.time()),
            error=result.error,
            price_factor=BATCH_PRICE_FACTOR,
        )
        if usage is not None:
            result.add_usage(usage, row.cost_usd)
        self.prepared.results[position] = result
        if write_ledger:
            self._ledger.add(row)

    async def _poll(self, once: bool = False) -> None:
        """Poll every part until each has ended and been collected (``once``: one round only).

        On the clients it started with: a key changed meanwhile (from another thread) is for the next
        call, and does not close them under a poll that may run for hours (``Session.holding_clients``).
        """
        async with self.session.holding_clients() as clients:
            await self._polling(clients.async_client(), once)

    async def _polling(self, client: Any, once: bool) -> None:
        ledgered = self.record.setdefault("ledgered", [])  # batch ids whose lines are in the ledger
        for part in self.parts:  # attempts replaced by resubmit(): read once, before the current one
            for earlier in part.earlier:
                if not earlier.get("read"):
                    await self._collect(
                        client,
                        part,
                        earlier.get("output_file_id"),
                        earlier.get("error_file_id"),
                        write_ledger=earlier["batch_id"] not in ledgered,
                    )
                    earlier["read"] = True
                    if earlier["batch_id"] not in ledgered:
                        ledgered.append(earlier["batch_id"])
        wait = _POLL_FIRST
        while True:
            for part in self.parts:
                if part.done or part.batch_id is None:
                    continue
                batch = await self._call(lambda part=part: client.batches.retrieve(part.batch_id), idempotent=True)
                counts = batch.request_counts
                part.status = batch.status
                part.completed, part.failed = (counts.completed, counts.failed) if counts else (0, 0)
                part.output_file_id, part.error_file_id = batch.output_file_id, batch.error_file_id
                if batch.errors and batch.errors.data:
                    part.error = "; ".join(e.message or e.code or "error" for e in batch.errors.data[:3])
                if part.status in TERMINAL:
                    await self._collect(
                        client, part, part.output_file_id, part.error_file_id,
                        write_ledger=part.batch_id not in ledgered,
                    )
                    if part.batch_id not in ledgered:
                        ledgered.append(part.batch_id)
                    part.collected = True
                    self._finish_part()
                    self._save()
            if self._view is not None and self._task is not None:  # background: no caller thread ticks
                self._view.update(self.snapshot())
            if self.done() or once:
                return
            await asyncio.sleep(wait)
            wait = min(wait * 1.5, _POLL_MAX)

    def _finish_part(self) -> None:
        if self._task is not None:  # in the background nobody else flushes the ledger
            self._ledger.flush()
        if self.prepared.options.cache:
            self.prepared.save_answers(self.session)

    # ---- what users call --------------------------------------------------------------------

    def start(self, view: Any = None) -> BatchJob:
        """Poll in the background (the kernel stays free); ``wait()`` or ``result()`` later."""
        if self._future is None or self._future.done():
            self._view = view
            if hasattr(view, "show"):
                view.show()  # now, from the cell that started the job: later updates only change values

            async def background() -> None:
                self._task = asyncio.current_task()
                try:
                    await self._poll()
                finally:
                    self._ledger.flush()
                    if self._view is not None:
                        self._view.close(self.snapshot(finished=True))

            self._future = self.session.loop.submit(background())
        return self

    def wait(self, progress: Any = True) -> pandas.DataFrame:
        """Block until every part has ended; returns the frame. The stop button returns the partial frame."""
        polling = self._future is not None and not self._future.done()
        view = None if polling else choose_view(progress)

        def tick() -> None:
            self._ledger.flush()
            if view is not None:
                view.update(self.snapshot())

        interval = 1.0 / min(self.session.settings.update_rate, 10.0)
        try:
            if polling:
                future = self._future

                async def join() -> None:
                    await asyncio.shield(asyncio.wrap_future(future))

                drive(self.session, join(), tick, interval)
            else:
                drive(self.session, self._poll(), tick, interval)
        except KeyboardInterrupt:
            pass  # stop waiting; the frame below shows what has ended, the batches keep running
        finally:
            self._ledger.flush()
            if view is not None:
                try:
                    view.close(self.snapshot(finished=True))
                except KeyboardInterrupt:
                    pass
        return self.frame()

    def refresh(self) -> BatchJob:
        """Poll every part once now, collecting any that has ended."""
        if self._future is not None and not self._future.done():
            return self  # the background poller is on it
        self.session.loop.run(self._poll(once=True))
        self._ledger.flush()
        return self

    def result(self) -> pandas.DataFrame:
        """The frame; raises ``UsageError`` while parts are still running (``wait()`` blocks instead)."""
        if not self.done():
            raise UsageError(f"batch job {self.id} is still {self.status}; call .wait() to block until it ends")
        return self.frame()

    def frame(self) -> pandas.DataFrame:
        """The frame as it stands: rows of parts still running show ``cancelled`` ("still running")."""
        for part in self.parts:
            if not part.done:
                for position in part.positions:
                    result = self.prepared.results[position]
                    if result.status == "pending":
                        result.error = (
                            f"batch {part.batch_id or '(not created)'} still running; "
                            f"collect with nbopenai.collect_batch({self.id!r}, ...)"
                        )
        snapshot = self.snapshot()
        totals = {
            "rows": snapshot.total,
            "ok": snapshot.ok,
            "failed": snapshot.failed,
            "cached": self.cached,
            "requests": sum(len(p.positions) for p in self.parts),
            "input_tokens": snapshot.input_tokens,
            "output_tokens": snapshot.output_tokens,
            "cost_usd": round(snapshot.cost_usd, 10),
        }
        attrs = self.prepared.attrs(
            self.session, totals, interrupted=not self.done(), batch_job=self.id, batch_ids=self.batch_ids
        )
        return self.prepared.frame(attrs)

    def cancel(self) -> BatchJob:
        """Ask the API to cancel every running part (their finished rows are still collected)."""

        async def cancel_all() -> None:
            async with self.session.holding_clients() as clients:
                client = clients.async_client()
                for part in self.parts:
                    if part.batch_id and part.status not in TERMINAL:
                        await self._call(lambda part=part: client.batches.cancel(part.batch_id), idempotent=True)

        self.session.loop.run(cancel_all())
        return self

    def resubmit(self) -> BatchJob:
        """Send again, as new batches, the unfinished rows of every part that failed, expired or was cancelled."""
        if self._future is not None and not self._future.done():
            raise UsageError("the job is still being polled in the background; wait for it first")

        async def again() -> None:
            async with self.session.holding_clients() as clients:
                await resubmit_parts(clients.async_client())

        async def resubmit_parts(client: Any) -> None:
            for part in self.parts:
                if not (part.done and part.status in ("failed", "expired", "cancelled")):
                    continue
                todo = {f"row-{p}" for p in part.positions if self.prepared.results[p].status == "cancelled"}
                if not todo:
                    continue
                content = await self._call(lambda part=part: client.files.content(part.input_file_id), idempotent=True)
                lines = [
                    line for line in content.text.splitlines() if line.strip() and json.loads(line)["custom_id"] in todo
                ]
                part.earlier.append(
                    {
                        "batch_id": part.batch_id,
                        "status": part.status,
                        "output_file_id": part.output_file_id,
                        "error_file_id": part.error_file_id,
                        "read": True,
                    }
                )
                for position in part.positions:
                    if f"row-{position}" in todo:
                        self.prepared.results[position] = RowResult()
                part.status, part.error, part.collected, part.completed, part.failed = "new", None, False, 0, 0
                part.output_file_id = part.error_file_id = None
                await self._create(client, part, "".join(line + "\n" for line in lines).encode("utf-8"))

        self.session.loop.run(again())
        return self

    # ---- display ------------------------------------------------------------------------------

    def __repr__(self) -> str:
        parts = ", ".join(
            f"part {p.number}: {p.status} ({p.completed + p.failed}/{len(p.positions)})" for p in self.parts
        )
        return f"<BatchJob {self.id} {self.status}: {parts}>"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        snapshot = self.snapshot()
        rows = "".join(
            f"<tr><td>{p.number}</td><td><code>{p.batch_id or ''}</code></td><td>{p.status}</td>"
            f"<td>{p.completed + p.failed:,}/{len(p.positions):,}</td></tr>"
            for p in self.parts
        )
        html = (
            f"<div><b>batch job {self.id}</b> — {self.status}: {snapshot.line()}"
            f"<table><tr><th>part</th><th>batch</th><th>status</th><th>rows</th></tr>{rows}</table>"
            f"<small>collect later with <code>nbopenai.collect_batch({self.id!r}, "
            f"{self.prepared.fmt.model.__name__})</code></small></div>"
        )
        return {"text/plain": repr(self), "text/html": html}


def _position(custom_id: Any) -> int | None:
    if isinstance(custom_id, str) and custom_id.startswith("row-"):
        try:
            return int(custom_id[4:])
        except ValueError:
            return None
    return None


def submit(session: Session, prepared: Prepared, *, cached: int = 0) -> Any:
    """Send the pending rows of ``prepared`` as batches; returns the frame (``wait``) or the ``BatchJob``."""
    if prepared.reused is not None:
        raise UsageError(
            "batch extraction takes retry_failed=True (the cache skips answered rows), not an earlier frame"
        )
    todo = prepared.todo
    job_id = "extract-" + uuid.uuid4().hex[:12]
    lines = _lines(prepared, todo)
    chunks = split_lines(lines, MAX_LINES, MAX_BYTES)
    parts = [Part(number=n, positions=[p for p, _ in chunk]) for n, chunk in enumerate(chunks, 1)]
    created = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    record = {"id": job_id, "created_at": created, **prepared.record()}
    job = BatchJob(session, prepared, record, parts)
    job.cached = cached
    job._save()
    if parts:
        try:
            session.loop.run(job._submit(chunks))
        except Exception as exc:
            raise translate(exc) from None
    if prepared.options.wait:
        return job.wait(prepared.options.progress)
    return job.start(_background_view(prepared.options.progress))


def _background_view(progress: Any) -> Any:
    """A view for a background poll: a widget or a callback, never text (it would interleave with the prompt)."""
    view = choose_view(progress)
    return None if isinstance(view, (TextProgress, NoProgress)) else view


def batch_jobs(session: Session) -> list[dict[str, Any]]:
    """The saved batch jobs, newest first: id, when, schema, rows, and each part's batch id and status."""
    return [
        {
            "id": r["id"],
            "created_at": r["created_at"],
            "schema": r["schema"],
            "model": r["model"],
            "rows": r["rows"],
            "parts": [{"batch_id": p["batch_id"], "status": p["status"]} for p in r.get("parts", [])],
        }
        for r in session.extract_store.batch_records()
    ]


def collect_batch(session: Session, job_id: str, schema: Any, *, wait: bool = True, progress: Any = True) -> Any:
    """Finish a batch job started earlier, even in another kernel: returns its frame (or the job with ``wait=False``).

    Parameters
    ----------
    job_id
        The job's id (``df.attrs["batch_job"]``, ``BatchJob.id``, or ``batch_jobs(session)``).
    schema
        The same Pydantic class the job was started with (checked against the saved schema hash).
    """

    record = session.extract_store.load_batch(job_id)
    if record is None:
        known = ", ".join(r["id"] for r in session.extract_store.batch_records()[:5]) or "none"
        raise UsageError(f"no saved batch job {job_id!r} (recent: {known})")
    fmt = strict_format(schema, many=record["many"])
    if fmt.schema_hash != record["schema_hash"]:
        raise UsageError(
            f"{schema.__name__} is not the schema batch job {job_id} was started with "
            f"({record['schema']}, hash {record['schema_hash']})"
        )
    prepared = Prepared.from_record(session, fmt, record, progress=progress, wait=wait)
    cached_positions = record.get("cached", [])
    found = session.extract_store.get_many([record["keys"][p] for p in cached_positions])
    for position in cached_positions:
        entry = found.get(record["keys"][position])
        if entry is None:
            prepared.results[position] = RowResult(
                status="cancelled", error="its cached answer is no longer in the cache"
            )
            continue
        prepared.results[position] = RowResult(
            status="ok", value=fmt.parse(entry[0]), text=entry[0], response_id=entry[1], from_cache=True
        )
    parts = []
    for saved in record.get("parts", []):
        earlier = [{**attempt, "read": False} for attempt in saved.get("earlier", [])]  # results are not in memory here
        parts.append(Part(**{**saved, "collected": False, "earlier": earlier}))
    job = BatchJob(session, prepared, record, parts)
    job.cached = len(cached_positions)
    return job.wait(progress) if wait else job.start(_background_view(progress))

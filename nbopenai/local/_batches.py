"""``/v1/files`` and ``/v1/batches``: enough of the Batch API to run a batch end to end offline.

Files: multipart upload, retrieve, list, delete, and ``/content`` download. Batches: create, retrieve,
list and cancel. A batch runs on its own thread: ``validating`` (every line is checked: JSON,
unique ``custom_id``, ``POST``, the batch's ``url``, at most 50,000 lines), ``in_progress`` (each
line answered by the demo model through ``generate``), ``finalizing``, then ``completed`` with an
output file (one line per success) and an error file (one line per failure), ``request_counts``
and ``usage`` filled in.

Test controls (``BatchControls``, one per server state, via ``controls(server.state)``):

- ``step_delay``: seconds spent in each state, so a client sees the states go by (default 0);
- ``outcome(kind, after=None)``: what the next batch does: ``"failed"`` (fails validation),
  ``"expired"`` (answers ``after`` lines, default half, then expires: the rest go to the error
  file with ``batch_expired``), or ``"hold"`` (stays ``in_progress`` until ``release()``);
- a fault injected on ``LINE_PATH`` (``server.inject("server_error", path=LINE_PATH)``) makes the
  next line fail with that fault's HTTP error, recorded in the error file.
"""

from __future__ import annotations

import collections
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

from ._errors import ApiError, not_found
from ._responses import generate
from ._routes import Reply, Request, Route, paginate, route
from ._state import State, new_id

__all__ = ["ROUTES", "LINE_PATH", "BatchControls", "controls", "MAX_LINES"]

ROUTES: list[Route] = []
LINE_PATH = "/v1/batches/line"  # not a route: the fault-queue key for failing one batch line
MAX_LINES = 50_000
ENDPOINTS = ("/v1/responses", "/v1/chat/completions")
_TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
_FILE_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
_EXPIRED_MESSAGE = "This request could not be executed before the completion window expired."
_CANCELLED_MESSAGE = "This request was not executed because the batch was cancelled."


@dataclass
class _Batch:
    resource: dict[str, Any]
    lines: list[dict[str, Any]] = field(default_factory=list)
    cancel: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    outcome: tuple[str, int | None] | None = None


class BatchControls:
    """Files, batches, and the knobs tests turn (see the module docstring)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.files: dict[str, dict[str, Any]] = {}
        self.contents: dict[str, bytes] = {}
        self.batches: dict[str, _Batch] = {}
        self.step_delay = 0.0
        self._outcomes: collections.deque[tuple[str, int | None]] = collections.deque()

    def outcome(self, kind: str, *, after: int | None = None, count: int = 1) -> None:
        """Make the next ``count`` batches ``failed``, ``expired`` (after ``after`` lines) or ``hold``."""
        if kind not in ("failed", "expired", "hold"):
            raise ValueError(f"unknown batch outcome {kind!r}; known: failed, expired, hold")
        with self.lock:
            self._outcomes.extend([(kind, after)] * count)

    def take_outcome(self) -> tuple[str, int | None] | None:
        with self.lock:
            return self._outcomes.popleft() if self._outcomes else None

    def release(self) -> None:
        """Let every held batch run."""
        with self.lock:
            batches = list(self.batches.values())
        for batch in batches:
            batch.release.set()

    def add_file(self, content: bytes, filename: str, purpose: str) -> dict[str, Any]:
        resource = {
            "id": "file-" + secrets.token_hex(12),
            "object": "file",
            "bytes": len(content),
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
            "expires_at": None,
            "status_details": None,
        }
        with self.lock:
            self.files[resource["id"]] = resource
            self.contents[resource["id"]] = content
        return resource


def controls(state: State) -> BatchControls:
    """The batch tables and test knobs of a server state (made on first use)."""
    with state.lock:
        found = state.extensions.get(__name__)
        if found is None:
            found = state.extensions[__name__] = BatchControls()
        return found


# ---- files ---------------------------------------------------------------------------------------


def _multipart(request: Request) -> tuple[dict[str, str], tuple[str, bytes] | None]:
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise ApiError(400, "Uploads must be multipart/form-data with 'file' and 'purpose' fields.")
    message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + request.raw)
    fields: dict[str, str] = {}
    upload = None
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True) or b""
        if part.get_filename() is not None or name == "file":
            upload = (part.get_filename() or "upload", payload)
        elif name:
            fields[str(name)] = payload.decode("utf-8", "replace")
    return fields, upload


@route("POST", "/v1/files", ROUTES)
def create_file(request: Request) -> Reply:
    fields, upload = _multipart(request)
    purpose = fields.get("purpose")
    if purpose not in _FILE_PURPOSES:
        raise ApiError(400, f"Invalid value for 'purpose': {purpose!r}.", param="purpose", code="invalid_value")
    if upload is None:
        raise ApiError(400, "Missing the 'file' field.", param="file")
    filename, content = upload
    return Reply(json=controls(request.state).add_file(content, filename, purpose))


def _file(request: Request) -> dict[str, Any]:
    store = controls(request.state)
    with store.lock:
        found = store.files.get(request.params["id"])
    if found is None:
        raise not_found("File", request.params["id"])
    return found


@route("GET", "/v1/files/{id}", ROUTES)
def retrieve_file(request: Request) -> Reply:
    return Reply(json=_file(request))


@route("GET", "/v1/files/{id}/content", ROUTES)
def file_content(request: Request) -> Reply:
    resource = _file(request)
    with controls(request.state).lock:
        content = controls(request.state).contents[resource["id"]]
    jsonl = resource["filename"].endswith(".jsonl")
    return Reply(content=content, content_type="application/jsonl" if jsonl else "application/octet-stream")


@route("DELETE", "/v1/files/{id}", ROUTES)
def delete_file(request: Request) -> Reply:
    resource = _file(request)
    store = controls(request.state)
    with store.lock:
        store.files.pop(resource["id"], None)
        store.contents.pop(resource["id"], None)
    return Reply(json={"id": resource["id"], "object": "file", "deleted": True})


@route("GET", "/v1/files", ROUTES)
def list_files(request: Request) -> Reply:
    store = controls(request.state)
    with store.lock:
        files = [f for f in store.files.values() if request.query.get("purpose") in (None, f["purpose"])]
    return Reply(json=paginate(files, request.query))


# ---- batches -------------------------------------------------------------------------------------


def _new_batch(body: dict[str, Any], endpoint: str) -> dict[str, Any]:
    now = int(time.time())
    return {
        "id": new_id("batch"),
        "object": "batch",
        "endpoint": endpoint,
        "errors": None,
        "input_file_id": body["input_file_id"],
        "completion_window": body["completion_window"],
        "status": "validating",
        "output_file_id": None,
        "error_file_id": None,
        "created_at": now,
        "in_progress_at": None,
        "expires_at": now + 24 * 3600,
        "finalizing_at": None,
        "completed_at": None,
        "failed_at": None,
        "expired_at": None,
        "cancelling_at": None,
        "cancelled_at": None,
        "request_counts": {"total": 0, "completed": 0, "failed": 0},
        "metadata": body.get("metadata") or None,
        "model": None,
        "usage": None,
    }


@route("POST", "/v1/batches", ROUTES)
def create_batch(request: Request) -> Reply:
    body = request.body
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    endpoint = body.get("endpoint")
    if endpoint not in ENDPOINTS:
        raise ApiError(
            400, f"Invalid value for 'endpoint': {endpoint!r}; supported: {', '.join(ENDPOINTS)}.", param="endpoint"
        )
    if body.get("completion_window") != "24h":
        raise ApiError(
            400, "Invalid value for 'completion_window': only '24h' is supported.", param="completion_window"
        )
    store = controls(request.state)
    with store.lock:
        source = store.files.get(body.get("input_file_id") or "")
    if source is None:
        raise not_found("File", str(body.get("input_file_id")), param="input_file_id")
    if source["purpose"] != "batch":
        raise ApiError(400, "The input file must be uploaded with purpose 'batch'.", param="input_file_id")
    batch = _Batch(_new_batch(body, endpoint), outcome=store.take_outcome())
    with store.lock:
        store.batches[batch.resource["id"]] = batch
    created = _snapshot(store, batch)  # before the worker starts: a new batch is always "validating"
    worker = threading.Thread(
        target=_run, args=(request.state, store, batch), name=f"nbopenai-batch-{batch.resource['id'][-8:]}", daemon=True
    )
    worker.start()
    return Reply(json=created)


def _snapshot(store: BatchControls, batch: _Batch) -> dict[str, Any]:
    with store.lock:
        resource = dict(batch.resource)
        resource["request_counts"] = dict(resource["request_counts"])
        return resource


def _batch(request: Request) -> tuple[BatchControls, _Batch]:
    store = controls(request.state)
    with store.lock:
        batch = store.batches.get(request.params["id"])
    if batch is None:
        raise not_found("Batch", request.params["id"])
    return store, batch


@route("GET", "/v1/batches/{id}", ROUTES)
def retrieve_batch(request: Request) -> Reply:
    return Reply(json=_snapshot(*_batch(request)))


@route("POST", "/v1/batches/{id}/cancel", ROUTES)
def cancel_batch(request: Request) -> Reply:
    store, batch = _batch(request)
    with store.lock:
        if batch.resource["status"] not in _TERMINAL and batch.resource["status"] != "cancelling":
            batch.resource.update(status="cancelling", cancelling_at=int(time.time()))
            batch.cancel.set()
            batch.release.set()
    return Reply(json=_snapshot(store, batch))


@route("GET", "/v1/batches", ROUTES)
def list_batches(request: Request) -> Reply:
    store = controls(request.state)
    with store.lock:
        resources = [dict(b.resource) for b in store.batches.values()]
    return Reply(json=paginate(resources, request.query))


# ---- the batch worker ----------------------------------------------------------------------------


def _parse_lines(content: bytes, endpoint: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The input lines, and the validation errors (an empty list when the file is fine)."""
    lines, errors, seen = [], [], set()

    def fail(number: int, message: str, code: str = "invalid_request", param: str | None = None) -> None:
        errors.append({"code": code, "line": number, "message": message, "param": param})

    for number, raw in enumerate(content.decode("utf-8", "replace").splitlines(), 1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            fail(number, "This line is not valid JSON.", "invalid_json")
            continue
        if not isinstance(line, dict) or not isinstance(line.get("custom_id"), str):
            fail(number, "Each line needs a string 'custom_id'.", param="custom_id")
            continue
        if line["custom_id"] in seen:
            fail(
                number,
                f"The custom_id {line['custom_id']!r} appears more than once.",
                "duplicate_custom_id",
                "custom_id",
            )
            continue
        seen.add(line["custom_id"])
        if line.get("method") != "POST":
            fail(number, "Only the POST method is supported.", param="method")
        elif line.get("url") != endpoint:
            fail(
                number,
                f"The url {line.get('url')!r} does not match the batch's endpoint {endpoint!r}.",
                "mismatched_url",
                "url",
            )
        elif not isinstance(line.get("body"), dict) or line["body"].get("stream"):
            fail(number, "Each line needs a JSON object 'body' (without stream).", param="body")
        else:
            lines.append(line)
    if len(lines) > MAX_LINES:
        fail(0, f"The file has {len(lines):,} requests; a batch takes at most {MAX_LINES:,}.", "too_many_requests")
    if not lines and not errors:
        fail(0, "The input file is empty.", "empty_file")
    return lines, errors


def _set(store: BatchControls, batch: _Batch, **changes: Any) -> None:
    with store.lock:
        batch.resource.update(changes)


def _answer(state: State, line: dict[str, Any]) -> tuple[dict[str, Any], bool, dict[str, Any] | None]:
    """One output-or-error line for an input line, whether it succeeded, and its usage."""
    request_id = "req_" + secrets.token_hex(16)
    head = {"id": "batch_req_" + secrets.token_hex(12), "custom_id": line["custom_id"]}
    fault = state.faults.take("POST", LINE_PATH)
    error = fault.error() if fault is not None else None
    if error is None:
        try:
            response = generate(line["body"], state)
        except ApiError as raised:
            error = raised
        else:
            return (
                {**head, "response": {"status_code": 200, "request_id": request_id, "body": response}, "error": None},
                True,
                response.get("usage"),
            )
    return (
        {
            **head,
            "response": {"status_code": error.status, "request_id": request_id, "body": error.body()},
            "error": None,
        },
        False,
        None,
    )


def _not_run(line: dict[str, Any], code: str, message: str) -> dict[str, Any]:
    return {
        "id": "batch_req_" + secrets.token_hex(12),
        "custom_id": line["custom_id"],
        "response": None,
        "error": {"code": code, "message": message},
    }


def _add_usage(total: dict[str, Any] | None, usage: dict[str, Any] | None) -> dict[str, Any] | None:
    if usage is None:
        return total
    total = total or {
        "input_tokens": 0,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 0,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 0,
    }
    total["input_tokens"] += usage.get("input_tokens", 0)
    total["input_tokens_details"]["cached_tokens"] += (usage.get("input_tokens_details") or {}).get("cached_tokens", 0)
    total["output_tokens"] += usage.get("output_tokens", 0)
    total["output_tokens_details"]["reasoning_tokens"] += (usage.get("output_tokens_details") or {}).get(
        "reasoning_tokens", 0
    )
    total["total_tokens"] += usage.get("total_tokens", 0)
    return total


def _write_files(
    store: BatchControls, batch: _Batch, outputs: list[dict[str, Any]], errors: list[dict[str, Any]]
) -> dict[str, Any]:
    batch_id = batch.resource["id"]
    files = {}
    for key, lines, suffix in (("output_file_id", outputs, "output"), ("error_file_id", errors, "error")):
        if lines:
            content = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode()
            files[key] = store.add_file(content, f"{batch_id}_{suffix}.jsonl", "batch_output")["id"]
    return files


def _run(state: State, store: BatchControls, batch: _Batch) -> None:
    """validating -> in_progress -> finalizing -> completed (or failed, expired, cancelled)."""
    delay = store.step_delay
    time.sleep(delay)
    with store.lock:
        content = store.contents.get(batch.resource["input_file_id"], b"")
    lines, problems = _parse_lines(content, batch.resource["endpoint"])
    kind, after = batch.outcome or (None, None)
    if kind == "failed" and not problems:
        problems = [
            {
                "code": "nbopenai_demo_failure",
                "line": None,
                "message": "This batch was made to fail (offline server test control).",
                "param": None,
            }
        ]
    if problems:
        _set(store, batch, status="failed", failed_at=int(time.time()), errors={"object": "list", "data": problems})
        return
    model = lines[0]["body"].get("model")
    _set(
        store,
        batch,
        status="in_progress",
        in_progress_at=int(time.time()),
        model=model,
        request_counts={"total": len(lines), "completed": 0, "failed": 0},
    )
    if kind == "hold":
        batch.release.wait()
    time.sleep(delay)
    stop_at = (len(lines) // 2 if after is None else after) if kind == "expired" else len(lines)
    outputs: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    usage = None
    for number, line in enumerate(lines):
        if batch.cancel.is_set():
            errors.extend(_not_run(rest, "batch_cancelled", _CANCELLED_MESSAGE) for rest in lines[number:])
            break
        if number >= stop_at:
            errors.extend(_not_run(rest, "batch_expired", _EXPIRED_MESSAGE) for rest in lines[number:])
            break
        answer, succeeded, line_usage = _answer(state, line)
        (outputs if succeeded else errors).append(answer)
        usage = _add_usage(usage, line_usage)
        with store.lock:
            counts = batch.resource["request_counts"]
            counts["completed" if succeeded else "failed"] += 1
    # A cancelled or expired batch ends here, with the files of what it finished and its own `*_at` time.
    ended = "cancelled" if batch.cancel.is_set() else "expired" if kind == "expired" else None
    if ended is not None:
        files = _write_files(store, batch, outputs, errors)
        _set(store, batch, **files, status=ended, **{f"{ended}_at": int(time.time())}, usage=usage)
        return
    _set(store, batch, status="finalizing", finalizing_at=int(time.time()))
    time.sleep(delay)
    _set(
        store,
        batch,
        **_write_files(store, batch, outputs, errors),
        status="completed",
        completed_at=int(time.time()),
        usage=usage,
    )

"""The offline server is safe by default, and the ledger file is private and transactional.

What ``tests/test_local_server.py`` already checks is not repeated here: malformed JSON (400),
an oversized ``Content-Length`` (413), a client leaving mid-stream, and refusing ``0.0.0.0`` /
a public address. ``tests/test_usage.py`` already checks the ledger's owner-only file, WAL file
and new folders, many threads and processes writing at once, and corruption recovery.

Added here: where the server binds by default (the API, ``Session(local=True)``, the command
line), more addresses it refuses, body bounds for chunked uploads and absurd lengths, broken
framing (negative lengths, bad chunks, JSON nested too deep, truncated bodies), random bytes and
random JSON from hypothesis, many abrupt disconnects (no connection left behind), and for the
ledger: private files under a permissive umask and ``-shm`` too, and no partial row after a
writer is killed mid-write.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
import warnings

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nbopenai
from nbopenai._core import _store
from nbopenai._core._store import Migrations, open_database
from nbopenai._extract._cache import ExtractStore
from nbopenai._ledger._usage import Ledger, UsageRecord
from nbopenai.local import LocalServer, start
from nbopenai.local._state import Config

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# ---- binding --------------------------------------------------------------------------------------


def test_binds_loopback_by_default():
    assert LocalServer().host == "127.0.0.1"
    with start() as server:
        assert server._httpd.server_address[0] == "127.0.0.1"
        assert server.base_url.startswith("http://127.0.0.1:")


def test_the_session_demo_server_binds_loopback():
    with nbopenai.Session(local=True, ledger_path=":memory:") as session:
        assert session.local_server._httpd.server_address[0] == "127.0.0.1"
        assert session.settings.base_url.startswith("http://127.0.0.1:")


@pytest.mark.parametrize("host", ["", "0.0.0.0", "::", "10.1.2.3", "169.254.1.1", "example.com", "127.0.0.1.nip.io"])
def test_refuses_any_other_interface_unless_asked(host):
    with pytest.raises(ValueError, match="allow_remote"):
        LocalServer(host=host)
    LocalServer(host=host, allow_remote=True)  # the explicit opt-in (not started: nothing is bound)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1"])
def test_loopback_addresses_are_allowed(host):
    assert LocalServer(host=host).host == host


def test_the_command_line_refuses_a_public_host_and_defaults_to_loopback():
    refused = subprocess.run([sys.executable, "-m", "nbopenai.local", "--host", "0.0.0.0", "--port", "0"],
                             capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode == 2 and "refusing to bind" in refused.stderr
    child = subprocess.Popen([sys.executable, "-m", "nbopenai.local", "--port", "0"], stdout=subprocess.PIPE, text=True)
    try:
        url = child.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
    finally:
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=30)


# ---- bounded, well-framed requests -----------------------------------------------------------------


def _send(server, data: bytes, *, read: bool = True) -> bytes:
    """Send raw bytes on a fresh connection; return what came back before the server closed or paused."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(data)
        if not read:
            return b""
        sock.shutdown(socket.SHUT_WR)  # nothing more is coming: a server still waiting for bytes answers now
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def _post(headers: bytes, body: bytes = b"") -> bytes:
    return b"POST /v1/responses HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + headers + b"\r\n" + body


def _status(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/1.") else 0


def _error_envelope(reply: bytes) -> dict:
    body = json.loads(reply.split(b"\r\n\r\n", 1)[1])
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def assert_still_serving(server) -> None:
    client = httpx.Client(base_url=server.url, timeout=10)
    reply = client.post("/v1/responses", json={"model": "nbopenai-local", "input": "still there?"})
    assert reply.status_code == 200 and reply.json()["status"] == "completed"
    client.close()


def test_request_bodies_are_bounded_by_default():
    assert 0 < Config().max_body_bytes <= 64 * 1024 * 1024


def test_a_huge_claimed_length_is_refused_without_reading_it(local_server):
    reply = _send(local_server, _post(b"Content-Length: 10000000000\r\n"))
    assert _status(reply) == 413 and _error_envelope(reply)["code"] == "request_too_large"
    assert_still_serving(local_server)


def test_chunked_bodies_are_bounded_too(local_server):
    local_server.configure(max_body_bytes=1000)
    chunk = b"x" * 800
    body = b"%x\r\n%s\r\n" % (len(chunk), chunk) * 2 + b"0\r\n\r\n"
    reply = _send(local_server, _post(b"Transfer-Encoding: chunked\r\n", body))
    assert _status(reply) == 413
    reply = _send(local_server, _post(b"Transfer-Encoding: chunked\r\n", b"ffffffffffffffffffff\r\n"))
    assert _status(reply) == 413
    assert_still_serving(local_server)


@pytest.mark.parametrize(
    "headers, body",
    [
        (b"Content-Length: -1\r\n", b"{}"),  # read(-1) would wait for the client to hang up
        (b"Content-Length: twelve\r\n", b"{}"),
        (b"Transfer-Encoding: chunked\r\n", b"zz\r\n{}\r\n0\r\n\r\n"),  # a chunk size that is not hex
        (b"Content-Length: 200001\r\n", b"[" * 100000 + b"]" * 100001),  # nested past the parser's recursion limit
        (b"Content-Length: 4\r\n", b"\xff\xfe\xfd\xfc"),  # not UTF-8
        (b"Content-Length: 2\r\n", b"[]"),
        (b"Content-Length: 4\r\n", b"null"),
        (b"Content-Length: 7\r\n", b'"text"'),
    ],
    ids=["negative-length", "word-length", "bad-chunk", "deep-json", "not-utf8", "list", "null", "string"],
)
def test_broken_framing_gets_a_400_in_the_api_envelope(local_server, headers, body):
    reply = _send(local_server, _post(headers, body))
    assert _status(reply) == 400, reply[:200]
    assert _error_envelope(reply)["type"] == "invalid_request_error"
    assert_still_serving(local_server)


def test_a_body_cut_short_then_a_disconnect(local_server):
    _send(local_server, _post(b"Content-Length: 5000\r\n", b'{"model": "nbopenai-local", "inp'), read=False)
    _send(local_server, b"POST /v1/responses HTTP/1.1\r\nHost: x\r\nContent-Le", read=False)
    _send(local_server, b"\x16\x03\x01\x00\xa5\x01\x00")  # a TLS hello to a plain-HTTP port
    assert_still_serving(local_server)


def test_oversized_headers_get_an_error_not_a_crash(local_server):
    reply = _send(local_server, b"GET /v1/models HTTP/1.1\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n")
    assert _status(reply) in (400, 431)
    assert_still_serving(local_server)


@FUZZ
@given(data=st.binary(max_size=2048))
def test_random_bytes_never_take_the_server_down(local_server, data):
    reply = _send(local_server, data)
    assert reply == b"" or _status(reply) >= 400 or reply.startswith(b"{")  # HTTP/0.9-style lines get a bare body
    assert_still_serving(local_server)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
response_keys = st.sampled_from(["model", "input", "instructions", "previous_response_id", "stream", "store",
                                 "max_output_tokens", "tools", "text", "reasoning", "background", "metadata",
                                 "temperature", "truncation", "conversation", "tool_choice"])


@FUZZ
@given(body=st.one_of(json_values, st.dictionaries(response_keys, json_values, max_size=6)),
       path=st.sampled_from(
           ["/v1/responses", "/v1/responses/input_tokens", "/v1/chat/completions", "/v1/conversations"]
       ))
def test_random_json_gets_an_answer_in_the_api_shape(local_server, body, path):
    with httpx.Client(base_url=local_server.url, timeout=10) as client:
        reply = client.post(path, json=body)
    if reply.status_code >= 400:
        assert set(reply.json()["error"]) == {"message", "type", "param", "code"}
    assert_still_serving(local_server)


@pytest.mark.parametrize(
    "body",
    [
        {"model": "nbopenai-local", "input": "hi", "max_output_tokens": "abc"},
        {"model": "nbopenai-local", "input": "hi", "tools": "x"},
        {"model": "nbopenai-local", "input": "hi", "text": 5},
        {"model": "nbopenai-local", "input": "hi", "tools": [{"type": "function", "name": 5}]},
    ],
    ids=["max_output_tokens", "tools", "text", "tool-name"],
)
def test_wrongly_typed_fields_get_a_400(local_server, body):
    with httpx.Client(base_url=local_server.url, timeout=10) as client:
        assert client.post("/v1/responses", json=body).status_code == 400


# ---- abrupt disconnects -----------------------------------------------------------------------------


def _open_connections(server) -> int:
    with server._httpd._connections_lock:
        return len(server._httpd._connections)


def test_many_abrupt_disconnects_leave_no_connection_behind():
    with start(chunk_delay=0.002) as server:
        body = json.dumps({"model": "nbopenai-local", "input": "[[words:3000]]", "stream": True}).encode()
        request = _post(b"Content-Length: %d\r\n" % len(body), body)
        for _ in range(30):
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
                sock.sendall(request)
                assert sock.recv(64).startswith(b"HTTP/1.1 200")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
        deadline = time.monotonic() + 30
        while _open_connections(server) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _open_connections(server) == 0
        server.configure(chunk_delay=0.0)
        assert_still_serving(server)


# ---- the ledger file ---------------------------------------------------------------------------------


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_ledger_files_are_private_even_under_a_permissive_umask(tmp_path, monkeypatch, local_server):
    home = tmp_path / "home" / "nbopenai"
    monkeypatch.setenv("NBOPENAI_HOME", str(home))
    old = os.umask(0)
    try:
        with nbopenai.Session(base_url=local_server.base_url, model="nbopenai-local") as session:
            session.ask("hello")
            path = session.settings.resolved_ledger_path
            assert path == str(home / "usage.sqlite3")
            files = [path, path + "-wal", path + "-shm"]
            for file in files:
                assert os.stat(file).st_mode & 0o777 == 0o600, file
            assert os.stat(home).st_mode & 0o777 == 0o700
    finally:
        os.umask(old)


KILLED_WRITER = textwrap.dedent(
    """
    import sys
    from nbopenai._ledger._usage import Ledger, UsageRecord
    ledger = Ledger(sys.argv[1])
    i = 0
    while True:
        ledger.record(UsageRecord(float(i), "killed", "ask", "nbopenai-local", "completed", cell_id=str(i),
                                  input_tokens=i, output_tokens=i, total_tokens=2 * i, error="x" * 2000))
        i += 1
    """
)


def test_a_writer_killed_mid_write_leaves_whole_rows_only(tmp_path):
    path = tmp_path / "usage.sqlite3"
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(path)])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if path.exists():
                try:
                    with sqlite3.connect(path, timeout=10) as conn:
                        if conn.execute("SELECT COUNT(*) FROM usage").fetchone()[0] >= 200:
                            break
                except sqlite3.OperationalError:
                    pass
            time.sleep(0.02)
    finally:
        writer.kill()  # SIGKILL: no cleanup, possibly inside a transaction
        writer.wait(timeout=30)

    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "corrupt, moved aside"
        with Ledger(path) as ledger:
            rows = ledger.records()
    assert len(rows) >= 200
    assert [r.cell_id for r in rows] == [str(i) for i in range(len(rows))]  # a prefix, no gap, no half row
    assert all(r.total_tokens == 2 * r.input_tokens and len(r.error) == 2000 for r in rows)


def test_one_bad_row_does_not_block_the_rows_after_it(tmp_path):
    path = tmp_path / "usage.sqlite3"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Ledger(path) as ledger:
            ledger.record(UsageRecord(1.0, "s", "ask", None, "completed"))  # type: ignore[arg-type]  # model NULL
            ledger.record(UsageRecord(2.0, "s", "ask", "nbopenai-local", "completed"))
    with Ledger(path) as ledger:
        assert [r.time for r in ledger.records()] == [2.0]


# ---- every SQLite file the package writes (nbopenai/_core/_store.py) ---------------------------

EXTRACT_SETUP = """
from pydantic import BaseModel

class Person(BaseModel):
    name: str
    age: int | None
"""


def _person():
    namespace: dict = {}
    exec(EXTRACT_SETUP, namespace)
    return namespace["Person"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_extraction_run_first_keeps_the_data_folder_and_its_cache_private(tmp_path, monkeypatch, local_server):
    home = tmp_path / "home" / "nbopenai"
    monkeypatch.setenv("NBOPENAI_HOME", str(home))
    old = os.umask(0o022)
    try:
        with nbopenai.Session(base_url=local_server.base_url, model="nbopenai-local") as session:
            frame = nbopenai.extract(_person(), ["Ada Lovelace is 36."], session=session, progress=False)
            assert frame["_status"].tolist() == ["ok"]
            cache = home / "extract.sqlite3"
            assert os.stat(home).st_mode & 0o777 == 0o700
            assert os.stat(home.parent).st_mode & 0o777 == 0o700  # every folder it had to make
            for file in (cache, f"{cache}-wal", f"{cache}-shm"):
                assert os.stat(file).st_mode & 0o777 == 0o600, file
    finally:
        os.umask(old)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_a_cache_an_older_version_left_readable_is_made_private(tmp_path):
    path = tmp_path / "extract.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE answers (key TEXT PRIMARY KEY, text TEXT NOT NULL, response_id TEXT, created REAL NOT NULL)"
        )
        conn.execute("CREATE TABLE batch_jobs (id TEXT PRIMARY KEY, created REAL NOT NULL, record TEXT NOT NULL)")
        conn.execute("INSERT INTO answers VALUES ('k', '{}', NULL, 1.0)")
        conn.execute("""INSERT INTO batch_jobs VALUES ('batch-1', 1.0, '{"id": "batch-1"}')""")
    os.chmod(path, 0o644)
    store = ExtractStore(str(path))
    try:
        assert store.load_batch("batch-1") == {"id": "batch-1"}  # adopted: its batch records are kept
        assert store.get_many(["k"]) == {}  # answers under the old keys could never match again: dropped
        assert os.stat(path).st_mode & 0o777 == 0o600
    finally:
        store.close()


def test_the_extraction_cache_waits_while_another_kernel_sets_the_file_up(tmp_path, monkeypatch):
    path = tmp_path / "extract.sqlite3"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute(
        "CREATE TABLE answers (key TEXT PRIMARY KEY, text TEXT NOT NULL, response_id TEXT, created REAL NOT NULL)"
    )
    other.execute("BEGIN IMMEDIATE")  # the other kernel is still creating it: switching to WAL fails at once

    def other_kernel_finishes(seconds):
        if other.in_transaction:
            other.execute("COMMIT")

    monkeypatch.setattr(_store, "_pause", other_kernel_finishes)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "carrying on without it" would be a warning
        store = ExtractStore(str(path))
        store.put_many([("k", "{}", None)])
        assert len(store) == 1
        assert store._db.run(lambda conn: conn.execute("PRAGMA journal_mode").fetchone()) == ("wal",)
    store.close()
    other.close()


def test_a_corrupt_extraction_cache_is_moved_aside_and_a_fresh_one_started(tmp_path):
    path = tmp_path / "extract.sqlite3"
    garbage = b"not a database at all " * 400
    path.write_bytes(garbage)
    store = ExtractStore(str(path))
    with pytest.warns(RuntimeWarning, match="extraction cache at .* was corrupt"):
        store.put_many([("k", "{}", "resp_1")])
    try:
        assert store.get_many(["k"]) == {"k": ("{}", "resp_1")}
        assert store.notice is not None and "started a fresh one" in store.notice
        aside = [p for p in tmp_path.iterdir() if p.name.startswith("extract.sqlite3.corrupt-")]
        assert len(aside) == 1 and aside[0].read_bytes() == garbage
    finally:
        store.close()


def test_migrations_run_once_each_in_order_and_a_newer_files_extra_ones_are_left_alone(tmp_path):
    ran = []
    schema = Migrations()

    @schema
    def m001_items(conn):
        ran.append("m001")
        conn.execute("CREATE TABLE IF NOT EXISTS items (name TEXT)")

    path = tmp_path / "items.sqlite3"
    first = open_database(path, migrations=schema, label="items")
    first.write(lambda conn: conn.execute("INSERT INTO items VALUES ('a')"))
    first.write(lambda conn: conn.execute("INSERT INTO _migrations VALUES ('m900_from_a_newer_version', 0)"))
    first.close()

    @schema
    def m002_colour(conn):
        ran.append("m002")
        conn.execute("ALTER TABLE items ADD COLUMN colour TEXT NOT NULL DEFAULT 'red'")

    for _ in range(2):
        again = open_database(path, migrations=schema, label="items")
        assert again.run(lambda conn: conn.execute("SELECT name, colour FROM items").fetchall()) == [("a", "red")]
        again.close()
    assert ran == ["m001", "m002"]
    with pytest.raises(ValueError, match="defined twice"):
        schema(m002_colour)

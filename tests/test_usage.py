import dataclasses
import datetime as dt
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import warnings

import numpy as np
import pandas as pd
import pytest
from openai.types.responses import ResponseUsage

from nbopenai._core._errors import UsageError
from nbopenai._ledger import _usage
from nbopenai._ledger._prices import PriceTable
from nbopenai._ledger._usage import Ledger, Totals, UsageRecord
from nbopenai._turns._answer import Usage

PRICES = PriceTable.with_prices({"priced": {"input": 1.0, "cached_input": 0.5, "output": 2.0}})
T0 = 1_750_000_000.0  # 2025-06-15


def rec(**fields):
    values = dict(time=T0, session_id="s1", kind="ask", model="priced", status="completed")
    return UsageRecord(**{**values, **fields})


@pytest.fixture
def ledger(tmp_path):
    with Ledger(tmp_path / "usage.sqlite3") as ledger:
        yield ledger


def test_round_trip_survives_reopening(tmp_path):
    path = tmp_path / "usage.sqlite3"
    written = [
        rec(time=T0, thread="t", cell_id="c1", response_id="resp_1", input_tokens=10, cached_tokens=4,
            output_tokens=5, reasoning_tokens=2, total_tokens=15, latency_s=1.5, ttft_s=0.25, cost_usd=0.5, attempt=2),
        rec(time=T0 + 1, status="error", error="boom", cost_usd=None),
    ]
    with Ledger(path) as ledger:
        for row in written:
            ledger.record(row)
    with Ledger(path) as reopened:
        assert reopened.records() == written


def test_memory_ledger(recwarn):
    with Ledger() as ledger:
        ledger.record(rec())
        assert ledger.records() == [rec()]
    assert ledger.path == ":memory:"
    assert not recwarn.list


def test_records_come_oldest_first(ledger):
    for t in (T0 + 2, T0, T0 + 1):
        ledger.record(rec(time=t))
    assert [r.time for r in ledger.records()] == [T0, T0 + 1, T0 + 2]


def test_filters_by_session_model_thread_and_kind(ledger):
    rows = [
        rec(session_id="a", model="m1", thread="x", kind="ask"),
        rec(session_id="a", model="m2", thread="y", kind="extract"),
        rec(session_id="b", model="m1", thread=None, kind="ask"),
    ]
    for row in rows:
        ledger.record(row)
    assert ledger.records(session_id="a") == rows[:2]
    assert ledger.records(model="m1") == [rows[0], rows[2]]
    assert ledger.records(thread="y") == [rows[1]]
    assert ledger.records(kind="ask", session_id="b") == [rows[2]]
    assert ledger.records(session_id="c") == []


@pytest.fixture
def recent(ledger):
    now = time.time()
    ages_min = {"3d": 3 * 24 * 60, "90m": 90, "45m": 45, "10m": 10}
    for label, minutes in ages_min.items():
        ledger.record(rec(time=now - minutes * 60, cell_id=label))
    return ledger, now


@pytest.mark.parametrize(
    "since, expected",
    [
        ("1h", ["45m", "10m"]),
        ("30m", ["10m"]),
        ("2d", ["90m", "45m", "10m"]),
        ("1w", ["3d", "90m", "45m", "10m"]),
        (" 2 H ", ["90m", "45m", "10m"]),
    ],
)
def test_since_duration(recent, since, expected):
    ledger, _ = recent
    assert [r.cell_id for r in ledger.records(since=since)] == expected


def test_since_epoch_and_datetime(recent):
    ledger, now = recent
    assert [r.cell_id for r in ledger.records(since=now - 50 * 60)] == ["45m", "10m"]
    aware = dt.datetime.fromtimestamp(now - 100 * 60, dt.timezone.utc)
    assert [r.cell_id for r in ledger.records(since=aware)] == ["90m", "45m", "10m"]
    naive_local = dt.datetime.fromtimestamp(now - 20 * 60)
    assert [r.cell_id for r in ledger.records(since=naive_local)] == ["10m"]


def test_since_iso_strings_and_dates(ledger):
    midnight = dt.datetime(2025, 1, 2).timestamp()  # local midnight, like a naive ISO date
    for label, t in {"before": midnight - 1, "at": midnight, "after": midnight + 3600}.items():
        ledger.record(rec(time=t, cell_id=label))
    assert [r.cell_id for r in ledger.records(since="2025-01-02")] == ["at", "after"]
    assert [r.cell_id for r in ledger.records(since=dt.date(2025, 1, 2))] == ["at", "after"]
    assert [r.cell_id for r in ledger.records(since="2025-01-02T00:30")] == ["after"]
    utc = dt.datetime.fromtimestamp(midnight, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert [r.cell_id for r in ledger.records(since=utc)] == ["at", "after"]


@pytest.mark.parametrize("since", ["yesterday", "1y", "", True])
def test_unreadable_since_is_a_usage_error(ledger, since):
    with pytest.raises(UsageError):
        ledger.records(since=since)


def test_to_dataframe_columns_and_dtypes(ledger):
    ledger.record(rec(thread="t", input_tokens=3, total_tokens=3, latency_s=0.5, cost_usd=0.25))
    ledger.record(rec(time=T0 + 1, model="unpriced", cost_usd=None))
    frame = ledger.to_dataframe()
    assert list(frame.columns) == [f.name for f in dataclasses.fields(UsageRecord)]
    assert str(frame["time"].dtype) in {"datetime64[ns, UTC]", "datetime64[us, UTC]"}
    assert frame["time"].iloc[0] == pd.Timestamp(T0, unit="s", tz="UTC")
    for name in ("session_id", "kind", "model", "status", "thread", "cell_id", "response_id", "error"):
        assert isinstance(frame[name].dtype, pd.StringDtype), name
    for name in ("input_tokens", "cached_tokens", "output_tokens", "reasoning_tokens", "total_tokens", "attempt"):
        assert frame[name].dtype == "Int64", name
    for name in ("latency_s", "ttft_s", "cost_usd"):
        assert frame[name].dtype == "Float64", name
    assert frame["cost_usd"].isna().tolist() == [False, True]
    assert frame["thread"].isna().tolist() == [False, True]


def test_empty_dataframe_keeps_columns_and_dtypes(ledger):
    frame = ledger.to_dataframe()
    assert frame.empty
    assert list(frame.columns) == [f.name for f in dataclasses.fields(UsageRecord)]
    assert frame["input_tokens"].dtype == "Int64" and frame["cost_usd"].dtype == "Float64"
    assert ledger.summary().empty


def test_dataframe_filters(ledger):
    ledger.record(rec(session_id="a"))
    ledger.record(rec(session_id="b"))
    assert ledger.to_dataframe(session_id="b")["session_id"].tolist() == ["b"]


def test_summary_groups_by_model_and_thread(ledger):
    ledger.record(
        rec(model="m1", thread="t", input_tokens=10, output_tokens=1, total_tokens=11, cost_usd=0.1, latency_s=1.0,
            ttft_s=0.2)
    )
    ledger.record(
        rec(model="m1", thread="t", input_tokens=20, output_tokens=2, total_tokens=22, cost_usd=0.2, latency_s=3.0)
    )
    ledger.record(rec(model="m1", thread=None, input_tokens=5, total_tokens=5, cost_usd=0.05))
    ledger.record(rec(model="m2", thread="t", input_tokens=7, total_tokens=7, cost_usd=0.3, latency_s=2.0))
    ledger.record(rec(model="m2", thread="t", input_tokens=8, total_tokens=8, cost_usd=None))
    table = ledger.summary().set_index(["model", "thread"])
    assert table.loc[("m1", "t"), "calls"] == 2
    assert table.loc[("m1", "t"), "input_tokens"] == 30
    assert table.loc[("m1", "t"), "total_tokens"] == 33
    assert table.loc[("m1", "t"), "cost_usd"] == pytest.approx(0.3)
    assert table.loc[("m1", "t"), "cost_complete"]
    assert table.loc[("m1", "t"), "mean_latency_s"] == pytest.approx(2.0)
    assert table.loc[("m1", "t"), "mean_ttft_s"] == pytest.approx(0.2)
    no_thread = ledger.summary().query("model == 'm1' and thread.isna()")
    assert no_thread["calls"].tolist() == [1] and no_thread["cost_usd"].tolist() == [pytest.approx(0.05)]
    assert table.loc[("m2", "t"), "calls"] == 2
    assert pd.isna(table.loc[("m2", "t"), "cost_usd"])
    assert not table.loc[("m2", "t"), "cost_complete"]
    assert list(ledger.summary().columns) == [
        "model",
        "thread",
        "calls",
        "input_tokens",
        "cached_tokens",
        "output_tokens",
        "reasoning_tokens",
        "total_tokens",
        "cost_usd",
        "cost_complete",
        "mean_latency_s",
        "mean_ttft_s",
    ]


def test_totals(ledger):
    ledger.record(
        rec(
            session_id="a",
            input_tokens=10,
            cached_tokens=2,
            output_tokens=5,
            reasoning_tokens=1,
            total_tokens=15,
            cost_usd=0.5,
        )
    )
    ledger.record(rec(session_id="a", input_tokens=1, total_tokens=1, cost_usd=0.25))
    ledger.record(rec(session_id="b", model="unpriced", input_tokens=100, total_tokens=100, cost_usd=None))
    assert ledger.totals(session_id="a") == Totals(2, 11, 2, 5, 1, 16, 0.75, True)
    assert ledger.totals(session_id="b") == Totals(1, 100, 0, 0, 0, 100, 0.0, False)
    assert ledger.totals() == Totals(3, 111, 2, 5, 1, 116, 0.75, False)
    assert ledger.totals(session_id="nobody") == Totals()


def test_totals_of_records_adds_like_the_ledger():
    rows = [rec(input_tokens=1, total_tokens=1, cost_usd=0.5), rec(input_tokens=2, total_tokens=2, cost_usd=None)]
    assert Totals.of(rows) == Totals(2, 3, 0, 0, 0, 3, 0.5, False)
    assert Totals.of(rows[:1]) + Totals.of(rows[1:]) == Totals.of(rows)


def build(usage=None, **fields):
    values = dict(prices=PRICES, started=T0, session_id="s", kind="ask", model="priced", status="completed")
    return UsageRecord.build(usage=usage, **{**values, **fields})


def test_build_reads_an_openai_usage_object():
    usage = ResponseUsage(
        input_tokens=1_000,
        input_tokens_details={"cached_tokens": 400, "cache_write_tokens": 0},
        output_tokens=300,
        output_tokens_details={"reasoning_tokens": 100},
        total_tokens=1_300,
    )
    row = build(Usage.from_api(usage))
    assert (row.input_tokens, row.cached_tokens, row.output_tokens, row.reasoning_tokens, row.total_tokens) == (
        1000,
        400,
        300,
        100,
        1300,
    )
    # 600 at $1 + 400 at $0.50 + 300 at $2 (reasoning already inside output), per 1M.
    assert row.cost_usd == pytest.approx((600 * 1.0 + 400 * 0.5 + 300 * 2.0) / 1e6)
    assert row.time == T0


def test_build_fills_the_total_and_prices_a_batch_at_half():
    row = build(Usage(input=10, output=5), kind="batch", price_factor=0.5)
    assert (row.input_tokens, row.cached_tokens, row.total_tokens) == (10, 0, 15)
    assert row.cost_usd == pytest.approx((10 * 1.0 + 5 * 2.0) / 1e6 / 2)


def test_build_unknown_model_has_no_cost():
    row = build(Usage(input=10), model="mystery")
    assert row.cost_usd is None and row.input_tokens == 10


def test_build_without_usage():
    assert build(None, status="rate_limited").cost_usd == 0.0
    # A stopped call may have been billed for tokens nobody reported: unknown, not zero.
    assert build(None, status="interrupted").cost_usd is None
    assert build(None, status="cancelled").cost_usd is None
    estimated = build(Usage(input=1_000_000, estimated=True), status="interrupted")
    assert estimated.cost_usd == pytest.approx(1.0) and estimated.total_tokens == 1_000_000


def test_a_new_optional_column_gets_a_dtype():
    # Keyed by type, not by annotation text: `int | None` or `bool` columns need no new entry.

    def dtype(values, hint):
        return str(_usage._pandas_column(pd, np.array(values, dtype=object), hint).dtype)

    assert dtype([1, None], int | None) == "Int64" and dtype([True, None], bool | None) == "boolean"
    assert dtype(["a", None], str | None) == "string" and dtype([1.5], float) == "Float64"


def test_concurrent_threads_lose_no_row(tmp_path):
    path = tmp_path / "usage.sqlite3"
    ledgers = [Ledger(path) for _ in range(2)]  # two kernels' worth of connections as well as threads
    start = threading.Barrier(8)

    def write(worker):
        start.wait()
        for i in range(200):
            ledgers[worker % 2].record(rec(session_id=f"w{worker}", cell_id=str(i)))

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fallback to memory would warn
        threads = [threading.Thread(target=write, args=(w,)) for w in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    for ledger in ledgers:
        ledger.close()
    with Ledger(path) as ledger:
        rows = ledger.records()
    assert len(rows) == 1600
    assert {(r.session_id, r.cell_id) for r in rows} == {(f"w{w}", str(i)) for w in range(8) for i in range(200)}


WRITER = textwrap.dedent(
    """
    import sys, warnings
    warnings.simplefilter("error")
    from nbopenai._ledger._usage import Ledger, UsageRecord
    path, name = sys.argv[1], sys.argv[2]
    ledger = Ledger(path)
    print("ready", flush=True)
    sys.stdin.readline()
    for i in range(500):
        ledger.record(UsageRecord(1.0 + i, name, "ask", "m", "completed", cell_id=str(i)))
    ledger.close()
    """
)


def test_concurrent_processes_lose_no_row(tmp_path):
    path = tmp_path / "usage.sqlite3"
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("p1", "p2")
    ]
    for writer in writers:
        assert writer.stdout.readline().strip() == "ready"
    for writer in writers:  # both are open before either writes, so they write at the same time
        writer.stdin.write("go\n")
        writer.stdin.flush()
    for writer in writers:
        _, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err
    with Ledger(path) as ledger:
        rows = ledger.records()
    assert len(rows) == 1000
    assert {(r.session_id, r.cell_id) for r in rows} == {(p, str(i)) for p in ("p1", "p2") for i in range(500)}


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_file_and_new_folders_are_private(tmp_path):
    path = tmp_path / "new" / "deeper" / "usage.sqlite3"
    with Ledger(path) as ledger:
        ledger.record(rec())
        assert os.stat(path).st_mode & 0o777 == 0o600
        assert os.stat(f"{path}-wal").st_mode & 0o777 == 0o600
        assert os.stat(path.parent).st_mode & 0o777 == 0o700
        assert os.stat(path.parent.parent).st_mode & 0o777 == 0o700


def test_schema_is_versioned_and_matches_the_record(ledger):
    with sqlite3.connect(ledger.path) as conn:
        assert [name for (name,) in conn.execute("SELECT name FROM _migrations")] == _usage._SCHEMA.names
        columns = [row[1] for row in conn.execute("PRAGMA table_info(usage)")]
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert columns == ["id"] + [f.name for f in dataclasses.fields(UsageRecord)]


def test_corrupt_file_at_open_is_moved_aside(tmp_path):
    path = tmp_path / "usage.sqlite3"
    garbage = b"this is not a database " * 300
    path.write_bytes(garbage)
    with pytest.warns(RuntimeWarning, match="was corrupt"):
        ledger = Ledger(path)
    with ledger:
        assert ledger.notice is not None and str(path) in ledger.notice and "started a fresh one" in ledger.notice
        aside = [p for p in tmp_path.iterdir() if p.name.startswith("usage.sqlite3.corrupt-")]
        assert len(aside) == 1 and aside[0].read_bytes() == garbage and aside[0].name in ledger.notice
        ledger.record(rec())
        assert ledger.records() == [rec()]
    with Ledger(path) as reopened:
        assert reopened.records() == [rec()] and reopened.notice is None


def _corrupt_usage_table(path):
    with sqlite3.connect(path) as conn:
        root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'usage'").fetchone()[0]
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    with open(path, "r+b") as f:
        f.seek((root - 1) * page_size)
        f.write(b"\xff" * page_size)


def test_corruption_found_after_open_is_moved_aside(tmp_path):
    path = tmp_path / "usage.sqlite3"
    with Ledger(path) as ledger:
        ledger.record(rec())
    _corrupt_usage_table(path)
    with Ledger(path) as ledger:
        assert ledger.notice is None  # the header is sound: nothing to see until the table is read
        with pytest.warns(RuntimeWarning, match="was corrupt"):
            ledger.record(rec(cell_id="after"))
        assert ledger.notice is not None
        assert [r.cell_id for r in ledger.records()] == ["after"]
    assert any(p.name.startswith("usage.sqlite3.corrupt-") for p in tmp_path.iterdir())


def _move_aside(path, aside):
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(f"{path}{suffix}"):
            os.replace(f"{path}{suffix}", f"{aside}{suffix}")


def test_writes_follow_the_path_when_another_kernel_starts_a_fresh_file(tmp_path):
    path = tmp_path / "usage.sqlite3"
    with Ledger(path) as ours:
        ours.record(rec(cell_id="before"))
        _move_aside(path, tmp_path / "old.sqlite3")  # what another kernel does with a corrupt file
        with Ledger(path) as theirs:
            ours.record(rec(cell_id="after"))
            assert [r.cell_id for r in theirs.records()] == ["after"]
            assert [r.cell_id for r in ours.records()] == ["after"]


def test_file_replaced_by_garbage_while_open_is_moved_aside(tmp_path):
    path = tmp_path / "usage.sqlite3"
    with Ledger(path) as ledger:
        ledger.record(rec(cell_id="before"))
        _move_aside(path, tmp_path / "old.sqlite3")
        path.write_bytes(os.urandom(8192))
        with pytest.warns(RuntimeWarning, match="was corrupt"):
            ledger.record(rec(cell_id="after"))
        assert ledger.notice is not None
        assert [r.cell_id for r in ledger.records()] == ["after"]


def test_unwritable_location_keeps_rows_in_memory(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.warns(RuntimeWarning, match="usage is kept in memory"):
        ledger = Ledger(blocker / "usage.sqlite3")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once already: no second warning
        ledger.record(rec(session_id="a", input_tokens=3, total_tokens=3, cost_usd=0.5))
        ledger.record(rec(session_id="b"))
        assert [r.session_id for r in ledger.records()] == ["a", "b"]
        assert [r.session_id for r in ledger.records(session_id="b")] == ["b"]
        assert ledger.totals(session_id="a") == Totals(1, 3, 0, 0, 0, 3, 0.5, True)
        assert len(ledger.to_dataframe()) == 2


def test_disk_error_keeps_rows_until_the_disk_recovers(ledger, monkeypatch):
    def broken(conn, rows):
        raise sqlite3.OperationalError("disk I/O error")

    ledger.record(rec(cell_id="1"))
    with monkeypatch.context() as patch:
        patch.setattr(_usage, "_insert", broken)
        with pytest.warns(RuntimeWarning, match="disk I/O error") as caught:
            ledger.record(rec(cell_id="2"))
            ledger.record(rec(cell_id="3"))
        assert len([w for w in caught if "usage ledger" in str(w.message)]) == 1
        assert [r.cell_id for r in ledger.records()] == ["1", "2", "3"]
        assert ledger.totals().calls == 3
    ledger.record(rec(cell_id="4"))
    with sqlite3.connect(ledger.path) as conn:
        stored = [row[0] for row in conn.execute("SELECT cell_id FROM usage ORDER BY id")]
    assert stored == ["1", "2", "3", "4"]
    assert [r.cell_id for r in ledger.records()] == ["1", "2", "3", "4"]


def test_plot_draws_cumulative_tokens_and_cost(ledger):
    pytest.importorskip("matplotlib")
    ledger.record(rec(time=T0, input_tokens=10, output_tokens=5, total_tokens=15, cost_usd=0.5))
    ledger.record(rec(time=T0 + 60, input_tokens=20, output_tokens=5, total_tokens=25, cost_usd=None))
    ledger.record(rec(time=T0 + 120, input_tokens=1, output_tokens=1, total_tokens=2, cost_usd=0.25))
    fig = ledger.plot()
    tokens_ax, cost_ax = fig.axes
    totals_line = next(line for line in tokens_ax.get_lines() if line.get_label() == "total tokens")
    assert list(totals_line.get_ydata()) == [15, 40, 42]
    assert list(cost_ax.get_lines()[0].get_ydata()) == [0.5, 0.5, 0.75]
    assert "1 unpriced" in cost_ax.get_ylabel()


def test_plot_of_nothing_says_so(ledger):
    pytest.importorskip("matplotlib")
    fig = ledger.plot()
    assert "no usage recorded yet" in fig.axes[0].texts[0].get_text()


def test_plot_without_matplotlib_says_how_to_install(ledger, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(UsageError, match=r"pip install 'nbopenai\[plot\]'"):
        ledger.plot()


def test_importing_the_core_loads_no_pandas_or_matplotlib():
    code = (
        "import sys, nbopenai._ledger._usage, nbopenai._ledger._prices, nbopenai._ledger._budget; "
        "print(sorted(m for m in ('pandas', 'matplotlib', 'IPython', 'ipywidgets') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_running_totals_count_unsaved_rows_and_skip_refused_ones(tmp_path, monkeypatch):
    path = tmp_path / "usage.sqlite3"
    with Ledger(path) as ledger:
        ledger.record(rec(session_id="s", input_tokens=10, total_tokens=10, cost_usd=0.5))
        assert ledger.totals(session_id="s") == Totals(1, 10, 0, 0, 0, 10, 0.5, True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ledger.record(UsageRecord(T0, "s", "ask", None, "completed", input_tokens=99))  # type: ignore[arg-type]  # refused
            ledger.record_many(
                [rec(session_id="s", input_tokens=5, total_tokens=5, cost_usd=None), rec(session_id="t")]
            )
            with monkeypatch.context() as patch:
                patch.setattr(
                    _usage,
                    "_insert",
                    lambda conn, rows: (_ for _ in ()).throw(sqlite3.OperationalError("disk I/O error")),
                )
                ledger.record(rec(session_id="s", input_tokens=1, total_tokens=1, cost_usd=0.25))  # kept in memory
                assert ledger.totals(session_id="s") == Totals(3, 16, 0, 0, 0, 16, 0.75, False)
        ledger.record(rec(session_id="t"))  # the disk is back: the kept row is written too
        assert ledger.totals(session_id="s") == Totals(3, 16, 0, 0, 0, 16, 0.75, False)
    with Ledger(path) as fresh:
        assert fresh.totals(session_id="s") == Totals(3, 16, 0, 0, 0, 16, 0.75, False)


def test_usage_frame_has_nullable_dtypes_by_column_type_and_unsaved_rows_in_time_order(ledger, monkeypatch):
    ledger.record(rec(time=T0 + 2, cell_id="saved", cost_usd=None, latency_s=1.5))
    with monkeypatch.context() as patch, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        patch.setattr(
            _usage, "_insert", lambda conn, rows: (_ for _ in ()).throw(sqlite3.OperationalError("disk I/O error"))
        )
        ledger.record(rec(time=T0 + 1, cell_id="unsaved", cost_usd=0.5))
        frame = ledger.to_dataframe()
    assert frame["cell_id"].tolist() == ["unsaved", "saved"]
    assert {name: str(dtype) for name, dtype in frame.dtypes.items() if name != "time"} == {
        **{
            name: "string"
            for name in ("session_id", "kind", "model", "status", "thread", "cell_id", "response_id", "error")
        },
        **{name: "Int64" for name in (*_usage._TOKEN_FIELDS, "attempt")},
        **{name: "Float64" for name in ("latency_s", "ttft_s", "cost_usd")},
        "estimated": "boolean",
    }
    assert str(frame["time"].dt.tz) == "UTC" and frame["time"].iloc[0].timestamp() == T0 + 1
    assert frame["cost_usd"].isna().tolist() == [False, True] and frame["latency_s"].tolist()[1] == 1.5


def test_a_row_says_when_its_tokens_are_nbopenais_estimate(tmp_path):
    """A call whose server reported no token counts is marked, in the file and in the frame."""
    ledger = Ledger(tmp_path / "usage.sqlite3")
    prices = PriceTable.load()
    for usage in (Usage(input=10, output=5), Usage(input=10, output=5, estimated=True)):
        ledger.record(UsageRecord.build(prices=prices, session_id="s", kind="ask", model="gpt-4.1-mini",
                                        status="completed", usage=usage))
    assert [r.estimated for r in ledger.records()] == [False, True]
    assert ledger.to_dataframe()["estimated"].tolist() == [False, True]
    ledger.close()

"""The soak, CI size: 500 asks and 2,000 extraction rows with random faults at a fixed seed.

The engine and its checks live in ``benchmarks/soak_long.py`` (which also runs the long variant:
``python -m benchmarks.soak_long``); this test runs it at the size CI affords (about 20 s on two
cores) and asserts that no promise broke. The figures are printed (``pytest -s`` shows them) and
attached to the test report, RSS before and after included.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SOAK = Path(__file__).resolve().parents[1] / "benchmarks" / "soak_long.py"


def _soak_module():
    # Loaded by path: `pytest` does not put the repository root on sys.path.
    spec = importlib.util.spec_from_file_location("nbopenai_soak_long", SOAK)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while building the class
    spec.loader.exec_module(module)
    return module


def test_soak_keeps_the_books_and_the_chains_and_stays_flat(tmp_path, record_property):
    soak = _soak_module()
    report = soak.run_soak(asks=500, rows=2000, seed=20240611, fault_rate=0.1, concurrency=50,
                           max_growth_mb=150.0, workdir=tmp_path)
    summary = report.summary()
    print("\n" + summary)
    record_property("soak", summary)

    assert report.problems() == [], summary
    # The faults really happened, of every kind asked for, and the run did real work.
    assert set(soak.RANDOM_KINDS) | {"rate_limit"} <= set(report.faults), summary
    assert report.requests > report.asks + report.rows
    assert report.row_statuses.get("ok", 0) > 0.8 * report.rows
    assert report.ask_outcomes.get("completed", 0) > 0.8 * report.asks
    assert report.ledger_rows == report.requests


@pytest.mark.parametrize("kind", ["server_error", "drop", "midstream_error", "incomplete"])
def test_a_request_made_a_response_exactly_when_the_server_ran_the_model(kind):
    """The rule the soak's books rely on, stated once per fault shape."""
    soak = _soak_module()

    class Seen:
        def __init__(self, fault, stream):
            self.fault, self.body = fault, {"stream": stream}

    made = {stream: soak._made_a_response(Seen(kind, stream)) for stream in (True, False)}
    expected = {
        "server_error": {True: False, False: False},
        "drop": {True: True, False: False},  # mid-stream: a failed response exists; before the body: nothing
        "midstream_error": {True: True, False: False},
        "incomplete": {True: True, False: True},
    }[kind]
    assert made == expected

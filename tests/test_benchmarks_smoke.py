"""The benchmark suite's ``--quick`` mode runs end to end and writes its table.

Structure only: no timing is asserted here (the figures are measurements, see benchmarks/results.md).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks._harness import Context
from benchmarks._shells import CellStopped, Kernel

REPO = Path(__file__).resolve().parent.parent
TITLES = (
    "1. Magic overhead",
    "2. Streaming",
    "3. Conversation cost",
    "4. Time to first visible text",
    "5. Extraction throughput",
    "6. Start-up",
    "7. Token counting",
    "9. Ledger",
)


@pytest.mark.kernel
def test_quick_suite_runs_every_figure_and_writes_the_table(tmp_path: Path) -> None:
    out = tmp_path / "results.md"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--no-peers", "--quiet", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text(encoding="utf-8")
    assert text.startswith("# nbopenai benchmarks")
    for header in ("**Machine**", "**Python**", "**Ours**", "**Date**"):
        assert header in text
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert table[0] == "| Figure | Measure | Ours | Baseline / peer | Ratio | Goal | Met |"
    assert all(line.count(" | ") >= 6 for line in table[2:])
    for title in TITLES:
        assert any(line.startswith(f"| {title} |") for line in table), title
    assert "(figure failed)" not in text, text
    assert table[0] in done.stdout  # the same table is printed


def test_only_runs_the_named_figure(tmp_path: Path) -> None:
    out = tmp_path / "results.md"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--quiet", "--only", "tokens", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line for line in out.read_text(encoding="utf-8").splitlines() if line.startswith("| ")][1:]
    assert rows and rows[0].startswith("| 7. Token counting |")
    assert not any(line.startswith("| 1. ") for line in rows)


@pytest.mark.kernel
def test_a_cell_that_floods_the_kernel_gets_a_bounded_wait_and_says_what_happened(tmp_path: Path) -> None:
    """chatlab's 20,000-delta cell once made the harness wait out 600 s and drop its row: a cell still
    running at its bound is interrupted, the error says what it sent, and the kernel serves the next cell."""

    flood = "while True:\n    print('x' * 10_000, flush=True)"
    with Kernel(sys.executable, {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}, tmp_path, "flood") as kernel:
        with pytest.raises(
            CellStopped, match=r"stopped waiting after \d+ s \(bound 3 s\): the cell had sent [\d,]+ output"
        ) as stopped:
            kernel.execute(flood, timeout=3)
        assert sum(m.msg_type == "stream" for m in stopped.value.messages) > 10  # what it sent, counted
        assert "then it answered" in str(stopped.value)
        assert kernel.value("6 * 7") == 42


def test_a_peer_runs_against_the_server_with_a_dummy_key_and_its_own_path(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "real-key-" + "x" * 8)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    env = Context(scratch=tmp_path, verbose=False).peer_env("http://127.0.0.1:9/v1")
    assert env["OPENAI_API_KEY"] == "dummy"
    assert env["OPENAI_BASE_URL"] == env["OPENAI_API_BASE"] == "http://127.0.0.1:9/v1"
    assert "PYTHONPATH" not in env  # a peer's venv must not import our checkout

"""The benchmark suite's ``--quick`` mode runs end to end and writes its table.

Structure only: no timing is asserted here (the figures are measurements, see benchmarks/results.md).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TITLES = (
    "1. Magic overhead",
    "2. Streaming",
    "3. Conversation cost",
    "4. Time to first visible text",
    "5. Extraction throughput",
    "6. Start-up",
    "7. Token counting",
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

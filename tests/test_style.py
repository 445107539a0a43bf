"""The stated style (``[tool.ruff]`` in pyproject.toml) holds for the package, its tests and its benchmarks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_finds_nothing():
    done = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "nbopenai", "tests", "benchmarks"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, f"ruff check (pyproject.toml's [tool.ruff]) found:\n{done.stdout}{done.stderr}"

"""Regenerate the README's outputs (and its screenshot) from one run of the current code.

    python docs/regenerate.py                # run the notebooks offline, rewrite README.md's output blocks
    python docs/regenerate.py --screenshot   # and docs/screenshot.png (JupyterLab in headless Chromium)
    python docs/regenerate.py --check        # change nothing; exit 1 if README.md differs beyond timings

Every output shown in README.md sits between ``<!-- output NOTEBOOK#TAG -->`` and ``<!-- /output -->``;
the cell of ``notebooks/NOTEBOOK`` tagged ``readme:TAG`` is the one whose outputs go there: Markdown
answers as a quote, text as a ``text`` block (``#TAG lines=N``: its first N lines). The notebooks run
as ``python -m nbopenai.demo`` runs them (offline demo server, no key, a temporary data folder), with
pandas told to print tables one line per row. The demo model's answers and token
counts are the same on every run; timings, ports and ids are not, so ``--check`` (and
``tests/test_notebooks.py``) compare the blocks with those masked.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
NOTEBOOKS = REPO / "notebooks"

BLOCK = re.compile(
    r"(?P<open><!-- output (?P<notebook>[\w.-]+)#(?P<tag>[\w-]+)(?: lines=(?P<lines>\d+))? -->\n)(?P<body>.*?)(?P<close><!-- /output -->)",
    re.S,
)
# Tables as a wide page shows them (one line per row, as in a notebook's HTML view) rather than
# wrapped at 80 columns: the kernel starts with these pandas display options; nothing else changes.
KERNEL_OPTIONS = [
    "--IPKernelApp.exec_lines=import pandas; pandas.set_option('display.width', 250); "
    "pandas.set_option('display.max_columns', 12)"
]
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# What differs between two runs of the same code: timings, ports, ids, times of day.
_VARYING = [
    (re.compile(r"https?://127\.0\.0\.1:\d+"), "http://127.0.0.1:PORT"),
    (re.compile(r"\bresp_[0-9a-f]+(?:\.\.\.)?"), "resp_ID"),
    (re.compile(r"\d{4}-\d\d-\d\d[ T][\d:.+]+"), "TIME"),
    (re.compile(r"\d+\.\d+"), "N"),  # latencies, costs and means: compared as "a number"
]


def tagged_cell(notebook: Any, tag: str) -> Any:
    """The one code cell tagged ``readme:TAG``."""
    cells = [cell for cell in notebook.cells if f"readme:{tag}" in cell.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise LookupError(f"{len(cells)} cells are tagged readme:{tag}, expected one")
    return cells[0]


def _output_text(output: Any) -> tuple[str, str]:
    """``(kind, text)`` of one output: ``markdown`` or ``text`` (images and widgets are not shown)."""
    if output["output_type"] == "stream":
        return "text", output["text"]
    if output["output_type"] == "error":
        return "text", _ANSI.sub("", "\n".join(output["traceback"]))
    data = output.get("data", {})
    if "text/markdown" in data:
        return "markdown", data["text/markdown"]
    if "text/plain" in data and "image/png" not in data:
        return "text", data["text/plain"]
    return "", ""


def render(cell: Any, lines: int | None = None) -> str:
    """A cell's outputs as README Markdown: consecutive text outputs share one ``text`` block (its first ``lines``)."""
    parts: list[tuple[str, str]] = []
    for output in cell.outputs:
        kind, text = _output_text(output)
        if not kind:
            continue
        if parts and parts[-1][0] == kind == "text":
            parts[-1] = ("text", parts[-1][1].rstrip("\n") + "\n" + text)
        else:
            parts.append((kind, text))
    blocks = []
    for kind, text in parts:
        text = "\n".join(line.rstrip() for line in text.strip("\n").splitlines()[:lines])
        if kind == "markdown":
            blocks.append("\n".join(f"> {line}" if line else ">" for line in text.splitlines()))
        else:
            blocks.append(f"```text\n{text}\n```")
    return "\n\n".join(blocks) + "\n"


def needed(readme: str) -> list[str]:
    """The notebooks README.md shows outputs of, in order of first use."""
    return list(dict.fromkeys(match["notebook"] for match in BLOCK.finditer(readme)))


def rewrite(readme: str, executed: dict[str, Any]) -> str:
    """``readme`` with every output block filled from the executed notebooks (name -> notebook)."""

    def fill(match: re.Match) -> str:
        cell = tagged_cell(executed[match["notebook"]], match["tag"])
        lines = int(match["lines"]) if match["lines"] else None
        return f"{match['open']}{render(cell, lines)}{match['close']}"

    return BLOCK.sub(fill, readme)


def normalised(text: str) -> Counter:
    """The words of ``text`` with what varies between runs masked (a multiset: column wrapping may move them)."""
    for pattern, mask in _VARYING:
        text = pattern.sub(mask, text)
    return Counter(text.split())


def differences(old: str, new: str) -> list[str]:
    """The output blocks of ``old`` that ``new`` changes beyond timings, ports and ids."""
    olds, news = list(BLOCK.finditer(old)), list(BLOCK.finditer(new))
    if [(m["notebook"], m["tag"]) for m in olds] != [(m["notebook"], m["tag"]) for m in news]:
        return ["the output blocks differ"]
    return [f"{a['notebook']}#{a['tag']}" for a, b in zip(olds, news) if normalised(a["body"]) != normalised(b["body"])]


def execute(names: list[str], folder: Path) -> dict[str, Any]:
    """Run each notebook offline (as ``python -m nbopenai.demo`` does); name -> executed notebook."""
    import nbformat

    from nbopenai.demo import run_notebook

    executed = {}
    for name in names:
        target = run_notebook(NOTEBOOKS / name, folder / name, kernel_options=KERNEL_OPTIONS)
        executed[name] = nbformat.read(target, as_version=4)
    return executed


def screenshot() -> int:
    """``docs/screenshot.png`` from the browser test (JupyterLab, Run All on the quickstart, headless Chromium)."""
    env = {**os.environ, "NBOPENAI_UPDATE_SCREENSHOT": "1"}
    test = "tests/test_browser.py::test_quickstart_runs_in_jupyterlab"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test], cwd=REPO, env=env).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python docs/regenerate.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if README.md is out of date")
    parser.add_argument("--screenshot", action="store_true", help="also refresh docs/screenshot.png (needs chromium)")
    args = parser.parse_args(argv)
    readme = README.read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory(prefix="nbopenai-readme-") as folder:
        new = rewrite(readme, execute(needed(readme), Path(folder)))
    if args.check:
        stale = differences(readme, new)
        print("README.md is up to date." if not stale else f"README.md is out of date: {', '.join(stale)}")
        return 1 if stale else 0
    README.write_text(new, encoding="utf-8")
    print(f"Rewrote {len(BLOCK.findall(new))} output blocks of README.md.")
    if args.screenshot:
        shot = REPO / "docs" / "screenshot.png"
        before = shot.stat().st_mtime_ns if shot.exists() else None
        if screenshot() != 0:
            refreshed = shot.exists() and shot.stat().st_mtime_ns != before
            print(f"The browser test failed; docs/screenshot.png was {'refreshed before' if refreshed else 'not refreshed'}.")
            return 1
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))  # this checkout's nbopenai, also when it is not installed
    sys.exit(main())

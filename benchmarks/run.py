"""Run the benchmark suite and write ``benchmarks/results.md``.

    python -m benchmarks.run                 # everything, median of 5 runs (about 10 minutes)
    python -m benchmarks.run --quick         # tiny sizes, one run (the smoke test uses this)
    python -m benchmarks.run --only startup --only tokens

Figures: overhead (1), streaming (2), conversation (3), ttft (4), extraction (5), startup (6),
tokens (7), pacing (8), ledger (9). Peers (jupyter-ai-magics, chatlab) run from ``benchmarks/.peers/venv``
when it exists
(``python -m benchmarks.peers install`` creates it from ``benchmarks/requirements.txt``).
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import shutil
import sys
import time
import traceback
from pathlib import Path

_REPO = Path(__file__).resolve().parent.parent
if str(_REPO) not in sys.path[:1]:
    # Our checkout first: `python benchmarks/run.py` puts benchmarks/ first otherwise.
    sys.path.insert(0, str(_REPO))

from benchmarks._harness import BENCH_DIR, Context, Row, error_row, machine_header, render_results  # noqa: E402

FIGURES = ("overhead", "streaming", "conversation", "ttft", "extraction", "startup", "tokens", "pacing", "ledger")
_MODULES = {
    "overhead": "benchmarks.overhead",
    "streaming": "benchmarks.streaming",
    "conversation": "benchmarks.conversation",
    "ttft": "benchmarks.ttft",
    "extraction": "benchmarks.extraction",
    "startup": "benchmarks.startup",
    "tokens": "benchmarks.tokens",
    "pacing": "benchmarks.pacing",
    "ledger": "benchmarks.ledger",
}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes and one run: a smoke run, not a measurement")
    parser.add_argument(
        "--only",
        action="append",
        choices=FIGURES,
        metavar="NAME",
        help=f"run only this figure (repeatable): {', '.join(FIGURES)}",
    )
    parser.add_argument(
        "--runs", type=int, default=None, help="runs per figure, medians reported (default 5; --quick 1)"
    )
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results.md", help="where to write the table")
    parser.add_argument("--no-peers", action="store_true", help="skip jupyter-ai-magics / chatlab even if installed")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    runs = args.runs if args.runs is not None else (1 if args.quick else 5)
    ctx = Context(quick=args.quick, runs=runs, peers=not args.no_peers, verbose=not args.quiet)
    from benchmarks import peers

    peer_versions = peers.versions() if ctx.peers else {}
    names = [name for name in FIGURES if not args.only or name in args.only]
    rows: list[Row] = []
    started = time.perf_counter()
    try:
        for name in names:
            module = None
            try:
                module = importlib.import_module(_MODULES[name])
                ctx.log(f"{module.TITLE} ...")
                figure_started = time.perf_counter()
                rows.extend(module.run(ctx))
                ctx.log(f"{module.TITLE}: {time.perf_counter() - figure_started:.1f} s")
            except KeyboardInterrupt:
                raise
            except Exception as error:  # one broken figure must not hide the others
                title = getattr(module, "TITLE", name)
                if ctx.verbose:
                    traceback.print_exc()
                rows.append(error_row(title, error))
    finally:
        shutil.rmtree(ctx.scratch, ignore_errors=True)
    elapsed = time.perf_counter() - started
    command = "python -m benchmarks.run" + (
        "".join(f" {shlex.quote(a)}" for a in (argv if argv is not None else sys.argv[1:]))
    )
    text = render_results(ctx, rows, machine_header(ctx, peer_versions), command, elapsed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(text)
    print(f"(written to {args.out})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""nbopenai's benchmark suite: speed and cost, side by side with the tools users would pick instead.

Run it with ``python -m benchmarks.run`` (see ``benchmarks/run.py``); it writes ``benchmarks/results.md``.
"""

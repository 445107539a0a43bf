"""7. Token counting: ``nbopenai.count_tokens`` against the same tiktoken encoding called directly.

Both sides use the very same ``tiktoken.Encoding`` object (built offline by ``nbopenai._core._tokens``), so
the ratio is exactly what our wrapper adds: the model-to-encoding lookup and the call. The one-off
cost of building the vocabulary is reported separately (it is paid once per process).
"""

from __future__ import annotations

import subprocess
import sys
import time

from ._harness import Context, Row, fmt_ms, fmt_ratio, interleaved, median, verdict
from ._texts import mixed_text

NAME = "tokens"
TITLE = "7. Token counting"
GOAL = 1.05

_FIRST_USE = """
import time
started = time.perf_counter()
import nbopenai
nbopenai.count_tokens("hello", "gpt-4o")
print(time.perf_counter() - started)
"""


def run(ctx: Context) -> list[Row]:
    import nbopenai
    from nbopenai._core._tokens import get_encoding

    size = 10_000 if ctx.quick else 1_000_000
    text = mixed_text(size)
    encoding = get_encoding("o200k_base")
    ours_count = nbopenai.count_tokens(text, "gpt-4o")
    direct_count = len(encoding.encode_ordinary(text))
    # CPU time, many runs: each call is ~60 ms of pure CPU, so wall time on a shared machine
    # mostly measures the neighbours.
    runs = 1 if ctx.quick else max(21, ctx.runs * 4 + 1)
    times = interleaved(
        {
            "ours": lambda: nbopenai.count_tokens(text, "gpt-4o"),
            "tiktoken": lambda: len(encoding.encode_ordinary(text)),
        },
        runs,
        clock=time.process_time,
    )
    ours, direct = median(times["ours"]), median(times["tiktoken"])
    ratio = ours / direct
    firsts = []
    for _ in range(1 if ctx.quick else ctx.runs):
        first = subprocess.run(
            [sys.executable, "-c", _FIRST_USE], capture_output=True, text=True, env=ctx.env(), timeout=120
        )
        firsts.append(float(first.stdout.strip().splitlines()[-1]) if first.returncode == 0 else float("nan"))
    first_use = median(firsts)
    label = f"{len(text.encode()) / 1e6:.2f} MB" if size >= 1_000_000 else f"{len(text.encode()) / 1e3:.0f} kB"
    rows = [
        Row(
            TITLE,
            f"`count_tokens` on {label} of mixed text ({ours_count:,} tokens); CPU time, median of {runs}",
            fmt_ms(ours),
            f"tiktoken `encode_ordinary` {fmt_ms(direct)}",
            fmt_ratio(ratio),
            f"<= {GOAL}x",
            verdict(ratio <= GOAL),
            data={"ours": times["ours"], "tiktoken": times["tiktoken"]},
        ),
        Row(
            TITLE,
            "same count as tiktoken",
            "yes" if ours_count == direct_count else f"no ({ours_count} vs {direct_count})",
            goal="identical",
            met=verdict(ours_count == direct_count),
        ),
        Row(
            TITLE,
            "first use in a fresh process (import + offline vocabulary build)",
            fmt_ms(first_use),
            "paid once per process",
        ),
    ]
    if ratio > GOAL:
        from ._harness import profile_top

        ctx.note(f"{TITLE}: where the time goes", profile_top(lambda: nbopenai.count_tokens(text, "gpt-4o"), repeat=2))
    return rows

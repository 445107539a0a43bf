"""1. Magic overhead: ``%%ask`` end to end against the raw SDK stream, same prompt, same server.

Ours: ``shell.run_cell("%%ask --new\\n<prompt>")`` in an ``InteractiveShell`` with the extension
loaded and the notebook view on (widgets with recording comms, displays recorded instead of sent),
so everything the magic does is counted: parsing, the request, the stream, the throttled view, the
static Markdown it leaves, the ledger row in SQLite (a file, as by default).

Baseline: ``client.responses.create(stream=True)`` with a reused ``openai.OpenAI``, joining the
text deltas: the least a user could write.

Two server settings: a realistic one (first byte after 250 ms, 200 deltas 2 ms apart), where the
goal applies, and zero latency, which shows our added milliseconds alone.
"""

from __future__ import annotations

from ._harness import Context, Row, fmt_ms, fmt_ratio, interleaved, median, profile_diff, verdict
from ._shells import recording_shell

NAME = "overhead"
TITLE = "1. Magic overhead"
GOAL = 1.05


def _contenders(ctx: Context, server, words: int):
    import openai

    prompt = f"Tell me about streaming. [[words:{words}]]"
    raw_client = openai.OpenAI(base_url=server.base_url, api_key="local", max_retries=0)
    texts: dict[str, str] = {}

    def raw() -> None:
        parts = []
        with raw_client.responses.create(model="nbopenai-local", input=prompt, stream=True) as stream:
            for event in stream:
                if event.type == "response.output_text.delta":
                    parts.append(event.delta)
        texts["raw"] = "".join(parts)

    return prompt, raw, raw_client, texts


def _measure(ctx: Context, shell, recorder, server, *, words: int, runs: int) -> dict[str, object]:
    prompt, raw, raw_client, texts = _contenders(ctx, server, words)
    cell = f"%%ask --new -o _bench_answer\n{prompt}"

    def ours() -> None:
        recorder.clear()
        result = shell.run_cell(cell)
        result.raise_error()
        texts["ours"] = shell.user_ns["_bench_answer"].text

    times = interleaved({"ours": ours, "raw": raw}, runs)
    return {
        "times": times,
        "same_text": texts.get("ours") == texts.get("raw"),
        "ours": ours,
        "raw": raw,
        "client": raw_client,
    }


def run(ctx: Context) -> list[Row]:
    runs = ctx.runs if not ctx.quick else 1
    scale = 1 if not ctx.quick else 0
    realistic = {"latency": 0.25 if scale else 0.02, "chunk_delay": 0.002}
    words = 200 if scale else 30
    rows: list[Row] = []
    env = {
        "NBOPENAI_HOME": str(ctx.scratch / "home-overhead"),
        "NBOPENAI_MODEL": "nbopenai-local",
    }
    with ctx.server(**realistic) as server:
        env["OPENAI_BASE_URL"] = server.base_url
        with recording_shell(env) as (shell, recorder):
            shell.run_cell("%load_ext nbopenai").raise_error()
            shell.run_cell('%config AskMagics.widgets = "on"').raise_error()
            result = _measure(ctx, shell, recorder, server, words=words, runs=runs)
            ours_s, raw_s = median(result["times"]["ours"]), median(result["times"]["raw"])
            ratio = ours_s / raw_s
            label = (
                f"{realistic['latency'] * 1000:.0f} ms to first byte, "
                f"{words} deltas {realistic['chunk_delay'] * 1000:.0f} ms apart"
            )
            rows.append(
                Row(
                    TITLE,
                    f"`%%ask` end to end (notebook view) vs raw SDK stream; {label}",
                    fmt_ms(ours_s),
                    fmt_ms(raw_s),
                    fmt_ratio(ratio),
                    f"<= {GOAL}x",
                    verdict(ratio <= GOAL),
                    data=result["times"],
                )
            )
            rows.append(
                Row(
                    TITLE,
                    "extra per call at that latency",
                    fmt_ms(ours_s - raw_s, 2),
                    goal=f"<= {fmt_ms(raw_s * (GOAL - 1))}",
                )
            )
            server.configure(latency=0.0, chunk_delay=0.0)
            zero = _measure(ctx, shell, recorder, server, words=words, runs=runs)
            z_ours, z_raw = median(zero["times"]["ours"]), median(zero["times"]["raw"])
            rows.append(
                Row(
                    TITLE,
                    f"same at zero server latency ({words} deltas): our added time alone",
                    fmt_ms(z_ours),
                    fmt_ms(z_raw),
                    fmt_ratio(z_ours / z_raw),
                    data=zero["times"],
                )
            )
            rows.append(Row(TITLE, "extra per call at zero latency", fmt_ms(z_ours - z_raw, 2)))
            rows.append(
                Row(
                    TITLE,
                    "final text identical to the raw stream's",
                    "yes" if result["same_text"] and zero["same_text"] else "**no**",
                    goal="identical",
                    met=verdict(bool(result["same_text"] and zero["same_text"])),
                )
            )
            if ratio > GOAL or not ctx.quick:
                where = profile_diff(zero["ours"], zero["raw"], repeat=5 if not ctx.quick else 1)
                ctx.note(
                    f"{TITLE}: where our extra {fmt_ms(z_ours - z_raw, 2)} per call goes (zero latency, cProfile)",
                    where,
                )
            result["client"].close()
            zero["client"].close()
    return rows

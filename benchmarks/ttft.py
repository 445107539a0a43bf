"""4. Time to first visible text, with a server that streams 500 chunks over 5 s.

"Visible" is measured where a browser would see it: in a real Jupyter kernel driven over ZMQ, the
time from sending the cell to the first iopub message that carries answer text (a widget update,
a display, a stream). Contenders, same server, same run:

- ours: ``%%ask`` (notebook view);
- jupyter-ai-magics ``%%ai`` (does not stream: shows the answer when it is complete);
- chatlab (streams into a Markdown display);
- two in-process references without a front-end: the core's ``Session.ask`` with the stdout sink
  (first ``sink.text``) and the raw SDK (first delta event), i.e. what the network allows.

The server holds non-streamed answers for as long as it would stream them (``_paced_server``), as a
real model takes as long to write an answer either way.
"""

from __future__ import annotations

import io
import json
import sys
import time

from . import peers
from ._harness import Context, Row, fmt_ms, fmt_ratio, median, verdict
from ._shells import PEER_CELL_S, Kernel
from .streaming import _RAW_SETUP

NAME = "ttft"
TITLE = "4. Time to first visible text"
_PRINT_SETUP = """
def _bench_print(prompt):
    with _bench_client.responses.create(model="nbopenai-local", input=prompt, stream=True) as stream:
        for event in stream:
            if event.type == "response.output_text.delta":
                print(event.delta, end="", flush=True)
"""
_PROFILE_FIRST_ASK = """
import cProfile as _cp, pstats as _ps, time as _t
_prof = _cp.Profile()
_started = _t.perf_counter()
_prof.enable()
get_ipython().run_cell_magic("ask", "", "[[words:20]]")
_prof.disable()
_wall = _t.perf_counter() - _started
_stats = _ps.Stats(_prof).stats
_imports = max((v[3] for k, v in _stats.items() if k[2] == "_find_and_load"), default=0.0)
_ours = sorted(
    ((v[3], k[0].split("nbopenai/", 1)[-1] + ":" + k[2]) for k, v in _stats.items() if "/nbopenai/" in k[0]),
    reverse=True,
)[:12]
_bench_profile = {"wall": _wall, "imports": _imports, "ours": _ours}
"""
_TEXT_MARK = "(nbopenai"  # every demo answer starts with "(nbopenai offline demo model)", its first delta "(nbopenai "


def _first_text(messages) -> tuple[float, float]:
    """(first message with answer text, last message) in seconds since the cell was sent."""
    first = None
    for message in messages:
        if message.msg_type in ("comm_msg", "display_data", "update_display_data", "stream", "execute_result"):
            if _TEXT_MARK in json.dumps(message.content, ensure_ascii=False):
                first = message.at
                break
    last = messages[-1].at if messages else float("nan")
    return (first if first is not None else float("nan")), last


_RAW_FIRST_STREAM = """
import openai
_bench_client = openai.OpenAI(base_url={base_url!r}, api_key="local", max_retries=0)
with _bench_client.responses.create(model="nbopenai-local", input={prompt!r}, stream=True) as _stream:
    for _event in _stream:
        if _event.type == "response.output_text.delta":
            print(_event.delta, end="", flush=True)
"""
_TYPING_S = 2.0  # the first ask comes this long after `%load_ext`, as a user types it
_QUICK_TYPING_S = 0.5  # --quick (the smoke test) checks the figure runs, not what it measures


def _typing_s(ctx: Context) -> float:
    return _QUICK_TYPING_S if ctx.quick else _TYPING_S


def _fresh_kernels(ctx: Context, env: dict, server, runs: int) -> dict[str, list[float]]:
    """First visible text in fresh kernels, interleaved: our first ask at once and 2 s after
    ``%load_ext`` (then a later ask, same kernel), and the raw SDK's first stream 2 s after start."""
    prompt = "[[words:20]]"
    out: dict[str, list[float]] = {"at_once": [], "typed": [], "later": [], "raw": []}
    for _ in range(runs):
        with Kernel(_python(), env, ctx.scratch, "nbopenai-cold") as kernel:
            out["at_once"].append(_kernel_runs(kernel, ["%load_ext nbopenai"], f"%%ask\n{prompt}", 1)[0][0])
        with Kernel(_python(), env, ctx.scratch, "nbopenai-cold-typed") as kernel:
            kernel.execute("%load_ext nbopenai")
            time.sleep(_typing_s(ctx))
            out["typed"].append(_first_text(kernel.execute(f"%%ask\n{prompt}"))[0])
            out["later"].append(_first_text(kernel.execute(f"%%ask\n{prompt}"))[0])
        with Kernel(_python(), env, ctx.scratch, "raw-cold") as kernel:
            time.sleep(_typing_s(ctx))
            out["raw"].append(
                _first_text(kernel.execute(_RAW_FIRST_STREAM.format(base_url=server.base_url, prompt=prompt)))[0]
            )
    return out


def _kernel_runs(
    kernel: Kernel, setup: list[str], cell: str, runs: int, timeout: float = 600
) -> tuple[list[float], list[float]]:
    for code in setup:
        kernel.execute(code, timeout=timeout)
    firsts, totals = [], []
    for _ in range(runs):
        first, _ = _first_text(kernel.execute(cell, timeout=timeout))
        firsts.append(first)
        totals.append(kernel.idle_at)
    return firsts, totals


def _in_process(server, prompt: str, runs: int) -> dict[str, list[float]]:
    import openai

    import nbopenai
    from nbopenai._turns._printer import StdoutSink

    class FirstText(StdoutSink):
        def __init__(self) -> None:
            super().__init__(io.StringIO())
            self.first: float | None = None

        def text(self, delta, state) -> None:  # noqa: ANN001
            if self.first is None:
                self.first = time.perf_counter()
            super().text(delta, state)

    out: dict[str, list[float]] = {"core": [], "raw": []}
    client = openai.OpenAI(base_url=server.base_url, api_key="local", max_retries=0)
    with nbopenai.Session(
        nbopenai.Settings(base_url=server.base_url, model="nbopenai-local"), ledger_path=":memory:"
    ) as session:
        session.ask("warm up", new=True)
        for _ in range(runs):
            sink = FirstText()
            started = time.perf_counter()
            session.ask(prompt, sink=sink, new=True)
            out["core"].append(sink.first - started)
            started = time.perf_counter()
            first = None
            with client.responses.create(model="nbopenai-local", input=prompt, stream=True) as stream:
                for event in stream:
                    if first is None and event.type == "response.output_text.delta":
                        first = time.perf_counter() - started
            out["raw"].append(first)
    client.close()
    return out


def run(ctx: Context) -> list[Row]:
    chunks = 50 if ctx.quick else 500
    delay = 0.01
    runs = 1 if ctx.quick else ctx.runs
    prompt = f"[[words:{chunks}]]"
    span = f"{chunks} chunks over {chunks * delay:.1f} s"
    rows: list[Row] = []
    results: dict[str, tuple[list[float], list[float]]] = {}
    with ctx.server(paced=True, chunk_delay=delay) as server:
        env = ctx.env(OPENAI_BASE_URL=server.base_url, NBOPENAI_MODEL="nbopenai-local")
        ctx.log(f"{TITLE}: ours in a kernel")
        with Kernel(_python(), env, ctx.scratch, "nbopenai-ttft") as kernel:
            results["ours"] = _kernel_runs(
                kernel, ["%load_ext nbopenai", "%%ask --new\nwarm up"], f"%%ask --new\n{prompt}", runs
            )
            kernel.execute(_RAW_SETUP.format(base_url=server.base_url))
            kernel.execute("_bench_raw('warm up')")
            kernel.execute(_PRINT_SETUP)
            raw_cell, raw_print = [], []
            for _ in range(runs):
                raw_print.append(_first_text(kernel.execute(f"_bench_print({prompt!r})"))[0])
                raw_cell.append(kernel.idle_at)
        ctx.log(f"{TITLE}: the first %%ask of fresh kernels, and the raw SDK's first stream")
        cold = _fresh_kernels(ctx, env, server, runs)
        if not ctx.quick:
            with Kernel(_python(), env, ctx.scratch, "nbopenai-cold-profile") as kernel:
                kernel.execute("%load_ext nbopenai")
                kernel.execute(_PROFILE_FIRST_ASK)
                profile = kernel.value("_bench_profile")
            lines = [
                f"Under cProfile the first ask took {fmt_ms(profile['wall'])}; imports made during it: "
                f"{fmt_ms(profile['imports'])} (cumulative, `_find_and_load`). Our functions by cumulative time:"
            ]
            lines += [f"- `{name}` {fmt_ms(seconds)}" for seconds, name in profile["ours"]]
            ctx.note(f"{TITLE}: where the first `%%ask` of a fresh kernel spends its time", "\n".join(lines))
        ctx.log(f"{TITLE}: core sink and raw SDK in process")
        reference = _in_process(server, prompt, runs)
        available = peers.versions() if ctx.peers else {}
        peer_env = ctx.peer_env(server.base_url)
        if "jupyter-ai-magics" in available:
            ctx.log(f"{TITLE}: jupyter-ai-magics %%ai in a kernel")
            try:
                with Kernel(str(peers.python()), peer_env, ctx.scratch, "jupyter-ai-ttft") as kernel:
                    results["jupyter-ai"] = _kernel_runs(
                        kernel,
                        ["%load_ext jupyter_ai_magics", "%%ai openai-chat:gpt-4o-mini\nwarm up"],
                        f"%%ai openai-chat:gpt-4o-mini\n{prompt}",
                        runs,
                        PEER_CELL_S,
                    )
            except Exception as error:  # a finding: its row says so, the other figures stay
                ctx.note(f"{TITLE}: jupyter-ai-magics could not run", f"{type(error).__name__}: {error}")
                rows.append(Row(TITLE, f"`%%ask` vs jupyter-ai; {span}", "", f"jupyter-ai could not run: {error}"))
        if "chatlab" in available:
            ctx.log(f"{TITLE}: chatlab in a kernel")
            cell = (
                "from chatlab import Chat\n"
                f"await Chat(model='gpt-4o-mini', base_url={server.base_url!r}, api_key='dummy')({prompt!r})"
            )
            try:
                with Kernel(str(peers.python()), peer_env, ctx.scratch, "chatlab-ttft") as kernel:
                    warm = cell.replace(prompt, "warm up")
                    results["chatlab"] = _kernel_runs(kernel, [warm], cell, runs, PEER_CELL_S)
            except Exception as error:  # a finding: its row says so, the other figures stay
                ctx.note(f"{TITLE}: chatlab could not run", f"{type(error).__name__}: {error}")
                rows.append(Row(TITLE, f"`%%ask` vs chatlab; {span}", "", f"chatlab could not run: {error}"))
    ours_first, ours_total = (median(v) for v in results["ours"])
    for peer in ("jupyter-ai", "chatlab"):
        if peer not in results:
            continue
        first, total = (median(v) for v in results[peer])
        how = "does not stream; its answer is held as long as the stream" if peer == "jupyter-ai" else "streams"
        rows.append(
            Row(
                TITLE,
                f"`%%ask` vs {peer} ({how}); {span}",
                fmt_ms(ours_first),
                f"{peer}: {fmt_ms(first)} (cell complete at {fmt_ms(total)})",
                fmt_ratio(ours_first / first),
                data={"ours": results["ours"][0], peer: results[peer][0]},
            )
        )
    if not any(p in results for p in ("jupyter-ai", "chatlab")):
        why = (
            "no peer finished (rows above)"
            if available
            else "no peer run (--no-peers, or: python -m benchmarks.peers install)"
        )
        rows.append(Row(TITLE, f"`%%ask`; {span}", fmt_ms(ours_first), why))
    rows.append(
        Row(
            TITLE,
            "`%%ask` vs the raw SDK printing each delta, same kernel",
            fmt_ms(ours_first),
            f"raw SDK print: {fmt_ms(median(raw_print))}",
            fmt_ratio(ours_first / median(raw_print)),
            data={"raw_print": raw_print},
        )
    )
    rows.append(
        Row(
            TITLE,
            "`%%ask` first text vs the network's first delta (raw SDK in process, no kernel)",
            fmt_ms(ours_first),
            f"raw SDK: {fmt_ms(median(reference['raw']))}",
            fmt_ratio(ours_first / median(reference["raw"])),
        )
    )
    rows.append(
        Row(
            TITLE,
            "core `Session.ask(sink=StdoutSink)`: first `sink.text`",
            fmt_ms(median(reference["core"])),
            f"raw SDK: {fmt_ms(median(reference['raw']))}",
            fmt_ratio(median(reference["core"]) / median(reference["raw"])),
        )
    )
    typed, later, raw_cold = median(cold["typed"]), median(cold["later"]), median(cold["raw"])
    rows.append(
        Row(
            TITLE,
            f"first `%%ask` in a fresh kernel, {_typing_s(ctx):g} s after `%load_ext`",
            fmt_ms(typed),
            f"a later ask, same kernel: {fmt_ms(later)}; raw SDK's first stream in a fresh kernel "
            f"(imports openai in the cell): {fmt_ms(raw_cold)}",
            f"{fmt_ratio(typed / later)} of a later ask; {fmt_ratio(typed / raw_cold)} of the raw SDK",
            goal="<= 1.2x a later ask, <= the raw SDK",
            met=verdict(typed <= 1.2 * later and typed <= raw_cold),
            data=cold,
        )
    )
    rows.append(
        Row(
            TITLE,
            "first `%%ask` in a fresh kernel, at once after `%load_ext` (waits for the warm-up)",
            fmt_ms(median(cold["at_once"])),
            f"raw SDK's first stream in a fresh kernel: {fmt_ms(raw_cold)}",
            fmt_ratio(median(cold["at_once"]) / raw_cold),
        )
    )
    rows.append(
        Row(
            TITLE,
            "`%%ask` cell complete (kernel idle again)",
            fmt_ms(ours_total),
            f"raw SDK print cell, same kernel: {fmt_ms(median(raw_cell))} (stream {chunks * delay * 1000:,.0f} ms)",
            fmt_ratio(ours_total / median(raw_cell)),
            data={"raw_cell": raw_cell},
        )
    )
    return rows


def _python() -> str:
    return sys.executable

"""2. Streaming: an answer of 20,000 deltas into a real Jupyter kernel, counted at the front-end.

A kernel is started (``ipykernel``, as JupyterLab would) and driven over ZMQ; every iopub message
the cell causes is what a browser would receive. We count them by type, read the kernel process's
CPU time (all its threads: the SDK's parsing, our throttled view, ZMQ) around the cell, and check
that the text the user ends up with is identical to the raw stream's.

Baselines, same kernel kind, same server, same run:

- the raw SDK consuming the stream and displaying nothing (the floor of kernel CPU per delta);
- chatlab (a real peer, from PyPI) in a kernel of the peers' venv: it re-renders its Markdown
  display on every delta, so it sends one front-end message per delta, each carrying the whole text
  so far.

Bytes sent to the front-end for 2,000 / 8,000 / 20,000-word answers streamed over 4 / 20 / 60 s:
the live view runs in-process on recording comms with the throttle's clock simulated (one delta per
word, evenly spaced over the duration), so the three streams cost a second, not 84. Everything the
widget's comms carry (opening state, state updates, appended deltas, close) plus the final static
bundle is counted as JSON, against the answer's own size (its UTF-8 bytes). The previous view's cost
at the same update instants (the whole escaped text so far, every update) is shown beside it.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
import sys
import time

from . import peers
from ._harness import Context, Row, fmt_bytes, fmt_ratio, fmt_s, fmt_us, median, verdict
from ._shells import PEER_CELL_S, CellStopped, Kernel

NAME = "streaming"
TITLE = "2. Streaming"

_RAW_SETUP = """
import hashlib, openai
_bench_client = openai.OpenAI(base_url={base_url!r}, api_key="local", max_retries=0)
def _bench_raw(prompt):
    parts = []
    with _bench_client.responses.create(model="nbopenai-local", input=prompt, stream=True) as stream:
        for event in stream:
            if event.type == "response.output_text.delta":
                parts.append(event.delta)
    return "".join(parts)
"""

_OUTPUT_TYPES = (
    "comm_open",
    "comm_msg",
    "comm_close",
    "display_data",
    "update_display_data",
    "stream",
    "execute_result",
)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _expected_text(server, prompt: str) -> str:
    import openai

    with openai.OpenAI(base_url=server.base_url, api_key="local", max_retries=0) as client:
        return client.responses.create(model="nbopenai-local", input=prompt, store=False).output_text


def _counts(messages) -> dict[str, int]:
    counts = {kind: 0 for kind in _OUTPUT_TYPES}
    for message in messages:
        if message.msg_type in counts:
            counts[message.msg_type] += 1
    return counts


def _final_markdown(messages) -> str:
    for message in reversed(messages):
        if message.msg_type in ("display_data", "update_display_data", "execute_result"):
            data = message.content.get("data", {})
            if "text/markdown" in data:
                return data["text/markdown"]
    return ""


def _timed_cell(kernel: Kernel, code: str, timeout: float = 600) -> tuple[list, float, float]:
    cpu = kernel.cpu()
    started = time.perf_counter()
    messages = kernel.execute(code, timeout=timeout)
    return messages, time.perf_counter() - started, kernel.cpu() - cpu


def _output_bytes(messages, kinds=_OUTPUT_TYPES) -> int:
    """What the cell's output messages of ``kinds`` carried, as JSON content (envelopes not counted)."""
    return sum(m.size for m in messages if m.msg_type in kinds)


def _ours(ctx: Context, server, prompt: str, expected: str, runs: int) -> dict:
    env = ctx.env(OPENAI_BASE_URL=server.base_url, NBOPENAI_MODEL="nbopenai-local")
    with Kernel(_python(), env, ctx.scratch, "nbopenai-bench") as kernel:
        kernel.execute("%load_ext nbopenai")
        kernel.execute(_RAW_SETUP.format(base_url=server.base_url))
        kernel.execute("%%ask --new\nwarm up")
        kernel.execute("_bench_raw('warm up')")
        ours_cpu, ours_wall, raw_cpu, raw_wall, counts, identical, shown, sent = [], [], [], [], {}, True, True, 0
        for index in range(runs):
            order = ("ours", "raw") if index % 2 == 0 else ("raw", "ours")
            for who in order:
                if who == "ours":
                    messages, wall, cpu = _timed_cell(kernel, f"%%ask --new -o _bench_answer\n{prompt}")
                    ours_wall.append(wall)
                    ours_cpu.append(cpu)
                    counts = _counts(messages)
                    sent = _output_bytes(messages)
                    length, digest = kernel.value(
                        "[len(_bench_answer.text), hashlib.sha256(_bench_answer.text.encode()).hexdigest()]"
                    )
                    identical &= digest == _digest(expected)
                    shown &= expected in _final_markdown(messages)
                else:
                    _, wall, cpu = _timed_cell(kernel, f"_bench_text = _bench_raw({prompt!r})")
                    raw_wall.append(wall)
                    raw_cpu.append(cpu)
                    identical &= kernel.value("hashlib.sha256(_bench_text.encode()).hexdigest()") == _digest(expected)
    return {
        "ours_cpu": ours_cpu,
        "ours_wall": ours_wall,
        "raw_cpu": raw_cpu,
        "raw_wall": raw_wall,
        "counts": counts,
        "identical": identical,
        "shown": shown,
        "bytes": sent,
    }


def _python() -> str:
    return sys.executable


_CHATLAB_CELL = """
import hashlib
from chatlab import Chat
_bench_chat = Chat(model="gpt-4o-mini", base_url={base_url!r}, api_key="dummy")
await _bench_chat({prompt!r})
_bench_text = _bench_chat.messages[-1]["content"]
"""


def _chatlab(ctx: Context, server, prompt: str, expected: str, runs: int) -> dict:
    env = ctx.peer_env(server.base_url)
    with Kernel(str(peers.python()), env, ctx.scratch, "chatlab-bench") as kernel:
        kernel.execute(_CHATLAB_CELL.format(base_url=server.base_url, prompt="warm up"), timeout=PEER_CELL_S)
        cpu, wall, counts, identical, sent, stopped = [], [], {}, True, 0, None
        for _ in range(runs):
            cell = _CHATLAB_CELL.format(base_url=server.base_url, prompt=prompt)
            try:
                messages, seconds, used = _timed_cell(kernel, cell, timeout=PEER_CELL_S)
            except CellStopped as error:  # what it sent until then is the finding
                stopped, messages = str(error), error.messages
            else:
                wall.append(seconds)
                cpu.append(used)
                identical &= kernel.value("hashlib.sha256(_bench_text.encode()).hexdigest()") == _digest(expected)
            counts = _counts(messages)
            sent = _output_bytes(messages, ("display_data", "update_display_data"))
            if stopped:
                break
    return {
        "cpu": cpu,
        "wall": wall,
        "counts": counts,
        "identical": identical,
        "display_bytes": sent,
        "stopped": stopped,
    }


def _profile_in_process(ctx: Context, server, prompt: str) -> str:
    """The same ask in an in-process shell (recording comms) against the raw SDK loop, profiled."""
    import openai

    from ._harness import profile_diff
    from ._shells import recording_shell

    client = openai.OpenAI(base_url=server.base_url, api_key="local", max_retries=0)

    def raw() -> None:
        with client.responses.create(model="nbopenai-local", input=prompt, stream=True) as stream:
            parts = [e.delta for e in stream if e.type == "response.output_text.delta"]
        "".join(parts)

    env = {
        "NBOPENAI_HOME": str(ctx.scratch / "home-streaming"),
        "NBOPENAI_MODEL": "nbopenai-local",
        "OPENAI_BASE_URL": server.base_url,
    }
    try:
        with recording_shell(env) as (shell, recorder):
            shell.run_cell("%load_ext nbopenai").raise_error()
            shell.run_cell('%config AskMagics.widgets = "on"').raise_error()

            def ours() -> None:
                recorder.clear()
                shell.run_cell(f"%%ask --new\n{prompt}").raise_error()

            ours()
            raw()
            return profile_diff(ours, raw, repeat=2, top=10)
    finally:
        client.close()


_STREAMS = ((2_000, 4.0), (8_000, 20.0), (20_000, 60.0))  # words, seconds
_QUICK_STREAMS = ((2_000, 4.0),)  # simulated: as cheap as the smallest real one


def _json_size(payload) -> int:
    return len(json.dumps(payload, ensure_ascii=False).encode()) if payload is not None else 0


def _simulated_stream(words: int, seconds: float) -> dict:
    """One answer through ``AnswerView`` on recording comms, the throttle's clock stepping with the deltas."""
    import comm

    from nbopenai._turns._answer import Answer, Usage
    from nbopenai._turns._streaming import StreamState
    from nbopenai.ipython._render import answer_bundle
    from nbopenai.local._demo import long_answer
    from nbopenai.widgets import AnswerView

    from ._shells import Recorder

    deltas = re.findall(r"\S+\s*", long_answer(words))
    step = seconds / len(deltas)
    now = [0.0]
    recorder = Recorder()
    bundles: list[dict] = []

    class Handle:
        def update(self, bundle, raw=False, metadata=None):  # noqa: ANN001
            bundles.append(bundle)

    saved, comm.create_comm = comm.create_comm, recorder.create_comm
    try:
        view = AnswerView(render=answer_bundle, clock=lambda: now[0], display=lambda obj: Handle())
        view.started("nbopenai-local", "default", None)
        state, previous_view = StreamState(), 0
        for index, delta in enumerate(deltas):
            now[0] = index * step
            state.handle({"type": "response.output_text.delta", "delta": delta})
            sent = view.throttle.sent
            view.text(delta, state)
            if view.throttle.sent > sent:  # the previous view sent the whole escaped text here (at least)
                previous_view += len(html.escape(state.text).encode())
        view.finished(
            Answer(
                text=state.text, model="nbopenai-local", thread="default", turn=1, usage=Usage(input=1, output=words)
            )
        )
    finally:
        comm.create_comm = saved
    widget = sum(_json_size(payload) for _, payload in recorder.comm_messages)
    final = sum(_json_size(bundle) for bundle in bundles)
    appended = "".join(
        m.get("content", {}).get("append", "")
        for _, m in recorder.comm_messages
        if isinstance(m, dict) and m.get("method") == "custom"
    )
    size = len(state.text.encode())
    return {
        "words": words,
        "seconds": seconds,
        "answer": size,
        "widget": widget,
        "final": final,
        "total": widget + final,
        "updates": view.throttle.sent,
        "previous_view": previous_view,
        "identical": appended == state.text and state.text in bundles[-1]["text/markdown"],
    }


def _bytes_rows(ctx: Context) -> list[Row]:
    rows = []
    for words, seconds in _QUICK_STREAMS if ctx.quick else _STREAMS:
        m = _simulated_stream(words, seconds)
        ctx.log(f"{TITLE}: {words:,} words over {seconds:g} s: {m}")
        live, total, rate = m["widget"] / m["answer"], m["total"] / m["answer"], m["updates"] / seconds
        rows.append(
            Row(
                TITLE,
                f"bytes sent to the front-end, {words:,}-word answer streamed over {seconds:g} s: live view "
                "+ the final static output (Markdown, and its text/plain preview), sent once",
                f"{fmt_bytes(m['widget'])} + {fmt_bytes(m['final'])} = {fmt_bytes(m['total'])}; "
                f"{m['updates']} updates, {rate:.1f}/s; final text {'identical' if m['identical'] else '**differs**'}",
                f"answer {fmt_bytes(m['answer'])}; "
                f"whole text per update (the previous view): {fmt_bytes(m['previous_view'])}",
                f"{fmt_ratio(total)} of the answer (live view alone {fmt_ratio(live)})",
                goal="all of it <= 3x the answer, <= ~20 updates/s, identical",
                met=verdict(total <= 3 and rate <= 20.5 and m["identical"]),
                data=m,
            )
        )
    return rows


def run(ctx: Context) -> list[Row]:
    deltas = 500 if ctx.quick else 20_000
    runs = 1 if ctx.quick else ctx.runs
    prompt = f"[[words:{deltas}]]"
    rows: list[Row] = _bytes_rows(ctx)
    with ctx.server() as server:
        expected = _expected_text(server, prompt)
        ctx.log(f"{TITLE}: ours and raw SDK in a kernel, {deltas:,} deltas x {runs}")
        ours = _ours(ctx, server, prompt, expected, runs)
        chat = None
        if ctx.peers and "chatlab" in peers.versions():
            ctx.log(f"{TITLE}: chatlab in a kernel of the peers' venv")
            try:
                chat = _chatlab(ctx, server, prompt, expected, max(1, runs if ctx.quick else min(runs, 3)))
            except Exception as error:  # a peer failing is a finding, not a crash: its row says so
                ctx.note(f"{TITLE}: chatlab could not run", f"{type(error).__name__}: {error}")
                rows.append(
                    Row(
                        TITLE, "chatlab, the same answer", "", f"chatlab could not run: {type(error).__name__}: {error}"
                    )
                )
            if chat and chat["stopped"]:
                ctx.note(f"{TITLE}: chatlab was stopped", chat["stopped"])
        if not ctx.quick:
            ctx.note(
                f"{TITLE}: where our extra CPU per delta goes ({deltas:,} deltas, in-process shell, cProfile)",
                _profile_in_process(ctx, server, prompt),
            )
    counts = ours["counts"]
    front = counts["comm_msg"]
    total = sum(counts.values())
    per_delta = median(ours["ours_cpu"]) / deltas
    raw_per_delta = median(ours["raw_cpu"]) / deltas
    peer_messages = ""
    if chat:
        peer_total = sum(chat["counts"].values())
        peer_messages = (
            f"chatlab: {peer_total:,} ({chat['counts']['update_display_data']:,} display updates, "
            f"{chat['display_bytes'] / 1e6:,.0f} MB of displays)"
        )
        if chat["stopped"]:
            peer_messages += f", then stopped: {chat['stopped']}"
    # The throttle's bound is per second of streaming (a loaded machine streams longer, and may update
    # more), plus the few messages every answer sends anyway (header, the tail, the end state).
    wall = median(ours["ours_wall"])
    rate = front / wall
    rows.append(
        Row(
            TITLE,
            f"front-end messages for {deltas:,} deltas: widget updates (`comm_msg`)",
            f"{front:,} ({rate:.1f}/s of the cell)",
            peer_messages or f"one per delta: {deltas:,}",
            fmt_ratio(front / deltas) + " of one per delta",
            goal="~20/s at most (the throttle) + 5",
            met=verdict(front <= 20 * wall + 5),
            data=counts,
        )
    )
    rows.append(
        Row(
            TITLE,
            "all iopub output messages of the cell (comm open/msg/close, displays, streams)",
            f"{total:,}",
            "raw SDK loop: 0 (shows nothing)",
            data=counts,
        )
    )
    rows.append(
        Row(
            TITLE,
            "kernel CPU per delta (whole kernel process)",
            fmt_us(per_delta),
            f"raw SDK, no display: {fmt_us(raw_per_delta)}",
            fmt_ratio(per_delta / raw_per_delta),
            data={"ours": ours["ours_cpu"], "raw": ours["raw_cpu"]},
        )
    )
    answer_size = len(expected.encode())
    rows.append(
        Row(
            TITLE,
            f"bytes of the cell's output messages, {deltas:,} deltas in a real kernel (JSON content)",
            fmt_bytes(ours["bytes"]),
            f"answer {fmt_bytes(answer_size)}"
            + (f"; chatlab displays: {fmt_bytes(chat['display_bytes'])}" if chat else ""),
            fmt_ratio(ours["bytes"] / answer_size) + " of the answer",
            data={"bytes": ours["bytes"]},
        )
    )
    if chat and chat["cpu"]:
        rows.append(
            Row(
                TITLE,
                "kernel CPU per delta: ours vs chatlab",
                fmt_us(per_delta),
                f"chatlab: {fmt_us(median(chat['cpu']) / deltas)}",
                fmt_ratio(per_delta / (median(chat["cpu"]) / deltas)),
                data={"chatlab": chat["cpu"]},
            )
        )
    rows.append(
        Row(
            TITLE,
            "cell wall time",
            fmt_s(median(ours["ours_wall"])),
            f"raw SDK: {fmt_s(median(ours['raw_wall']))}" + _chatlab_wall(chat),
            fmt_ratio(median(ours["ours_wall"]) / median(ours["raw_wall"])),
        )
    )
    same = ours["identical"] and ours["shown"]
    rows.append(
        Row(
            TITLE,
            "final text identical to the stream (Answer.text and the Markdown left in the notebook)",
            "yes" if same else f"**no** (text {ours['identical']}, shown {ours['shown']})",
            _chatlab_identical(chat),
            goal="identical",
            met=verdict(same),
        )
    )
    return rows


def _chatlab_wall(chat: dict | None) -> str:
    if not chat:
        return ""
    if chat["stopped"]:
        return f"; chatlab: stopped after {PEER_CELL_S} s"
    return f"; chatlab: {fmt_s(median(chat['wall']))}"


def _chatlab_identical(chat: dict | None) -> str:
    if not chat:
        return ""
    if not chat["wall"]:
        return "chatlab: did not finish"
    return "chatlab: identical" if chat["identical"] else "chatlab: **differs**"

"""3. Conversation cost: bytes sent and input tokens billed at turns 1, 10 and 50 of one thread.

The same 50 prompts (a name at turn 1, facts along the way, "What is my name?" at turn 50) go
through each contender against the same offline server:

- ours, server-side chaining (``store=True``: ``previous_response_id``, only the new turn is sent);
- ours, ``store=False`` (the thread's items are re-sent every turn);
- jupyter-ai-magics ``%%ai`` (LangChain ``ChatOpenAI``, chat completions), by default (it keeps
  the last ``max_history=2`` exchanges) and with ``max_history`` large enough to keep them all;
- chatlab ``Chat`` (chat completions, the whole history every turn).

"Bytes sent" is the request body the server received (``raw_size``; headers excluded). "Input
tokens billed" is the server's own usage: for ours from the response; for the peers, which do not
expose it, by replaying their recorded requests, in order and without streaming, to the server
reset in between. Cached tokens follow the API's rule (by content, from 1,024 tokens, in steps of
128: ``nbopenai/local/_prompt_cache.py``), so a thread re-sent whole is cached like a chained one;
the server is reset before each contender so none is served from another's cache. The figures are
deterministic (one run).
"""

from __future__ import annotations

import json
import urllib.request

from . import peers
from ._harness import Context, Row, fmt_bytes, fmt_ratio
from ._texts import thread_prompts

NAME = "conversation"
TITLE = "3. Conversation cost"
_NAME_RECALLED = "Your name is Ada"


def _ours(server, prompts: list[str], store: bool) -> dict:
    import nbopenai

    server.reset()
    per_turn = []
    with nbopenai.Session(
        nbopenai.Settings(base_url=server.base_url, model="nbopenai-local"), ledger_path=":memory:", store=store
    ) as session:
        for prompt in prompts:
            answer = session.ask(prompt, thread="bench")
            per_turn.append({"input": answer.usage.input, "cached": answer.usage.cached, "text": answer.text})
    requests = [r for r in server.requests if r.method == "POST" and r.path == "/v1/responses"]
    for turn, request in zip(per_turn, requests, strict=False):
        turn["bytes"] = request.raw_size
    return {"turns": per_turn, "recalls": _NAME_RECALLED in per_turn[-1]["text"]}


def _replay_usage(base_url: str, body: dict) -> tuple[int, int]:
    """Input and cached tokens the server bills for a chat completions body (sent again, not streamed)."""
    body = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
    request = urllib.request.Request(
        base_url + "/chat/completions", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        usage = json.loads(response.read())["usage"]
    return usage["prompt_tokens"], (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0


def _peer(ctx: Context, server, driver: str, args: dict) -> dict:
    server.reset()
    env = ctx.peer_env(server.base_url)
    result = peers.run_driver(driver, args, env)
    requests = [r for r in server.requests if r.method == "POST" and r.path == "/v1/chat/completions"]
    if len(requests) != len(args["prompts"]):
        raise RuntimeError(f"{driver}: expected {len(args['prompts'])} requests, the server saw {len(requests)}")
    server.reset()  # the replay rebuilds the prompt cache exactly as the peer's own requests did
    turns = []
    for request, answer in zip(requests, result["answers"], strict=False):
        tokens, cached = _replay_usage(server.base_url, request.body)
        turns.append({"bytes": request.raw_size, "input": tokens, "cached": cached, "text": answer})
    return {"turns": turns, "recalls": _NAME_RECALLED in (result["answers"][-1] or "")}


def _cell(result: dict, turn: int, what: str) -> str:
    data = result["turns"][turn - 1]
    if what == "bytes":
        return fmt_bytes(data["bytes"])
    cached = f" ({data['cached']:,} cached)" if data["cached"] else ""
    return f"{data['input']:,}{cached}"


def run(ctx: Context) -> list[Row]:
    turns = 5 if ctx.quick else 50
    checkpoints = (1, 3, 5) if ctx.quick else (1, 10, 50)
    prompts = thread_prompts(turns)
    contenders: dict[str, dict] = {}
    with ctx.server() as server:
        ctx.log(f"{TITLE}: ours, {turns} turns, store=True and store=False")
        contenders["ours (store=True, chained)"] = _ours(server, prompts, store=True)
        contenders["ours store=False"] = _ours(server, prompts, store=False)
        available = peers.versions() if ctx.peers else {}
        runs = []
        if "jupyter-ai-magics" in available:
            base = {"prompts": prompts, "model": "openai-chat:gpt-4o-mini"}
            runs.append(("jupyter-ai (default max_history=2)", "drive_jupyter_ai", {**base, "max_history": None}))
            runs.append(("jupyter-ai (max_history=all)", "drive_jupyter_ai", {**base, "max_history": turns}))
        if "chatlab" in available:
            runs.append(
                ("chatlab", "drive_chatlab", {"prompts": prompts, "model": "gpt-4o-mini", "base_url": server.base_url})
            )
        for label, driver, args in runs:
            ctx.log(f"{TITLE}: {label}")
            try:
                contenders[label] = _peer(ctx, server, driver, args)
            except Exception as error:
                ctx.note(f"{TITLE}: {label} could not run", f"{type(error).__name__}: {error}")
    ours = contenders.pop("ours (store=True, chained)")
    reference = next(
        (name for name in ("chatlab", "jupyter-ai (max_history=all)", "ours store=False") if name in contenders), None
    )
    rows: list[Row] = []
    for turn in checkpoints:
        for what, label in (("bytes", "bytes sent (request body)"), ("tokens", "input tokens billed")):
            others = "; ".join(f"{name}: {_cell(result, turn, what)}" for name, result in contenders.items())
            key = "bytes" if what == "bytes" else "input"
            ratio = ""
            if reference:
                theirs = contenders[reference]["turns"][turn - 1][key]
                ratio = f"{fmt_ratio(ours['turns'][turn - 1][key] / theirs)} vs {reference}" if theirs else ""
            rows.append(
                Row(
                    TITLE,
                    f"turn {turn}: {label}",
                    f"chained: {_cell(ours, turn, what)}",
                    others,
                    ratio,
                    data={"turn": turn, "what": what},
                )
            )

    def total(result: dict) -> tuple[int, int, int]:
        return tuple(sum(t[key] for t in result["turns"]) for key in ("bytes", "input", "cached"))

    totals = {name: total(r) for name, r in contenders.items()}
    ours_total = total(ours)
    rows.append(
        Row(
            TITLE,
            f"whole thread ({turns} turns): bytes sent / input tokens billed (of which cached)",
            f"chained: {fmt_bytes(ours_total[0])} / {ours_total[1]:,} ({ours_total[2]:,})",
            "; ".join(f"{name}: {fmt_bytes(b)} / {t:,} ({c:,})" for name, (b, t, c) in totals.items()),
            f"{fmt_ratio(ours_total[0] / totals[reference][0])} bytes vs {reference}" if reference else "",
        )
    )
    rows.append(
        Row(
            TITLE,
            f'turn {turns} ("What is my name?") still recalls turn 1',
            "yes" if ours["recalls"] else "**no**",
            "; ".join(f"{name}: {'yes' if r['recalls'] else 'no'}" for name, r in contenders.items()),
            goal="yes",
            met="yes" if ours["recalls"] else "**no**",
        )
    )
    return rows

"""``python -m benchmarks._paced_server``: the offline server, with non-streamed answers paced too.

``nbopenai.local`` spaces *streamed* deltas ``chunk_delay`` apart but returns a non-streamed answer
at once, which would flatter a client that does not stream: a real model takes as long to write an
answer whether or not it is streamed. For the time-to-first-text figure this wrapper holds every
non-streamed answer (``/v1/responses`` and ``/v1/chat/completions``) for ``chunk_delay`` times its
number of deltas before sending it, and otherwise runs the stock server unchanged.
(Proposed upstream as a server setting; until then it lives here, used only by the benchmarks.)
"""

from __future__ import annotations

import sys
import time
from typing import Any

from nbopenai.local import _chat, _routes
from nbopenai.local._responses import split_deltas
from nbopenai.local._routes import Reply, Request, Route


def _answer_text(payload: Any) -> str:
    if not isinstance(payload, dict):
        return ""
    if payload.get("object") == "chat.completion":
        return "".join((choice.get("message") or {}).get("content") or "" for choice in payload.get("choices", []))
    if payload.get("object") == "response":
        return "".join(
            part.get("text", "")
            for item in payload.get("output") or []
            if item.get("type") == "message"
            for part in item.get("content") or []
        )
    return ""


def _paced(handler):
    def handle(request: Request) -> Reply:
        reply = handler(request)
        if reply.events is None and reply.json is not None:
            config = request.state.config
            if config.chunk_delay > 0:
                text = _answer_text(reply.json)
                if text:
                    time.sleep(config.chunk_delay * len(split_deltas(text, config.chunk_size)))
        return reply

    return handle


def _patch(table: list[Route], paths: tuple[str, ...]) -> None:
    for index, route in enumerate(table):
        if route.method == "POST" and any(route.pattern.match(path) for path in paths):
            table[index] = Route(route.method, route.pattern, _paced(route.handler))


def main(argv: list[str] | None = None) -> int:
    _patch(_routes.ROUTES, ("/v1/responses",))
    _patch(_chat.ROUTES, ("/v1/chat/completions",))
    from nbopenai.local.__main__ import main as serve

    return serve(argv)


if __name__ == "__main__":
    sys.exit(main())

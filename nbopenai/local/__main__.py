"""``python -m nbopenai.local --port P``: print the base URL on one line, then serve until killed."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading

from ._server import LocalServer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nbopenai.local", description="Offline OpenAI Responses API server (the nbopenai demo model)."
    )
    parser.add_argument("--port", type=int, default=8787, help="port to listen on; 0 picks a free one (default 8787)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (loopback only unless --allow-remote)")
    parser.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --host")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before the first byte of each answer")
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between streamed deltas")
    parser.add_argument("--chunk-size", type=int, default=None, help="characters per text delta (default: one word)")
    parser.add_argument("--seed", type=int, default=0, help="seed for random faults")
    parser.add_argument("--require-api-key", default=None, help="answer 401 unless this key is sent")
    parser.add_argument(
        "--rpm",
        type=int,
        default=None,
        help="enforce this many requests per minute, as the API does (429s, x-ratelimit-* headers)",
    )
    parser.add_argument(
        "--tpm",
        type=int,
        default=None,
        help="enforce this many tokens per minute (a request's prompt + its max_output_tokens)",
    )
    parser.add_argument("--config", default="{}", help="other settings as a JSON object, e.g. '{\"fault_rate\": 0.1}'")
    args = parser.parse_args(argv)
    config = {
        "latency": args.latency,
        "chunk_delay": args.chunk_delay,
        "chunk_size": args.chunk_size,
        "seed": args.seed,
    }
    for name in ("rpm", "tpm"):
        if getattr(args, name) is not None:
            config[name] = getattr(args, name)
    if args.require_api_key is not None:
        config["require_api_key"] = args.require_api_key
    config.update(json.loads(args.config))
    try:
        server = LocalServer(args.port, args.host, allow_remote=args.allow_remote, **config).start()
    except (ValueError, OSError) as error:
        print(f"nbopenai.local: {error}", file=sys.stderr)
        return 2
    print(server.base_url, flush=True)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        stopped.wait()
    except KeyboardInterrupt:
        pass
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

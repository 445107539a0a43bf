"""The offline server's memory over a long run: its RSS after 10k requests, and after 100k.

    python -m benchmarks.server_memory                      # 10k and 100k requests (a few minutes)
    python -m benchmarks.server_memory --checkpoints 2000 20000 --unbounded   # the same without the bounds

The server runs in a subprocess (``python -m nbopenai.local``), so the figure is the server's alone,
read from ``/proc/<pid>/status`` (``VmRSS``). The traffic is what a day of use sends: distinct prompts,
one in ten streamed, one in five chained to the previous answer, one in fifty in a new conversation,
one in a hundred retrieved again; from a few keep-alive connections at once. ``--unbounded`` lifts the
server's limits (``max_responses``, ``max_conversations``, ``max_requests``) to show what they save.
The goal (issue 17): RSS after 100k within 1.5x of RSS after 10k.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

_REPO = Path(__file__).resolve().parent.parent
if str(_REPO) not in sys.path[:1]:
    sys.path.insert(0, str(_REPO))  # our checkout first, also when run as a file

from nbopenai.local import start_subprocess  # noqa: E402  (after the path is set)

__all__ = ["rss_mb", "run", "main"]

UNBOUNDED = {"max_responses": 10**9, "max_conversations": 10**9, "max_requests": 10**9}


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` now, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc (Linux only)")


class _Client:
    """One keep-alive connection sending the day's mix of requests."""

    def __init__(self, url: str, worker: int) -> None:
        parts = urlsplit(url)
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        self.worker = worker
        self.previous: str | None = None

    def post(self, path: str, body: dict) -> dict:
        data = json.dumps(body).encode()
        self.connection.request(
            "POST", path, data, {"Content-Type": "application/json", "Authorization": "Bearer local"}
        )
        reply = self.connection.getresponse()
        payload = reply.read()
        if body.get("stream"):
            return {}
        return json.loads(payload)

    def get(self, path: str) -> None:
        self.connection.request("GET", path, headers={"Authorization": "Bearer local"})
        self.connection.getresponse().read()

    def send(self, n: int) -> None:
        prompt = f"Request {n} from worker {self.worker}: summarise the day's notes, item {n * 7919 % 10007}."
        body: dict = {"model": "nbopenai-local", "input": prompt}
        if n % 50 == 0:
            body["conversation"] = self.post("/v1/conversations", {"metadata": {"n": str(n)}})["id"]
        elif n % 5 == 0 and self.previous:
            body["previous_response_id"] = self.previous
        if n % 10 == 0:
            self.post("/v1/responses", {**body, "stream": True})
            return
        response = self.post("/v1/responses", body)
        self.previous = response.get("id", self.previous)
        if n % 100 == 1 and self.previous:
            self.get(f"/v1/responses/{self.previous}")


def _send(url: str, start: int, stop: int, workers: int) -> None:
    """Requests ``start`` to ``stop`` over ``workers`` connections at once."""

    def work(worker: int) -> None:
        client = _Client(url, worker)
        for n in range(start + worker, stop, workers):
            client.send(n)
        client.connection.close()

    threads = [threading.Thread(target=work, args=(worker,)) for worker in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def run(checkpoints: list[int], *, workers: int = 4, unbounded: bool = False) -> list[tuple[int, float, float]]:
    """``(requests sent, server RSS in MB, seconds so far)`` at each checkpoint, after a start-up reading."""
    config = UNBOUNDED if unbounded else {}
    with start_subprocess(**config) as server:
        pid = server.process.pid
        started = time.monotonic()
        figures = [(0, rss_mb(pid), 0.0)]
        sent = 0
        for checkpoint in sorted(checkpoints):
            _send(server.base_url, sent, checkpoint, workers)
            sent = checkpoint
            figures.append((sent, rss_mb(pid), time.monotonic() - started))
            print(f"  {sent:>7,} requests: server RSS {figures[-1][1]:7.1f} MB ({figures[-1][2]:.0f} s)", flush=True)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.server_memory", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--unbounded", action="store_true", help="lift the server's limits, for comparison")
    args = parser.parse_args(argv)
    label = "unbounded" if args.unbounded else "bounded (the defaults)"
    print(f"offline server, {label}: RSS by requests sent")
    figures = run(args.checkpoints, workers=args.workers, unbounded=args.unbounded)
    (first, first_rss, _), (last, last_rss, _) = figures[1], figures[-1]
    print(
        f"RSS after {last:,} / after {first:,}: {last_rss / first_rss:.2f}x (goal: at most 1.5x); "
        f"at start {figures[0][1]:.1f} MB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Drive a server in another process: ``RemoteServer`` over the admin routes, ``start_subprocess``.

Benchmarks run the server in a subprocess so it does not share the client's GIL.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from typing import Any

from ._state import RecordedRequest

__all__ = ["RemoteServer", "SubprocessServer", "start_subprocess"]


class RemoteServer:
    """The control surface of ``LocalServer`` for a server reachable at ``url``.

    Parameters
    ----------
    url : str
        ``http://127.0.0.1:PORT`` (a trailing ``/v1`` is accepted too).
    """

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        url = url.rstrip("/")
        self.url = url[: -len("/v1")] if url.endswith("/v1") else url
        self.timeout = timeout

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def _call(self, method: str, name: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self.url}/_nbopenai/{name}", data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            detail = json.loads(error.read() or b"{}").get("error", {}).get("message", str(error))
            raise ValueError(detail) from None

    def inject(self, kind: str, count: int = 1, **params: Any) -> None:
        self._call("POST", "inject", {"kind": kind, "count": count, **params})

    def configure(self, **changes: Any) -> None:
        self._call("POST", "configure", changes)

    @property
    def config(self) -> dict[str, Any]:
        return self._call("GET", "config")

    @property
    def requests(self) -> list[RecordedRequest]:
        return [RecordedRequest(**r) for r in self._call("GET", "requests")["data"]]

    def clear_requests(self) -> None:
        self._call("POST", "clear_requests", {})

    def reset(self) -> None:
        self._call("POST", "reset", {})

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.base_url}>"


class SubprocessServer(RemoteServer):
    """A server started by ``start_subprocess``; ``stop()`` ends that process (and only it)."""

    def __init__(self, url: str, process: subprocess.Popen[bytes]) -> None:
        super().__init__(url)
        self.process = process

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> SubprocessServer:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()


def start_subprocess(
    port: int = 0, host: str = "127.0.0.1", *, timeout: float = 30.0, **config: Any
) -> SubprocessServer:
    """Run ``python -m nbopenai.local`` in a child process and return a handle once it serves.

    ``config`` takes the settings of ``LocalServer.configure`` (``latency``, ``chunk_delay``, ...).
    """
    command = [
        sys.executable,
        "-m",
        "nbopenai.local",
        "--port",
        str(port),
        "--host",
        host,
        "--config",
        json.dumps(config),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE)
    first_line: list[bytes] = []
    reader = threading.Thread(target=lambda: first_line.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if not first_line or not first_line[0].strip():
        process.kill()
        process.wait()
        raise RuntimeError(f"the offline server did not start within {timeout} s (exit code {process.poll()})")
    return SubprocessServer(first_line[0].decode().strip(), process)

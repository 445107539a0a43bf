"""``LocalServer``: the offline server on a background thread, and the control surface tests use."""

from __future__ import annotations

import ipaddress
import threading
from typing import Any

from ._errors import ApiError
from ._http import LocalHTTPServer
from ._state import Config, RecordedRequest, State

__all__ = ["LocalServer", "start", "admin"]


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def admin(state: State, method: str, name: str, body: dict[str, Any]) -> tuple[int, Any]:
    """The ``/_nbopenai/*`` routes: the same control as the Python API, for a server in a subprocess."""
    if (method, name) == ("POST", "configure"):
        state.configure(**body)
        return 200, state.config.as_dict()
    if (method, name) == ("GET", "config"):
        return 200, state.config.as_dict()
    if (method, name) == ("POST", "inject"):
        params = dict(body)
        kind = params.pop("kind", None)
        if not isinstance(kind, str):
            raise ApiError(400, "inject needs a 'kind'.", param="kind")
        state.faults.inject(kind, **params)
        return 200, {"pending": state.faults.pending()}
    if (method, name) == ("GET", "requests"):
        with state.lock:
            return 200, {"object": "list", "data": [r.to_dict() for r in state.requests]}
    if (method, name) == ("POST", "clear_requests"):
        state.clear_requests()
        return 200, {"ok": True}
    if (method, name) == ("POST", "reset"):
        state.reset()
        return 200, {"ok": True}
    if (method, name) == ("POST", "issue_token"):
        return 200, {"token": state.tokens.issue(state.config.token_lifetime or 3600.0)}
    if (method, name) == ("POST", "expire_tokens"):
        state.tokens.expire_all()
        return 200, {"ok": True}
    if (method, name) == ("GET", "health"):
        return 200, {"ok": True}
    raise ApiError(404, f"Unknown admin route {method} /_nbopenai/{name}.", code="unknown_url")


class LocalServer:
    """The offline OpenAI-compatible server, served from a daemon thread of this process.

    Parameters
    ----------
    port : int
        Port to bind; 0 picks a free one (read it back from ``url``).
    host : str
        Address to bind. Only loopback addresses unless ``allow_remote=True``.
    allow_remote : bool
        Allow binding a non-loopback address (the server has no authentication by default).
    **config
        Initial settings (see ``configure``): ``latency``, ``chunk_delay``, ``chunk_size``, ``seed``,
        ``fault_rate``, ``fault_kinds``, ``answer_tokens``, ``require_api_key``, ``context_window``,
        ``max_body_bytes``, ``background_delay``, ``rpm``, ``tpm``, ``rate_limit_window`` (rate limits:
        see ``nbopenai.local._limits``), ``models`` (names answered besides the demo model and OpenAI's;
        any other gets the API's 404 ``model_not_found``), ``max_responses``, ``max_conversations``,
        ``max_requests`` (what the server keeps, oldest dropped first).

    Examples
    --------
    >>> with LocalServer().start() as server:             # doctest: +SKIP
    ...     client = OpenAI(api_key="local", base_url=server.base_url)
    ...     server.inject("rate_limit", retry_after=0.1)
    """

    def __init__(self, port: int = 0, host: str = "127.0.0.1", *, allow_remote: bool = False, **config: Any) -> None:
        if not _is_loopback(host) and not allow_remote:
            raise ValueError(
                f"refusing to bind {host!r}: the offline server serves loopback only unless allow_remote=True"
            )
        settings = Config()
        settings.update(**config)
        self.host = host
        self._port = port
        self.state = State(settings)
        self._httpd: LocalHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> LocalServer:
        if self._httpd is not None:
            return self
        self._httpd = LocalHTTPServer((self.host, self._port), self.state, lambda m, n, b: admin(self.state, m, n, b))
        self._port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="nbopenai-local", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        httpd.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self._port}"

    @property
    def base_url(self) -> str:
        """What to pass as ``OpenAI(base_url=...)``."""
        return self.url + "/v1"

    def inject(self, kind: str, count: int = 1, **params: Any) -> None:
        """Queue ``kind`` for the next ``count`` requests to POST /v1/responses (or ``path=...``)."""
        self.state.faults.inject(kind, count, **params)

    def issue_token(self) -> str:
        """A new Entra ID-style token, valid ``token_lifetime`` seconds (what a test's token provider returns)."""
        return self.state.tokens.issue(self.state.config.token_lifetime or 3600.0)

    def expire_tokens(self) -> None:
        """End every token issued so far (the next request with one gets Azure's 401)."""
        self.state.tokens.expire_all()

    def configure(self, **changes: Any) -> None:
        """Change settings live, e.g. ``configure(latency=0.1, chunk_delay=0.01, fault_rate=0.1)``."""
        self.state.configure(**changes)

    @property
    def config(self) -> Config:
        return self.state.config

    @property
    def requests(self) -> list[RecordedRequest]:
        """Requests received so far, in arrival order (admin routes excluded)."""
        with self.state.lock:
            return list(self.state.requests)

    def clear_requests(self) -> None:
        self.state.clear_requests()

    def reset(self) -> None:
        """Forget responses, conversations, requests and faults; restore the initial settings."""
        self.state.reset()

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        status = "running" if self._httpd is not None else "stopped"
        return f"<LocalServer {self.base_url} {status}>"


def start(
    port: int = 0,
    host: str = "127.0.0.1",
    latency: float = 0.0,
    chunk_delay: float = 0.0,
    chunk_size: int | None = None,
    seed: int = 0,
    *,
    allow_remote: bool = False,
    **config: Any,
) -> LocalServer:
    """Start the offline server on a background thread and return it (also a context manager).

    Parameters
    ----------
    port, host, allow_remote
        Where to listen; see ``LocalServer``.
    latency : float
        Seconds before the first byte of every answer.
    chunk_delay : float
        Seconds between streamed deltas.
    chunk_size : int, optional
        Characters per text delta; by default text streams word by word.
    seed : int
        Seed of the random fault draws.
    **config
        Any other setting of ``LocalServer.configure``.
    """
    server = LocalServer(
        port,
        host,
        allow_remote=allow_remote,
        latency=latency,
        chunk_delay=chunk_delay,
        chunk_size=chunk_size,
        seed=seed,
        **config,
    )
    return server.start()

"""What every figure shares: the run context, timing statistics, the offline server, the table.

A figure is a module with ``NAME``, ``TITLE`` and ``run(ctx) -> list[Row]``. Rows are plain
strings already formatted; the numbers behind them stay in ``Row.data`` for anyone who wants them.
Every timed figure interleaves "ours" and its baseline in the same run and reports medians.
"""

from __future__ import annotations

import contextlib
import cProfile
import datetime as dt
import importlib.metadata
import json
import os
import platform
import pstats
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(__file__).resolve().parent
PEERS_DIR = BENCH_DIR / ".peers"

__all__ = [
    "Context",
    "Row",
    "REPO",
    "machine_header",
    "markdown_table",
    "median",
    "interleaved",
    "fmt_ms",
    "fmt_us",
    "fmt_ratio",
    "fmt_bytes",
    "verdict",
]


@dataclass
class Row:
    """One line of the results table (all cells already formatted)."""

    figure: str
    measure: str
    ours: str
    baseline: str = ""
    ratio: str = ""
    goal: str = ""
    met: str = ""  # "yes", "**no**" or "" (no goal)
    data: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass
class Context:
    """Options of one suite run, and a scratch folder that lives as long as the run."""

    quick: bool = False
    runs: int = 5
    peers: bool = True
    verbose: bool = True
    scratch: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="nbopenai-bench-")))
    notes: list[str] = field(default_factory=list)  # "where the time goes" paragraphs for misses
    load: tuple[float, ...] = field(default_factory=lambda: (_load(),))

    def log(self, message: str) -> None:
        if self.verbose:
            print(f"  . {message}", file=sys.stderr, flush=True)

    def note(self, title: str, text: str) -> None:
        self.notes.append(f"**{title}**\n\n{text.rstrip()}\n")

    def env(self, **extra: str) -> dict[str, str]:
        """The environment for child processes: our checkout first on the path, no real key."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
        env["NBOPENAI_HOME"] = str(self.scratch / "home")
        env.pop("NBOPENAI_MODEL", None)
        env.update(extra)
        return env

    def peer_env(self, base_url: str) -> dict[str, str]:
        """The environment of a peer's process (its own venv): a dummy key, ``base_url`` under both names
        the SDKs read (``OPENAI_API_BASE`` for older ones), and not our checkout on the path."""
        env = self.env(OPENAI_API_KEY="dummy", OPENAI_BASE_URL=base_url, OPENAI_API_BASE=base_url)
        return {k: v for k, v in env.items() if k != "PYTHONPATH"}

    @contextlib.contextmanager
    def server(self, *, paced: bool = False, **config: Any) -> Iterator[Any]:
        """The offline server in its own process (its CPU is not ours), warmed up with one request.

        ``paced``: non-streamed answers also take ``chunk_delay`` per delta (``_paced_server``).
        """
        from nbopenai.local import start_subprocess

        os.environ["PYTHONPATH"] = self.env()["PYTHONPATH"]  # start_subprocess inherits it
        handle = _start_paced(**config) if paced else start_subprocess(**config)
        try:
            _warm_up(handle.base_url)
            handle.clear_requests()
            yield handle
        finally:
            handle.stop()


def _start_paced(**config: Any) -> Any:
    from nbopenai.local import SubprocessServer

    command = [sys.executable, "-m", "benchmarks._paced_server", "--port", "0", "--config", json.dumps(config)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, cwd=REPO)
    first: list[bytes] = []
    reader = threading.Thread(target=lambda: first.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(30)
    if not first or not first[0].strip():
        process.kill()
        process.wait()
        raise RuntimeError("the paced offline server did not start")
    return SubprocessServer(first[0].decode().strip(), process)


def _warm_up(base_url: str) -> None:
    """One request per route, so the server's tokenizer is loaded before anything is timed.

    (The first requests build the o200k vocabulary; 50 concurrent first requests would each build
    it, see the report.)
    """

    for path, body in (
        ("/responses", {"model": "nbopenai-local", "input": "warm up", "store": False}),
        ("/chat/completions", {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "warm up"}]}),
    ):
        request = urllib.request.Request(
            base_url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()


# ---- statistics ------------------------------------------------------------------------------


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def interleaved(
    contenders: dict[str, Callable[[], Any]],
    runs: int,
    *,
    warmup: int = 1,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, list[float]]:
    """Seconds of each contender on ``clock`` (wall by default), run in turn (A B, B A, ...) so
    drift hits both alike. ``clock=time.process_time`` measures CPU instead: for CPU-bound work on
    a shared machine it ignores the time other processes take the core away.

    A contender may return a float: that value (seconds) is used instead of the measured time.
    """
    for _ in range(warmup):
        for fn in contenders.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for index in range(runs):
        order = list(contenders.items())
        if index % 2:
            order.reverse()
        for name, fn in order:
            started = clock()
            value = fn()
            elapsed = clock() - started
            times[name].append(value if isinstance(value, float) else elapsed)
    return times


# ---- formatting --------------------------------------------------------------------------------


def fmt_ms(seconds: float, digits: int = 1) -> str:
    return f"{seconds * 1000:,.{digits}f} ms"


def fmt_s(seconds: float) -> str:
    return f"{seconds:,.2f} s"


def fmt_us(seconds: float) -> str:
    return f"{seconds * 1e6:,.1f} µs"


def fmt_ratio(value: float) -> str:
    return f"{value:.3f}x" if value == value else "n/a"


def fmt_bytes(count: float) -> str:
    return f"{count:,.0f} B"


def verdict(ok: bool | None) -> str:
    if ok is None:
        return ""
    return "yes" if ok else "**no**"


# ---- the header and the table -----------------------------------------------------------------


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _load() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_revision() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "nbopenai"], cwd=REPO, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    revision = head.stdout.strip() or "unknown"
    return revision + (" + uncommitted changes in nbopenai/" if dirty.stdout.strip() else "")


def machine_header(ctx: Context, peer_versions: dict[str, str]) -> list[tuple[str, str]]:
    try:
        memory_kb = int(
            next(
                line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")
            ).split()[1]
        )
        memory = f", {memory_kb / 1024 / 1024:.0f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        memory = ""
    ours = ", ".join(
        f"{name} {_version(name)}"
        for name in ("nbopenai", "openai", "httpx2", "tiktoken", "pydantic", "ipython", "ipywidgets", "ipykernel")
    )
    peers = (
        ", ".join(f"{name} {version}" for name, version in peer_versions.items())
        or "none installed (see benchmarks/requirements.txt)"
    )
    return [
        ("Date", dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
        ("Machine", f"{_cpu_model()}, {os.cpu_count()} cores{memory}, {platform.system()} {platform.release()}"),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("Ours", f"{ours} (git {_git_revision()})"),
        ("Peers", peers),
        (
            "Runs",
            f"median of {ctx.runs} run{'s' if ctx.runs != 1 else ''} per figure"
            + (" (--quick: tiny sizes)" if ctx.quick else ""),
        ),
        ("Server", "nbopenai.local in its own process, on 127.0.0.1, with the latency each figure states"),
        (
            "Load",
            f"1-minute load average {ctx.load[0]:.2f} at the start, {_load():.2f} at the end "
            f"(on {os.cpu_count()} cores; other processes were not stopped)",
        ),
    ]


_COLUMNS = ("Figure", "Measure", "Ours", "Baseline / peer", "Ratio", "Goal", "Met")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(_COLUMNS) + " |", "|" + "|".join("---" for _ in _COLUMNS) + "|"]
    previous = None
    for row in rows:
        figure = row.figure if row.figure != previous else ""
        previous = row.figure
        cells = (figure, row.measure, row.ours, row.baseline, row.ratio, row.goal, row.met)
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def render_results(ctx: Context, rows: list[Row], header: list[tuple[str, str]], command: str, elapsed: float) -> str:
    head = "\n".join(f"- **{name}**: {value}" for name, value in header)
    misses = [row for row in rows if row.met == "**no**"]
    summary = (
        f"{len(misses)} goal{'s' if len(misses) != 1 else ''} missed: "
        + "; ".join(f"{r.figure} {r.measure}" for r in misses)
        if misses
        else "Every goal met."
    )
    parts = [
        "# nbopenai benchmarks",
        "",
        f"Written by `{command}` in {elapsed:,.0f} s. Figures are measurements, not test assertions; "
        "each timed figure runs ours and its baseline interleaved in the same run and reports medians. "
        "Ratios are ours / baseline (lower is better for times and bytes).",
        "",
        head,
        "",
        markdown_table(rows),
        "",
        summary,
    ]
    if ctx.notes:
        parts += ["", "## Notes and where the time goes", "", *ctx.notes]
    return "\n".join(parts).rstrip() + "\n"


def error_row(figure: str, error: BaseException) -> Row:
    message = f"{type(error).__name__}: {error}".splitlines()[0][:200]
    return Row(figure, "(figure failed)", f"error: {message}", met="**no**")


def _profiled(fn: Callable[[], Any], repeat: int):
    """``pstats.Stats`` of ``fn`` called ``repeat`` times under cProfile."""

    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(repeat):
        fn()
    profiler.disable()
    return pstats.Stats(profiler)


def profile_top(fn: Callable[[], Any], *, repeat: int = 3, top: int = 8, only: tuple[str, ...] = ()) -> str:
    """Where ``fn``'s time goes: the top functions by own time, as ``file:function share``."""
    stats = _profiled(fn, repeat)
    total = sum(entry[2] for entry in stats.stats.values()) or 1.0  # own time of everything
    rows = []
    for (filename, line, name), (_cc, _nc, tt, ct, _callers) in stats.stats.items():
        if only and not any(part in filename for part in only):
            continue
        rows.append((tt, ct, filename, line, name))
    rows.sort(reverse=True)
    lines = []
    for tt, ct, filename, _line, name in rows[:top]:
        short = _short_path(filename)
        lines.append(
            f"- `{short}:{name}` — {tt / total:.1%} own time ({ct / repeat * 1000:.2f} ms cumulative per call)"
        )
    return "\n".join(lines)


def cumulative_top(
    fn: Callable[[], Any], *, repeat: int = 3, top: int = 8, only: tuple[str, ...] = ("nbopenai",)
) -> str:
    """The top functions by cumulative time per call (within ``only``), for a "where does it go" note."""
    stats = _profiled(fn, repeat)
    rows = []
    for (filename, _line, name), (_cc, _nc, _tt, ct, _callers) in stats.stats.items():
        if only and not any(part in filename for part in only):
            continue
        rows.append((ct, filename, name))
    rows.sort(reverse=True)
    return "\n".join(
        f"- `{_short_path(f)}:{n}` — {ct / repeat * 1000:.2f} ms per call (cumulative)" for ct, f, n in rows[:top]
    )


def _short_path(filename: str) -> str:
    for marker in ("site-packages/", str(REPO) + "/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


def _package(filename: str) -> str:
    short = _short_path(filename)
    if short.startswith("~") or short.startswith("<"):
        return "builtins/C"
    if "/lib/python3" in short and "site-packages" not in short:
        return "stdlib (" + short.split("/lib/python3", 1)[1].split("/", 2)[1].removesuffix(".py") + ")"
    return short.split("/", 1)[0].removesuffix(".py")


def split_by_package(stats, top: int = 8) -> str:
    """Own time grouped by top-level package, as a markdown list (from ``pstats.Stats``)."""
    shares: dict[str, float] = {}
    for (filename, _, _), (_, _, tt, _, _) in stats.stats.items():
        key = _package(filename)
        shares[key] = shares.get(key, 0.0) + tt
    total = sum(shares.values()) or 1.0
    ranked = sorted(shares.items(), key=lambda item: -item[1])[:top]
    return "\n".join(f"- {name}: {seconds / total:.1%}" for name, seconds in ranked)


def profile_diff(ours: Callable[[], Any], baseline: Callable[[], Any], *, repeat: int = 3, top: int = 8) -> str:
    """Where ours spends more than the baseline: own time per call, by package and by function.

    cProfile inflates absolute times (it taxes every Python call); the differences show where to look.
    """
    mine, theirs = _profiled(ours, repeat), _profiled(baseline, repeat)

    def by(stats, key):
        out: dict[Any, float] = {}
        for (filename, _line, name), (_, _, tt, _, _) in stats.stats.items():
            k = key(filename, name)
            out[k] = out.get(k, 0.0) + tt / repeat
        return out

    packages = (by(mine, lambda f, n: _package(f)), by(theirs, lambda f, n: _package(f)))
    functions = (by(mine, lambda f, n: f"{_short_path(f)}:{n}"), by(theirs, lambda f, n: f"{_short_path(f)}:{n}"))
    total = sum(packages[0].values()) - sum(packages[1].values())

    def diff(pair):
        keys = set(pair[0]) | set(pair[1])
        return sorted(((pair[0].get(k, 0.0) - pair[1].get(k, 0.0), k) for k in keys), reverse=True)

    lines = [f"Profiled extra own time per call: {total * 1000:.2f} ms (under cProfile). By package:"]
    lines += [f"- {k}: +{d * 1000:.2f} ms" for d, k in diff(packages)[:top] if d > 0]
    lines += ["", "By function (own time, extra per call):"]
    lines += [f"- `{k}`: +{d * 1000:.2f} ms" for d, k in diff(functions)[:top] if d > 0]
    return "\n".join(lines)

"""6. Start-up: what ``import nbopenai`` and ``%load_ext nbopenai`` add to a fresh interpreter.

Each measurement is a new process (cold imports, as a user's kernel has them), interleaved with a
bare ``python -c pass``. ``%load_ext`` is timed inside an ``InteractiveShell`` around the
``load_ext`` call only. When a goal is missed, ``-X importtime`` names the imports that cost most.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

from ._harness import Context, Row, fmt_ms, median, verdict

NAME = "startup"
TITLE = "6. Start-up"

_HEAVY = ("pandas", "IPython", "ipywidgets", "numpy", "openai", "httpx2", "tiktoken", "pydantic", "sqlite3")

_IMPORT = f"""
import sys, json
import nbopenai
print(json.dumps({{m: m in sys.modules for m in {_HEAVY!r}}}))
"""

_LOAD_EXT = f"""
import sys, json, time
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config
config = Config(); config.HistoryManager.hist_file = ":memory:"
shell = InteractiveShell.instance(config=config)
before = set(sys.modules)
sys.stderr.write("@@load_ext@@\\n"); sys.stderr.flush()
started, cpu = time.perf_counter(), time.process_time()
shell.run_line_magic("load_ext", "nbopenai")
elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
loaded = {{m: m in sys.modules and m not in before for m in {_HEAVY!r}}}
print(json.dumps({{"seconds": elapsed, "cpu": cpu, "loaded": loaded}}))
"""


_CPU: dict[str, list[float]] = {}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _wall(argv: list[str], env: dict[str, str], label: str = "") -> tuple[float, str]:
    """Wall seconds of a fresh process (its CPU seconds are kept in ``_CPU[label]``)."""
    cpu = _children_cpu()
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    elapsed = time.perf_counter() - started
    _CPU.setdefault(label, []).append(_children_cpu() - cpu)
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv[:3])}... failed: "
            f"{done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}"
        )
    return elapsed, done.stdout


def _importtime(code: str, env: dict[str, str], after_marker: bool = False, top: int = 12) -> str:
    """The imports with the largest cumulative time, as markdown bullets."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    lines = done.stderr.splitlines()
    if after_marker and "@@load_ext@@" in lines:
        lines = lines[lines.index("@@load_ext@@") + 1 :]
    entries = []
    for line in lines:
        if not line.startswith("import time:") or "|" not in line:
            continue
        parts = [p for p in line[len("import time:") :].split("|")]
        if len(parts) != 3:
            continue
        cumulative, name = parts[1].strip(), parts[2].rstrip()
        if not cumulative.isdigit():
            continue
        depth = (len(name) - len(name.lstrip()) - 1) // 2
        entries.append((int(cumulative), depth, name.strip()))
    # Cumulative times nest (a package includes its submodules): the depth says which is inside which.
    skip = ("site", "encodings", "__editable__", "_signal")
    shallow = sorted((e for e in entries if e[1] <= 4 and not e[2].startswith(skip)), reverse=True)[:top]
    return "\n".join(f"- `{name}` {us / 1000:.1f} ms cumulative (import depth {depth})" for us, depth, name in shallow)


def run(ctx: Context) -> list[Row]:
    _CPU.clear()
    env = ctx.env()
    python = sys.executable
    runs = 1 if ctx.quick else max(10, ctx.runs * 2)
    bare, imported, loaded = [], [], []
    import_modules: dict[str, bool] = {}
    loaded_modules: dict[str, bool] = {}
    _wall([python, "-c", "import nbopenai"], env)  # warm the file cache (.pyc written) first
    for _ in range(runs):
        bare.append(_wall([python, "-c", "pass"], env, "bare")[0])
        seconds, out = _wall([python, "-c", _IMPORT], env, "import")
        imported.append(seconds)
        import_modules = json.loads(out.strip().splitlines()[-1])
        _, out = _wall([python, "-c", _LOAD_EXT], env)
        result = json.loads(out.strip().splitlines()[-1])
        loaded.append(result["seconds"])
        _CPU.setdefault("load_ext", []).append(result["cpu"])
        loaded_modules = result["loaded"]
    added_import = median(imported) - median(bare)
    load_ext = median(loaded)
    heavy_on_import = [m for m in ("pandas", "IPython") if import_modules.get(m)]
    also = [m for m, present in import_modules.items() if present and m not in ("pandas", "IPython")]
    loaded_now = [m for m, present in loaded_modules.items() if present]
    rows = [
        Row(
            TITLE,
            "`import nbopenai`: added wall time over `python -c pass`",
            fmt_ms(added_import),
            f"bare interpreter {fmt_ms(median(bare))}; "
            f"added CPU {fmt_ms(median(_CPU['import']) - median(_CPU['bare']))}",
            goal="",
            data={"bare": bare, "import": imported},
        ),
        Row(
            TITLE,
            "`import nbopenai` imports pandas / IPython",
            "none" if not heavy_on_import else ", ".join(heavy_on_import),
            f"it does import: {', '.join(also) or 'none of ' + ', '.join(_HEAVY)}",
            goal="neither",
            met=verdict(not heavy_on_import),
        ),
        Row(
            TITLE,
            "`%load_ext nbopenai`: added wall time (fresh InteractiveShell)",
            fmt_ms(load_ext),
            f"CPU {fmt_ms(median(_CPU['load_ext']))}; "
            f"loads first: {', '.join(loaded_now) or 'none of ' + ', '.join(_HEAVY)}",
            goal="< 300 ms",
            met=verdict(load_ext < 0.300),
            data={"load_ext": loaded},
        ),
    ]
    if heavy_on_import or not ctx.quick:
        ctx.note(
            f"{TITLE}: slowest imports under `import nbopenai` (-X importtime)", _importtime("import nbopenai", env)
        )
    if load_ext >= 0.300 or not ctx.quick:
        ctx.note(
            f"{TITLE}: slowest imports during `%load_ext nbopenai` (-X importtime, after IPython itself)",
            _importtime(_LOAD_EXT, env, after_marker=True),
        )
    return rows

"""The peers (jupyter-ai-magics, chatlab) live in their own venv; this module finds and drives it.

    python -m benchmarks.peers install    # create benchmarks/.peers/venv from requirements.txt
    python -m benchmarks.peers versions   # what is installed there

Peer code runs only in that venv's interpreter, as ``benchmarks/peer_drivers/*.py`` scripts that
print one JSON object, or as a Jupyter kernel started from that interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path
from typing import Any

from ._harness import BENCH_DIR, PEERS_DIR

__all__ = ["python", "available", "versions", "run_driver", "install"]

VENV = PEERS_DIR / "venv"
DRIVERS = BENCH_DIR / "peer_drivers"
PACKAGES = ("jupyter-ai-magics", "langchain-openai", "chatlab", "openai")


def python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def available() -> bool:
    return python().exists()


def versions() -> dict[str, str]:
    """Installed peer versions ({} when the venv is missing)."""
    if not available():
        return {}
    code = (
        "import json, importlib.metadata as m\n"
        "out = {}\n"
        f"for name in {PACKAGES!r}:\n"
        "    try: out[name] = m.version(name)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))"
    )
    done = subprocess.run([str(python()), "-c", code], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        return {}
    found = json.loads(done.stdout)
    return {("openai (peer venv)" if k == "openai" else k): v for k, v in found.items()}


def has(package: str) -> bool:
    return package in versions()


def run_driver(name: str, args: dict[str, Any], env: dict[str, str], timeout: float = 900) -> dict[str, Any]:
    """Run ``peer_drivers/<name>.py`` in the peer venv with ``args`` as JSON on stdin; its JSON reply."""
    done = subprocess.run(
        [str(python()), str(DRIVERS / f"{name}.py")],
        input=json.dumps(args),
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("@@result@@")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"peer driver {name} failed ({done.returncode}): {tail}")
    return json.loads(lines[-1][len("@@result@@") :])


def install() -> None:
    """Create the peers' venv and install ``requirements.txt`` into it (PyPI via pip)."""
    if not available():
        venv.EnvBuilder(with_pip=True).create(VENV)
    subprocess.run([str(python()), "-m", "pip", "install", "-r", str(BENCH_DIR / "requirements.txt")], check=True)


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else "versions"
    if command == "install":
        install()
    print(json.dumps(versions(), indent=2))

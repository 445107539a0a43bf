"""Front-ends for the benchmarks: an in-process IPython shell that records what it would send, and
a real Jupyter kernel driven over ZMQ (the messages a browser would receive, timestamped).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "RecordingComm",
    "recording_shell",
    "Kernel",
    "IopubMessage",
    "CellStopped",
    "PEER_CELL_S",
    "kernel_cpu_seconds",
]

# How long a peer's cell may run (``Kernel.execute(timeout=...)``): one that floods the kernel is stopped
# there, and its row says so, instead of the whole figure waiting and losing the row.
PEER_CELL_S = 120


class RecordingComm:
    """A widget comm that keeps what it would send, timed (as ipywidgets' own tests do).

    ``tests/conftest.py`` has its own: that one keeps the payloads the tests assert on, this one the
    times, the open message and the close that the byte and timing figures count. They share only
    the comm interface ipywidgets calls; the benchmarks do not import the tests, and a fake comm is
    not product code, so it has no place in ``nbopenai/`` either: two on purpose.
    """

    kernel = "recording"  # widgets only send when their comm has a kernel

    def __init__(
        self,
        target_name: str = "",
        data: Any = None,
        metadata: Any = None,
        buffers: Any = None,
        comm_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.comm_id = comm_id or uuid.uuid4().hex
        self.target_name = target_name
        self.messages: list[tuple[float, Any]] = [(time.perf_counter(), data)]  # the open message counts
        self.closed = False

    def send(self, data: Any = None, metadata: Any = None, buffers: Any = None) -> None:
        self.messages.append((time.perf_counter(), data))

    def close(self, data: Any = None, metadata: Any = None, buffers: Any = None, deleting: bool = False) -> None:
        if not self.closed:
            self.messages.append((time.perf_counter(), {"method": "close"}))
        self.closed = True

    def open(self, *args: Any, **kwargs: Any) -> None:
        pass

    def on_msg(self, callback: Any) -> None:
        pass

    def on_close(self, callback: Any) -> None:
        pass


@dataclass
class Recorder:
    comms: list[RecordingComm] = field(default_factory=list)
    displays: list[tuple[float, dict[str, Any], bool]] = field(default_factory=list)  # (time, bundle, update)

    def create_comm(self, **kwargs: Any) -> RecordingComm:
        comm = RecordingComm(**kwargs)
        self.comms.append(comm)
        return comm

    def clear(self) -> None:
        self.comms.clear()
        self.displays.clear()

    @property
    def comm_messages(self) -> list[tuple[float, Any]]:
        return sorted((m for c in self.comms for m in c.messages), key=lambda m: m[0])


@contextlib.contextmanager
def recording_shell(env: dict[str, str]) -> Iterator[tuple[Any, Recorder]]:
    """An ``InteractiveShell`` whose displays and widget comms are recorded, not printed.

    ``env`` is applied to ``os.environ`` for the duration (the extension reads its settings there).
    """
    import comm
    from IPython.core.displaypub import DisplayPublisher
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    recorder = Recorder()

    class RecordingPublisher(DisplayPublisher):
        def publish(self, data, metadata=None, source=None, *, transient=None, update=False, **kwargs):  # noqa: ANN001
            recorder.displays.append((time.perf_counter(), data, update))

    saved_env = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    saved_create = comm.create_comm
    comm.create_comm = recorder.create_comm
    if InteractiveShell.initialized():
        InteractiveShell.clear_instance()
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    shell = InteractiveShell.instance(config=config, colors="nocolor")
    shell.display_pub = RecordingPublisher(shell=shell)
    try:
        yield shell, recorder
    finally:
        with contextlib.suppress(Exception):
            shell.run_line_magic("unload_ext", "nbopenai")
        InteractiveShell.clear_instance()
        comm.create_comm = saved_create
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# ---- a real kernel ------------------------------------------------------------------------------


@dataclass(frozen=True)
class IopubMessage:
    at: float  # seconds since the execute request was sent
    msg_type: str
    content: dict[str, Any]  # {} once the cell's kept content passed ``Kernel.KEEP_BYTES``
    size: int = 0  # bytes of the content as JSON (counted even when the content is not kept)


class CellStopped(RuntimeError):
    """A cell outlived its bounded wait: the kernel was interrupted. Says what the cell had sent by then."""

    def __init__(self, seconds: float, bound: float, messages: list[IopubMessage], answered: bool) -> None:
        self.seconds, self.bound, self.messages = seconds, bound, messages
        total = sum(m.size for m in messages)
        what = "interrupted, then it answered" if answered else "interrupted; it did not answer"
        super().__init__(
            f"stopped waiting after {seconds:.0f} s (bound {bound:.0f} s): the cell had sent {len(messages):,} "
            f"output messages ({total / 1e6:,.1f} MB) and was still running; {what}"
        )


def kernel_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads), from /proc or psutil."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks
    except (OSError, IndexError, ValueError):
        import psutil

        times = psutil.Process(pid).cpu_times()
        return times.user + times.system


class Kernel:
    """A Jupyter kernel started from ``python``; ``execute`` returns the iopub messages of one cell."""

    def __init__(self, python: str, env: dict[str, str], scratch: Path, name: str = "bench") -> None:
        from jupyter_client import KernelManager
        from jupyter_client.kernelspec import KernelSpecManager

        kernels = scratch / f"kernels-{uuid.uuid4().hex[:8]}"
        spec = kernels / name
        spec.mkdir(parents=True)
        (spec / "kernel.json").write_text(
            json.dumps(
                {
                    "argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                    "display_name": name,
                    "language": "python",
                }
            )
        )
        self.manager = KernelManager(
            kernel_name=name, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels)])
        )
        # The kernel's own log (e.g. ipykernel's TCP warning) goes to a file, not our terminal.
        self._log = open(kernels / "kernel.log", "wb")
        self.manager.start_kernel(env=env, stdout=self._log, stderr=self._log)
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=120)

    @property
    def pid(self) -> int:
        provisioner = getattr(self.manager, "provisioner", None)
        process = getattr(provisioner, "process", None) or getattr(self.manager, "kernel", None)
        return process.pid

    def cpu(self) -> float:
        return kernel_cpu_seconds(self.pid)

    KEEP_BYTES = 64_000_000  # contents kept per cell; a flood beyond it is counted, not held in memory
    QUIET_S = 2.0  # after the reply, this long without output means the idle status was lost
    INTERRUPTED_S = 30.0  # how long an interrupted cell gets to answer

    def execute(self, code: str, timeout: float = 600) -> list[IopubMessage]:
        """Run ``code``; the iopub messages it caused (until idle). Raises if the cell failed.

        The wait is bounded: a cell still running after ``timeout`` seconds is interrupted and
        ``CellStopped`` says what it had sent. A cell that floods the kernel may have its idle status
        dropped by ZMQ (iopub sheds messages past its high-water mark), so the execute reply, which
        the shell channel never drops, ends the wait too, once the output has gone quiet.
        """
        client = self.client
        msg_id = client.execute(code, store_history=False)
        sent = time.perf_counter()
        messages: list[IopubMessage] = []
        kept = 0
        reply: dict[str, Any] | None = None
        deadline, interrupted_at, last_output = sent + timeout, None, sent
        while True:
            now = time.perf_counter()
            if reply is None and now > deadline:
                if interrupted_at is not None:
                    raise CellStopped(now - sent, timeout, messages, answered=False)
                self.manager.interrupt_kernel()
                interrupted_at, deadline = now, now + self.INTERRUPTED_S
            reply = reply or self._reply(msg_id)
            try:
                msg = client.get_iopub_msg(timeout=0.2)
            except queue.Empty:
                if reply is not None and time.perf_counter() - last_output > self.QUIET_S:
                    break
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            last_output = time.perf_counter()
            at = last_output - sent
            kind = msg["msg_type"]
            if kind == "status":
                if msg["content"]["execution_state"] == "idle":
                    break
                continue
            size = len(json.dumps(msg["content"], ensure_ascii=False).encode())
            kept += size
            messages.append(IopubMessage(at, kind, msg["content"] if kept <= self.KEEP_BYTES else {}, size))
        self.idle_at = last_output - sent  # the cell's wall time, as the front-end sees it (its last output)
        reply = reply or self._reply(msg_id, timeout=60)
        if interrupted_at is not None:
            raise CellStopped(interrupted_at - sent, timeout, messages, answered=True)
        if reply is None:
            raise RuntimeError("the kernel went idle but sent no execute reply within 60 s")
        if reply["content"]["status"] != "ok":
            trace = "\n".join(reply["content"].get("traceback", []))[-2000:]
            raise RuntimeError(
                f"cell failed: {reply['content'].get('ename')}: {reply['content'].get('evalue')}\n{trace}"
            )
        return messages

    def _reply(self, msg_id: str, timeout: float = 0) -> dict[str, Any] | None:
        """The execute reply to ``msg_id`` if it came within ``timeout`` seconds (replies to others are dropped)."""
        deadline = time.perf_counter() + timeout
        while True:
            try:
                reply = self.client.get_shell_msg(timeout=max(0.0, deadline - time.perf_counter()))
            except queue.Empty:
                return None
            if reply["parent_header"].get("msg_id") == msg_id:
                return reply

    def value(self, expression: str) -> Any:
        """``expression`` evaluated in the kernel, as JSON."""
        messages = self.execute(f"import json as _j; print('@@' + _j.dumps({expression}))")
        for message in messages:
            if message.msg_type == "stream":
                for line in message.content.get("text", "").splitlines():
                    if line.startswith("@@"):
                        return json.loads(line[2:])
        raise RuntimeError(f"no value for {expression!r}")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.stop_channels()
        with contextlib.suppress(Exception):
            self.manager.shutdown_kernel(now=True)
        self._log.close()

    def __enter__(self) -> Kernel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

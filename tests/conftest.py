"""Shared fixtures. Every test gets a clean environment; the rest are opt-in by name.

``local_server``
    The offline Responses API server (``nbopenai.local``), started once per test session and
    ``reset()`` before each test: no responses, requests, faults or settings carried over.
    ``local_server.requests`` lists what a test's client sent.
``session``
    A fresh ``nbopenai.Session`` on ``local_server``: model ``nbopenai-local``, in-memory ledger.
``make``
    ``make(**overrides)`` builds more such sessions (any ``Settings`` field), all closed afterwards.
``shell``
    A ``TestShell`` (an ``InteractiveShell`` whose ``run_cell`` raises the cell's error, so a failing
    cell fails the test), with nothing loaded.
``ip``
    ``shell`` after ``%load_ext nbopenai`` against ``local_server``, with retries on a tiny backoff
    and ``OPENAI_API_KEY=SECRET_KEY`` (a fake key: assert that it never shows in any output);
    unloaded, namespace and ``%config`` cleared afterwards. ``ip.magics_manager.registry["AskMagics"]``
    is the magics object, ``.session`` its session.
``recording_comm``
    Widgets get comms that record their messages instead of needing a front-end (as ipywidgets'
    own tests do): ``recording_comm.comms`` in creation order, ``recording_comm.messages`` all sent data.
    The widgets still open on them are closed after the test (none lives on to interpreter exit).

Autouse: ``OPENAI_*``, ``AZURE_OPENAI_*`` and ``NBOPENAI_MODEL`` are removed from the environment and ``NBOPENAI_HOME``
points at a fresh temporary folder, so no test sees a real key or writes to the user's ledger. For
what runs before any test (session-wide fixtures), ``NBOPENAI_HOME`` is a folder of the run's own.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

import nbopenai
from nbopenai.local import start

SECRET_KEY = "sk-test-" + "S3cr3tN0tRealKey" * 2  # tests that want a key set it and assert it never shows


def pytest_configure(config: pytest.Config) -> None:
    config._nbopenai_home = tempfile.mkdtemp(prefix="nbopenai-tests-")  # type: ignore[attr-defined]
    os.environ["NBOPENAI_HOME"] = config._nbopenai_home  # type: ignore[attr-defined]


def pytest_unconfigure(config: pytest.Config) -> None:
    if home := getattr(config, "_nbopenai_home", None):
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    for name in list(os.environ):
        if name.startswith(("OPENAI_", "AZURE_OPENAI_")):
            monkeypatch.delenv(name)
    monkeypatch.delenv("NBOPENAI_MODEL", raising=False)
    monkeypatch.setenv("NBOPENAI_HOME", str(tmp_path_factory.mktemp("nbopenai-home")))


# ---- the offline server and sessions on it ---------------------------------------------------


@pytest.fixture(scope="session")
def _local_server_once():
    server = start()
    yield server
    server.stop()


@pytest.fixture
def local_server(_local_server_once):
    """The session's offline server, reset (requests, faults, settings) for this test."""
    _local_server_once.reset()
    yield _local_server_once
    _local_server_once.reset()


@pytest.fixture
def session(local_server):
    """A fresh ``Session`` on ``local_server`` with an in-memory ledger."""

    with nbopenai.Session(base_url=local_server.base_url, model="nbopenai-local", ledger_path=":memory:") as s:
        yield s


@pytest.fixture
def make(local_server):
    """A factory of sessions on ``local_server`` (in-memory ledger, tiny retry backoff), closed after the test.

    ``make(**overrides)`` takes any ``Settings`` field, e.g. ``make(store=False, max_attempts=1)``.
    """

    made = []

    def build(**overrides):
        overrides.setdefault("ledger_path", ":memory:")
        overrides.setdefault("backoff_base", 0.01)
        made.append(
            nbopenai.Session(nbopenai.Settings(base_url=local_server.base_url, model="nbopenai-local"), **overrides)
        )
        return made[-1]

    yield build
    for session in made:
        session.close()


# ---- kernels -------------------------------------------------------------------------------------


@pytest.fixture
def kernel_env(local_server) -> dict[str, str]:
    """A kernel's environment: the in-process server, a fake key that must never show, this checkout."""
    from _kernels import local_kernel_env  # noqa: PLC0415 - Jupyter machinery loads only in the tests that start a kernel or a browser

    return local_kernel_env(local_server, SECRET_KEY)


@pytest.fixture
def kernel(kernel_env, tmp_path):
    """A real kernel driven the way JupyterLab drives it (``_kernels.Kernel``)."""
    from _kernels import Kernel  # noqa: PLC0415 - Jupyter machinery loads only in the tests that start a kernel or a browser

    k = Kernel(kernel_env, tmp_path)
    yield k
    k.close()


# ---- IPython -----------------------------------------------------------------------------------


class TestShell(InteractiveShell):
    """``run_cell`` raises the cell's error, after IPython has shown it as a user would see it
    (model: jupysql's testing shell)."""

    __test__ = False  # not a test class, despite the name

    def run_cell(self, *args: Any, **kwargs: Any):
        result = super().run_cell(*args, **kwargs)
        result.raise_error()
        return result


@pytest.fixture(scope="session")
def _shell_once():
    if InteractiveShell.initialized():  # another kind of shell from an earlier test: replace it
        InteractiveShell.clear_instance()
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    shell = TestShell.instance(config=config, colors="nocolor")
    yield shell
    TestShell.clear_instance()


@pytest.fixture
def shell(_shell_once):
    """The test shell with a clean namespace and no nbopenai configuration."""
    names = set(_shell_once.user_ns)
    yield _shell_once
    _shell_once.config.pop("AskMagics", None)
    # What `shell.reset()` would do for us, without its full garbage collection (0.5 s a test).
    for name in set(_shell_once.user_ns) - names:
        del _shell_once.user_ns[name]
    _shell_once.history_manager.output_hist.clear()


@pytest.fixture
def ip(shell, local_server, monkeypatch: pytest.MonkeyPatch):
    """``shell`` with ``%load_ext nbopenai`` pointed at ``local_server``."""
    monkeypatch.setenv("OPENAI_BASE_URL", local_server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET_KEY)
    monkeypatch.setenv("NBOPENAI_MODEL", "nbopenai-local")
    shell.run_cell("%load_ext nbopenai")
    magics = shell.magics_manager.registry["AskMagics"]
    magics.session.configure(backoff_base=0.001, backoff_max=0.01)
    yield shell
    shell.run_cell("%unload_ext nbopenai")


# ---- widgets -----------------------------------------------------------------------------------


class RecordingComm:
    """A comm that keeps what it is sent (model: ipywidgets' ``tests/utils.py`` ``DummyComm``).

    ``benchmarks/_shells.py`` has a timed one for its figures; its docstring says why they stay two.
    """

    kernel = "recording"  # widgets send only when their comm has a kernel

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
        self.open_data = data
        self.messages: list[Any] = []
        self.closed = False
        self.handler: Any = None

    def send(self, data: Any = None, metadata: Any = None, buffers: Any = None) -> None:
        self.messages.append(data)

    def close(self, data: Any = None, metadata: Any = None, buffers: Any = None, deleting: bool = False) -> None:
        self.closed = True

    def open(self, *args: Any, **kwargs: Any) -> None:
        pass

    def on_msg(self, callback: Any) -> None:
        self.handler = callback  # the widget's bound _handle_msg: how the recorder finds the widget to close

    def on_close(self, callback: Any) -> None:
        pass


class CommRecorder:
    def __init__(self) -> None:
        self.comms: list[RecordingComm] = []

    def create(self, **kwargs: Any) -> RecordingComm:
        comm = RecordingComm(**kwargs)
        self.comms.append(comm)
        return comm

    @property
    def messages(self) -> list[Any]:
        return [message for comm in self.comms for message in comm.messages]

    def close_widgets(self) -> None:
        """Close every widget still open on these comms (layouts and styles too, which have comms of their own).

        An open widget stays in ipywidgets' registry until the interpreter exits, and its ``__del__``
        then fails noisily ("Exception ignored in: Widget.__del__ ... 'NoneType' object has no
        attribute 'pop'"): a view a test leaves open on purpose (a kept background view) is closed here.
        """
        for recorded in self.comms:
            widget = getattr(recorded.handler, "__self__", None)
            if widget is not None and not recorded.closed:
                widget.close()


@pytest.fixture
def recording_comm(monkeypatch: pytest.MonkeyPatch):
    import comm  # noqa: PLC0415 - Jupyter machinery loads only in the tests that start a kernel or a browser

    recorder = CommRecorder()
    monkeypatch.setattr(comm, "create_comm", recorder.create)
    yield recorder
    recorder.close_widgets()

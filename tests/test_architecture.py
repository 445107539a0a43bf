"""The package's structure: no import cycle anywhere in it, and one factory for every ledger row."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from pydantic import BaseModel

from nbopenai._extract import extract
from nbopenai._ledger._usage import Ledger, UsageRecord

PACKAGE = Path(__file__).resolve().parent.parent / "nbopenai"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Every nbopenai module ``path`` imports: at module level, inside functions, and for type checking
    alone (a type-only import is still a dependency of the design)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            # `from . import _ask` imports the module _ask; `from ._ask import run` imports _ask.
            targets = [
                f"{module}.{alias.name}" if f"{module}.{alias.name}" in modules else module for alias in node.names
            ]
        else:
            continue
        found.update(target for target in targets if target in modules and target != name)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {name: _imports(path, set(paths)) for name, path in paths.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_every_kind_of_import():
    graph = import_graph()
    assert "nbopenai._turns._recorder" in graph["nbopenai._turns._ask"]  # module level
    assert "nbopenai._turns._tools" in graph["nbopenai._session"]  # inside a method
    assert "nbopenai._ledger._usage" in graph["nbopenai._ledger._writer"]  # type-only and lazy
    # A lazy import kept for import time (`# noqa: PLC0415 - reason`) is still a dependency.
    assert "nbopenai.widgets._progress" in graph["nbopenai._extract._progress"]
    assert "nbopenai.widgets" in graph["nbopenai.ipython._magics"]  # `from .. import widgets`


def test_the_graph_covers_every_subpackage():
    subpackages = {path.parent for path in PACKAGE.rglob("__init__.py")} - {PACKAGE}
    assert {"_core", "_turns", "_ledger", "_extract", "ipython", "widgets", "local"} <= {p.name for p in subpackages}
    graph = import_graph()
    for folder in subpackages:
        assert {_module_name(path) for path in folder.glob("*.py")} <= set(graph), folder.name


def test_no_import_cycle_in_the_package():
    """Every module of every subpackage: a lower layer never needs a higher one, not even for a type."""
    assert cycles(import_graph()) == []


def _row_constructions(path: Path) -> list[str]:
    """Where ``path`` calls ``UsageRecord(...)``, as ``file:function``."""
    found = []

    def visit(node: ast.AST, function: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else function
            if isinstance(child, ast.Call):
                called = child.func.id if isinstance(child.func, ast.Name) else getattr(child.func, "attr", None)
                if called == "UsageRecord":
                    found.append(f"{path.relative_to(PACKAGE).as_posix()}:{function}")
            visit(child, inner)

    visit(ast.parse(path.read_text(encoding="utf-8")), "<module>")
    return found


def test_no_code_builds_a_ledger_row_but_the_factory():
    """Every writer goes through ``UsageRecord.build`` (which calls ``cls(...)``): nothing else in the
    package calls ``UsageRecord(...)``, but the ledger reading its own rows back."""
    constructions = [where for path in PACKAGE.rglob("*.py") for where in _row_constructions(path)]
    assert set(constructions) <= {"_ledger/_usage.py:_record_of"}


class Person(BaseModel):
    name: str


def test_every_row_written_was_made_by_the_factory(local_server, make, monkeypatch):
    """Asks, tool rounds, background jobs, compaction, live and batch extraction: every row the ledger
    writes came out of ``UsageRecord.build``."""
    built: list[UsageRecord] = []
    written: list[UsageRecord] = []
    factory = UsageRecord.build.__func__
    write = Ledger.record_many

    def build(cls, **fields):
        built.append(factory(cls, **fields))
        return built[-1]

    def record_many(self, records):
        written.extend(records)
        return write(self, records)

    monkeypatch.setattr(UsageRecord, "build", classmethod(build))
    monkeypatch.setattr(Ledger, "record_many", record_many)
    session = make()

    def weather(city: str) -> str:
        return f"sunny in {city}"

    session.ask("My name is Ada.")
    session.ask("Call the weather tool for Paris.", tools=[weather])
    session.submit("Hello in the background").wait(timeout=60)
    session.compact()
    extract(session, Person, ["Ada", "Grace"], progress=False, cache=False)
    extract(session, Person, ["Ada"], progress=False, cache=False, batch=True)
    kinds = {row.kind for row in written}
    assert {"ask", "background", "compact", "extract", "batch"} <= kinds, kinds
    assert written and all(any(row is made for made in built) for row in written)


@pytest.mark.parametrize("status", ["interrupted", "cancelled"])
def test_the_session_rows_follow_the_one_cost_rule(session, status):
    # Session.usage_record (extraction's path) used to write 0.0 for a stopped call with no usage.
    assert session.usage_record(kind="extract", model="gpt-4.1-mini", status=status).cost_usd is None
    assert session.usage_record(kind="extract", model="gpt-4.1-mini", status="error").cost_usd == 0.0

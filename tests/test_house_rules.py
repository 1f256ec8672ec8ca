"""The house's structural rules, checked on the source with ``ast`` (issue 11's acceptance).

* no module over 500 lines (the standalone single-file device runner: 800; vendored code aside);
* no function or method over 100 lines;
* no import cycle among edgeqd's modules at module level. Imports inside functions are lazy on
  purpose (TensorFlow, or a real cycle broken with a comment) and do not count; imports under
  ``if TYPE_CHECKING:`` never run and do not count either.

Nothing is imported: the rules hold for the files as written, in well under a second.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Source folder → the package it is installed as (pyproject's package-dir maps the two outer ones).
SOURCE_ROOTS = {"edgeqd": ROOT / "edgeqd", "edgeqd.converters": ROOT / "converters",
                "edgeqd.devices": ROOT / "devices"}
SKIPPED = ("edgeqd._vendor",)  # generated code (the TFLite metadata schema)
MAX_MODULE_LINES = 500
# The runner is shipped to devices as one file that imports nothing from edgeqd.
MODULE_LINE_EXCEPTIONS = {"edgeqd.devices.runner": 800}
MAX_FUNCTION_LINES = 100


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    is_package: bool
    tree: ast.Module
    lines: int


def _module_name(top: str, relative: Path) -> tuple[str, bool]:
    parts = list(relative.with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts = parts[:-1]
    return ".".join([top, *parts]), is_package


def _load_modules() -> dict[str, Module]:
    modules: dict[str, Module] = {}
    for top, folder in SOURCE_ROOTS.items():
        for path in sorted(folder.rglob("*.py")):
            name, is_package = _module_name(top, path.relative_to(folder))
            # edgeqd/converters and edgeqd/devices do not exist; the outer folders are those packages.
            if any(name == s or name.startswith(s + ".") for s in SKIPPED) or name in modules:
                continue
            text = path.read_text(encoding="utf-8")
            modules[name] = Module(name, path, is_package, ast.parse(text, str(path)), len(text.splitlines()))
    return modules


MODULES = _load_modules()


def _where(module: Module, line: int | None = None) -> str:
    location = str(module.path.relative_to(ROOT))
    return f"{location}:{line}" if line is not None else location


def test_the_walk_sees_all_three_source_folders():
    assert {"edgeqd.pipeline", "edgeqd.converters.tflite", "edgeqd.devices.runner"} <= set(MODULES)
    assert not any(name.startswith("edgeqd._vendor") for name in MODULES)


def test_no_module_is_over_the_line_limit():
    offenders = [f"{_where(m)}: {m.lines} lines (limit {MODULE_LINE_EXCEPTIONS.get(m.name, MAX_MODULE_LINES)})"
                 for m in MODULES.values() if m.lines > MODULE_LINE_EXCEPTIONS.get(m.name, MAX_MODULE_LINES)]
    assert not offenders, "modules over the line limit:\n" + "\n".join(offenders)


def _functions(node: ast.AST, prefix: str = ""):
    """(qualified name, node) of every function and method, nested ones included."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield f"{prefix}{child.name}", child
            yield from _functions(child, f"{prefix}{child.name}.")
        elif isinstance(child, ast.ClassDef):
            yield from _functions(child, f"{prefix}{child.name}.")
        else:
            yield from _functions(child, prefix)


def test_no_function_is_over_the_line_limit():
    offenders = []
    for module in MODULES.values():
        for qualname, node in _functions(module.tree):
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                offenders.append(f"{_where(module, node.lineno)} {qualname}: {length} lines")
    assert not offenders, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(offenders)


# --------------------------------------------------------------------------- import graph

def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _module_level_imports(body: list[ast.stmt]):
    """Import statements that run when the module is imported: not in functions, not under TYPE_CHECKING."""
    for statement in body:
        if isinstance(statement, (ast.Import, ast.ImportFrom)):
            yield statement
        elif isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        elif isinstance(statement, ast.If) and _is_type_checking(statement.test):
            yield from _module_level_imports(statement.orelse)
        else:
            # if/try/with/for bodies and class bodies run at import time.
            for field in ("body", "orelse", "finalbody", "handlers"):
                children = getattr(statement, field, None)
                if isinstance(children, list):
                    yield from _module_level_imports(
                        [c for item in children for c in (item.body if isinstance(item, ast.ExceptHandler)
                                                          else [item])])


def _targets(module: Module, statement: ast.Import | ast.ImportFrom) -> list[str]:
    """The edgeqd modules an import statement loads (``from pkg import sub`` → ``pkg.sub``)."""
    if isinstance(statement, ast.Import):
        return [alias.name for alias in statement.names if alias.name in MODULES]
    if statement.level:
        package = module.name if module.is_package else module.name.rpartition(".")[0]
        base_parts = package.split(".")
        base = ".".join(base_parts[:len(base_parts) - (statement.level - 1)])
        source = f"{base}.{statement.module}" if statement.module else base
    else:
        source = statement.module or ""
    if source not in MODULES:
        return []
    found = []
    for alias in statement.names:
        submodule = f"{source}.{alias.name}"
        # A name that is a submodule loads that submodule; any other name comes from `source` itself.
        found.append(submodule if submodule in MODULES else source)
    return list(dict.fromkeys(found))


def import_graph() -> dict[str, dict[str, int]]:
    """module → {imported edgeqd module: line of the first such import}, module-level imports only."""
    graph: dict[str, dict[str, int]] = {name: {} for name in MODULES}
    for module in MODULES.values():
        for statement in _module_level_imports(module.tree.body):
            for target in _targets(module, statement):
                if target != module.name:
                    graph[module.name].setdefault(target, statement.lineno)
    return graph


def strongly_connected(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's components with more than one module (every cycle lies inside one), iteratively."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
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
                    components.append(sorted(component))
    return components


def _describe(component: list[str], graph: dict[str, dict[str, int]]) -> str:
    members = set(component)
    edges = [f"    {_where(MODULES[source], line)} imports {target}"
             for source in component for target, line in sorted(graph[source].items()) if target in members]
    return f"  cycle among {', '.join(component)}:\n" + "\n".join(edges)


def test_the_import_graph_finds_a_cycle_when_there_is_one():
    # The detector itself can fail: a two-module cycle and a three-module one are both reported.
    graph = {"a": {"b": 1}, "b": {"a": 2}, "c": {"d": 1}, "d": {"e": 1}, "e": {"c": 1}, "f": {"a": 1}}
    assert strongly_connected(graph) == [["a", "b"], ["c", "d", "e"]]


def test_no_import_cycle_at_module_level():
    graph = import_graph()
    # The registries' package __init__ files import their format/transport modules: the graph has edges.
    assert "edgeqd.converters.tflite" in graph["edgeqd.converters"]
    cycles = strongly_connected(graph)
    assert not cycles, ("module-level import cycles (move the shared piece to a lower module, or import "
                        "lazily inside the function with a comment saying why):\n"
                        + "\n".join(_describe(c, graph) for c in cycles))

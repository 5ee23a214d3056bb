"""edgetl's modules import each other without cycles, lazy imports inside functions included (read from the source)."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

PACKAGE = Path(__file__).resolve().parents[1] / "edgetl"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: Set[str]) -> Set[str]:
    """The edgetl modules a file imports, at module level or inside functions (not under ``if TYPE_CHECKING``).

    Lazy imports count: a cycle through a function-level import still means two modules that cannot be
    understood, tested or loaded apart (edgetl once broke one with a global re-entrancy flag).
    """
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: Set[str] = set()
    nodes = list(tree.body)
    while nodes:
        node = nodes.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            nodes.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        nodes.extend(ast.iter_child_nodes(node))
    return {name for name in found if name in modules}


def _graph() -> Dict[str, Set[str]]:
    files = {(_module_name(p)): p for p in PACKAGE.rglob("*.py")}
    return {name: _imports(path, set(files)) - {name} for name, path in files.items()}


def _cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    cycles, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                cycles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def test_no_import_cycles():
    graph = _graph()
    assert "edgetl.runtime.sandbox" in graph["edgetl.runtime.interpreter"]  # the graph is read
    # A parent package's __init__ importing its own submodules is how packages re-export; not a cycle.
    for name in graph:
        graph[name] = {target for target in graph[name] if not name.startswith(target + ".")}
    assert _cycles(graph) == []


def test_the_device_side_builds_interpreters_in_one_place():
    """The loader and the sandbox's child both call runtime.backend.build_interpreter; the sandbox never calls the loader."""
    graph = _graph()
    assert "edgetl.runtime.interpreter" not in graph["edgetl.runtime.sandbox"]
    sandbox = (PACKAGE / "runtime" / "sandbox.py").read_text(encoding="utf-8")
    loader = (PACKAGE / "runtime" / "interpreter.py").read_text(encoding="utf-8")
    assert "build_interpreter(" in sandbox and "build_interpreter(" in loader and "load_interpreter(" not in sandbox
    assert "interpreter_class(" not in sandbox + loader  # the runtime's Interpreter is constructed in backend only

"""Layers only point down: no import cycle among beft's modules, counting every import at any depth (inside a
function or an `if TYPE_CHECKING:` block too: an import made late is still a dependency, it only moves the
failure from import time to call time), relative imports included."""
import ast
from pathlib import Path

from conftest import REPO


def modules(package: Path) -> dict[str, Path]:
    """{dotted module name: file} of every module under `package` (a package is its __init__)."""
    return {".".join(p.relative_to(package.parent).with_suffix("").parts).removesuffix(".__init__"): p
            for p in sorted(package.rglob("*.py"))}


def imports(package: Path) -> dict[str, set[str]]:
    """{module: the modules of the package it imports}, from every import statement in its file."""
    known = modules(package)
    graph = {}
    for name, path in known.items():
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]   # what `.` means in this file
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:   # from . import x, from ..y import z
                    parts = here.split(".")[: len(here.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                # `from beft import config` imports the module beft.config; `from beft.fit import fit`, beft.fit
                targets |= {f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                            for alias in node.names}
        graph[name] = {t for t in targets if t in known and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import cycle, each as a path a -> b -> ... -> a: one per strongly connected component."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []

    def visit(module):
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in sorted(graph[module]):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(_path_through(sorted(component)[0], component, graph))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def _path_through(start: str, component: set[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest cycle from `start` back to itself inside its component (breadth first)."""
    previous, frontier = {start: None}, [start]
    while frontier:
        following = []
        for module in frontier:
            for target in sorted(graph[module] & component):
                if target == start:
                    path = [module]
                    while previous[path[-1]] is not None:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start] if len(path) > 1 else [start, module, start]
                if target not in previous:
                    previous[target] = module
                    following.append(target)
        frontier = following
    raise AssertionError(f"{start} is in a cycle but no path leads back to it")


def describe(found: list[list[str]]) -> str:
    return "\n".join(" -> ".join(cycle) for cycle in found)


def test_beft_has_no_import_cycle():
    graph = imports(REPO / "beft")
    assert len(graph) > 50 and "beft.config" in graph["beft.pipeline"]   # the walk sees the package
    found = cycles(graph)
    assert not found, f"import cycles (layers must only point down):\n{describe(found)}"


def test_the_walk_finds_a_cycle_closed_inside_a_function(tmp_path):
    """The check itself can fail: a cycle made only by an import inside a function, and one by relative imports."""
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "low.py").write_text("import os\n\ndef helper():\n    from pkg.high import main\n    return main\n")
    (package / "high.py").write_text("from pkg import low\n\ndef main():\n    return low.helper\n")
    (package / "sub" / "__init__.py").write_text("from .a import x\n")
    (package / "sub" / "a.py").write_text("x = 1\n\ndef f():\n    from ..sub import b\n")
    (package / "sub" / "b.py").write_text("from . import a\n")
    graph = imports(package)
    assert graph["pkg.low"] == {"pkg.high"} and graph["pkg.high"] == {"pkg.low"}
    assert graph["pkg.sub.a"] == {"pkg.sub.b"} and graph["pkg.sub.b"] == {"pkg.sub.a"}
    found = cycles(graph)
    assert sorted(found) == [["pkg.high", "pkg.low", "pkg.high"], ["pkg.sub.a", "pkg.sub.b", "pkg.sub.a"]]
    assert "pkg.high -> pkg.low -> pkg.high" in describe(found)

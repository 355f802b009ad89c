"""No import circles: between the project's modules (imports inside functions count too), and
between its top-level packages, which form layers: trainables (and search_spaces) at the bottom,
then dashboards, then orchestrator. The layout names and the experiment reader need neither torch
nor Ray."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("trainables", "search_spaces", "dashboards", "orchestrator")


def project_modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imports(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """The project modules that `name` imports, anywhere in its file. `from package import x`
    imports module package.x where x is one, else the package itself."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found |= {f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names}
    return {m for m in found if m in modules and m != name}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph, as the list of its nodes, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_module_imports_itself_back():
    modules = project_modules()
    graph = {name: imports(path, name, modules) for name, path in modules.items()}
    assert sum(len(v) for v in graph.values()) > 50  # the walk sees the project's imports
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_packages_form_layers():
    modules = project_modules()
    graph: dict[str, set[str]] = {p: set() for p in PACKAGES}
    for name, path in modules.items():
        top = name.split(".")[0]
        graph[top] |= {m.split(".")[0] for m in imports(path, name, modules)} - {top}
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))
    assert graph["trainables"] == set(), graph


def test_layout_and_the_experiment_reader_import_neither_torch_nor_ray():
    code = ("import sys, trainables.layout, trainables.experiment, trainables.settings; "
            "print(sorted(m for m in ('torch', 'ray') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr

"""The package's layout: dependencies point one way (shared/DESIGN.md), with no import cycle.

Reads every module's imports from its source (function-level imports included, since a lazy
import is still a dependency) and checks two things: no cycle among modules, and no folder
importing one on its own floor or above (cli -> server -> chat -> engine -> memory / convert ->
kernels -> format -> config -> errors)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "edgeoss"

# A module may import its own folder and folders on lower floors only.
FLOORS = {"errors": 0, "config": 1, "format": 2, "kernels": 3, "memory": 4, "convert": 4,
          "engine": 5, "chat": 6, "server": 7, "cli": 8}


def package_modules(root: Path = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> source file, for every .py under the package."""
    mods = {}
    for path in sorted(root.rglob("*.py")):
        parts = ("edgeoss",) + path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def import_graph(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the package modules it imports (the deepest existing module each import names)."""

    def known(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                # `from pkg import name` names a module when pkg.name is one, else something in pkg
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for t in targets:
                t = known(t) if t.startswith("edgeoss") else None
                if t and t != mod and not mod.startswith(t + "."):  # a parent package is implicit
                    deps.add(t)
        graph[mod] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def folder(mod: str) -> str | None:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else None  # None: the package's own __init__ (the public API)


def test_the_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_import_walker_sees_relative_and_lazy_imports():
    graph = import_graph(package_modules())
    # a top-level relative import, and one inside a function (the engine plans before loading)
    assert "edgeoss.format.model_dir" in graph["edgeoss.engine.model"]
    assert "edgeoss.memory.planner" in graph["edgeoss.engine.model"]
    assert "edgeoss.errors" in graph["edgeoss.cli.main"]


def test_no_import_cycle_in_the_package():
    assert cycles(import_graph(package_modules())) == []


def test_every_folder_imports_only_lower_floors():
    mods = package_modules()
    assert {folder(m) for m in mods} - {None} <= set(FLOORS), "a new folder needs its floor in FLOORS"
    wrong = []
    for mod, deps in import_graph(mods).items():
        here = folder(mod)
        if here is None:
            continue
        for dep in deps:
            there = folder(dep)
            if there is None or (there != here and FLOORS[there] >= FLOORS[here]):
                wrong.append(f"{mod} imports {dep}")
    assert wrong == [], "a module that needs a higher floor is in the wrong room:\n" + "\n".join(sorted(wrong))


def test_each_folder_says_what_it_does_and_what_it_must_not_import():
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert doc and ("never" in doc or "nothing" in doc.lower()), f"{init} must open with its purpose and rule"

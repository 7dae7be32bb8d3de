"""The house rules the import graph must keep: one direction of flow, so no import cycle (lazy
imports inside functions count: they only hide a cycle; a package __init__ that imports all its
modules through pkgutil.iter_modules imports each of them), and no module importing its own
package's __init__ (`from pkg import name` or `import pkg` inside pkg: an arrow that runs back
up, held together by import order)."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TOPS = ("benchmarks", "datasets", "methods", "metrics", "registry", "runners")


def _modules(root: Path) -> dict[str, Path]:
    files = []
    for top in TOPS:
        files += sorted((root / top).rglob("*.py")) if (root / top).is_dir() else list(root.glob(f"{top}.py"))
    names = {}
    for path in files:
        parts = list(path.relative_to(root).with_suffix("").parts)
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def import_graph(root: Path) -> tuple[dict[str, set[str]], list[tuple[str, str, str]]]:
    """Return (module -> project modules it imports anywhere in its source, imports of a name
    defined in the importer's own package __init__ as (module, package, name))."""
    mods = _modules(root)
    edges: dict[str, set[str]] = {}
    back_up: list[tuple[str, str, str]] = []
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        out: set[str] = set()
        source = path.read_text()
        if path.name == "__init__.py" and "iter_modules" in source:  # imports every module of the package
            out.update(m for m in mods if m.rpartition(".")[0] == name)
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                out.update(a.name for a in node.names if a.name in mods)
                if path.name != "__init__.py":
                    back_up += [(name, a.name, "") for a in node.names if name.startswith(a.name + ".")]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target not in mods:
                    continue
                for alias in node.names:
                    if f"{target}.{alias.name}" in mods:  # a submodule
                        out.add(f"{target}.{alias.name}")
                        continue
                    out.add(target)
                    if mods[target].name == "__init__.py" and path.name != "__init__.py" and name.startswith(target + "."):
                        back_up.append((name, target, alias.name))
        edges[name] = out - {name}
    return edges, back_up


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Return one cycle per back edge a depth-first search meets (empty: the graph is acyclic)."""
    state: dict[str, int] = {}
    found: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                found.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path)
        path.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [])
    return found


def test_the_import_graph_has_no_cycle_and_no_import_back_into_an_own_init():
    edges, back_up = import_graph(REPO)
    assert len(edges) > 70 and "runners.cluster" in edges["runners.run"]  # the graph is really read
    assert cycles(edges) == []
    assert back_up == []


def test_the_checks_see_a_lazy_cycle_and_an_import_back_up(tmp_path):
    """The same checks on a scratch tree that has both faults, each hidden the usual way."""
    (tmp_path / "runners").mkdir()
    (tmp_path / "runners" / "__init__.py").write_text("from .a import helper\n")
    (tmp_path / "runners" / "a.py").write_text("from . import b\n\ndef helper():\n    return b\n")
    (tmp_path / "runners" / "b.py").write_text("def f():\n    from .a import helper  # lazy: hides the cycle\n")
    (tmp_path / "runners" / "c.py").write_text("from runners import helper\n")
    (tmp_path / "runners" / "d.py").write_text("import runners\n\nhelper = runners.helper\n")
    (tmp_path / "methods").mkdir()  # a package that imports all its modules, one of which imports back
    (tmp_path / "methods" / "__init__.py").write_text("import pkgutil\nfor m in pkgutil.iter_modules(__path__):\n    pass\n")
    (tmp_path / "methods" / "e.py").write_text("from runners.f import g\n")
    (tmp_path / "runners" / "f.py").write_text("import methods\n\ndef g():\n    return methods\n")
    edges, back_up = import_graph(tmp_path)
    assert sorted(cycles(edges)) == [["methods", "methods.e", "runners.f", "methods"], ["runners.a", "runners.b", "runners.a"]]
    assert sorted(back_up) == [("runners.c", "runners", "helper"), ("runners.d", "runners", "")]

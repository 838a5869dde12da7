"""Import rules (docs/architecture.md, "Imports"): no cycles; provisioning stands without gafkd.

The cycle guard reads the modules' syntax trees rather than importing them, so it counts every
import: at the top, inside a function, and under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("gafkd", "provisioning", "tasks")  # tasks: the root tasks.py
BANNED = {
    "provisioning": ("gafkd", "torch"),
    "gafkd": ("fabric", "invoke", "paramiko", "provisioning"),
}


def module_files() -> dict[str, Path]:
    """Every module of the packages (and a root ``tasks.py``), by dotted name."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        single = ROOT / f"{package}.py"
        if single.is_file():
            found[package] = single
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imported_names(name: str, path: Path, modules: dict[str, Path]) -> Iterator[str]:
    """The modules of ours that ``name`` imports, anywhere in its file."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from . import x, from ..a import b
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            # from gafkd import rundir names the module gafkd.rundir; from gafkd import x, a name
            targets = [
                f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # import a.b.c where c is not a module
                target = target.rpartition(".")[0]
            if target and target != name:
                yield target


def import_graph() -> dict[str, set[str]]:
    modules = module_files()
    return {name: set(imported_names(name, path, modules)) for name, path in modules.items()}


def shortest_path(graph: dict[str, set[str]], start: str, goal: str) -> list[str] | None:
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for after in sorted(graph[node]):
                if after not in paths:
                    paths[after] = [*paths[node], after]
                    following.append(after)
        if goal in paths:
            return paths[goal]
        frontier = following
    return None


def cycles(graph: dict[str, set[str]]) -> list[str]:
    """One line per cycle, "a -> b -> a": for each import, the shortest way back, if any."""
    found: set[tuple[str, ...]] = set()
    for module, imports in graph.items():
        for imported in imports:
            back = shortest_path(graph, imported, module)
            if back is not None:
                loop = [module, *back[:-1]]
                first = loop.index(min(loop))  # one rotation per cycle
                found.add(tuple(loop[first:] + loop[:first]))
    return sorted(" -> ".join([*loop, loop[0]]) for loop in found)


def test_the_guard_finds_a_cycle_inside_a_function_and_under_type_checking(tmp_path: Path) -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == ["a -> b -> c -> a"]
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "low.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.high import x\n"
    )
    (package / "high.py").write_text("def f():\n    from . import low\n")
    modules = {"pkg": package / "__init__.py", "pkg.low": package / "low.py"}
    modules["pkg.high"] = package / "high.py"
    graph = {name: set(imported_names(name, path, modules)) for name, path in modules.items()}
    assert graph == {"pkg": set(), "pkg.low": {"pkg.high"}, "pkg.high": {"pkg.low"}}


def test_no_module_imports_itself_back() -> None:
    graph = import_graph()
    assert "gafkd.cli" in graph
    assert "provisioning.core" in graph
    assert {"gafkd.experiments.launch", "provisioning.hosts", "provisioning.steps"} <= graph[
        "tasks"
    ]
    found = cycles(graph)
    assert not found, "import cycles (docs/architecture.md, Imports):\n" + "\n".join(found)


def test_provisioning_imports_without_gafkd_or_torch() -> None:
    modules = module_files()
    names = sorted(name for name in modules if name.startswith("provisioning."))
    code = (
        f"import sys, provisioning, {', '.join(names)}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('gafkd', 'torch')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "[]"
    # nor inside a function, where importing the module does not show it
    found = banned_imports("provisioning")
    assert not found, "provisioning imports gafkd or torch at " + ", ".join(found)


def banned_imports(package: str) -> list[str]:
    """Where a module of `package` imports one it must not (`BANNED`), anywhere in its file."""
    modules = module_files()
    names = sorted(name for name in modules if name.split(".")[0] == package)
    banned = BANNED[package]
    return [
        f"{modules[name].relative_to(ROOT)}:{node.lineno}"
        for name in names
        for node in ast.walk(ast.parse(modules[name].read_text()))
        if (
            isinstance(node, ast.Import) and any(a.name.split(".")[0] in banned for a in node.names)
        )
        or (isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in banned)
    ]


def test_gafkd_never_imports_fabric_invoke_or_provisioning() -> None:
    """Not at the top (tests/test_layout.py imports it), nor inside a function."""
    found = banned_imports("gafkd")
    assert not found, "gafkd imports fabric, invoke or provisioning at " + ", ".join(found)

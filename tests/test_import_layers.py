"""The import graph: no circles among modules or packages, and packages import only downward.

The graph is read from the source with `ast`, so every import counts: module-level, inside
functions, and type-only ones under `if TYPE_CHECKING:` (a circle of types is still a circle a
reader must hold in mind). Importing a module's own parent package (its `__init__`, the
package's face) is not an edge. Migrations are Alembic's scripts, not part of the layers.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterable
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "autopack"

# Top to bottom: a package may import packages of its own layer or of a lower one, never of a
# higher one (DESIGN §1: cli -> drain -> executor/llm/estimator/telemetry/seed -> db ->
# settings). Peers of one layer may import each other as long as no circle forms. A new
# package or top-level module must be placed here before the test passes.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("autopack.__main__",),
    ("autopack.cli",),
    ("autopack.render",),
    ("autopack.console",),
    ("autopack.demo",),
    ("autopack.drain", "autopack.triage", "autopack.calibrate", "autopack.runs"),
    (
        "autopack.executor",
        "autopack.llm",
        "autopack.estimator",
        "autopack.telemetry",
        "autopack.seed",
    ),
    ("autopack.db",),
    ("autopack.settings",),
    ("autopack.settings_models",),
    ("autopack.settings_base",),
    (
        "autopack.environment",
        "autopack.errors",
        "autopack.lazy",
        "autopack.output_file",
        "autopack.text",
    ),
)


def module_files(package_dir: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (migrations left out)."""
    modules: dict[str, Path] = {}
    for path in sorted(package_dir.rglob("*.py")):
        relative = path.relative_to(package_dir.parent)
        if "migrations" in relative.parts:
            continue
        name = ".".join(relative.with_suffix("").parts).removesuffix(".__init__")
        modules[name] = path
    return modules


def imported_names(name: str, path: Path) -> set[str]:
    """Every dotted name `name`'s source imports, relative imports resolved, anywhere in it."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".") if is_package else name.split(".")[:-1]
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join([*parts, base] if base else parts)
            if node.module:
                found.add(base)
            # `from package import module` imports the submodule; a plain name is its module's.
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def module_graph(package_dir: Path) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports (its own parent packages aside)."""
    modules = module_files(package_dir)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges: set[str] = set()
        for target in imported_names(name, path):
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                edges.add(target)
        graph[name] = edges
    return graph


def package_of(module: str) -> str:
    """`autopack.drain.phase` -> `autopack.drain`; a top-level module is its own package."""
    return ".".join(module.split(".")[:2])


def package_graph(graph: dict[str, set[str]], root: str) -> dict[str, set[str]]:
    packages: dict[str, set[str]] = {}
    for module, targets in graph.items():
        source = package_of(module)
        packages.setdefault(source, set())
        for target in targets:
            destination = package_of(target)
            if root not in (source, destination) and destination != source:
                packages[source].add(destination)
    packages.pop(root, None)
    return packages


def circles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one node (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, list[str]]] = [(start, sorted(graph.get(start, ())))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, pending = work[-1]
            if pending:
                nxt = pending.pop()
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, sorted(graph.get(nxt, ()))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: set[str] = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(frozenset(component))
    return found


def layer_rank(package: str) -> int:
    """0 for the top layer; larger is lower."""
    for rank, layer in enumerate(LAYERS):
        if package in layer:
            return rank
    raise LookupError(package)


def upward_imports(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    """(module, imported module) pairs where a lower layer imports a higher one."""
    found: set[tuple[str, str]] = set()
    for module, targets in graph.items():
        for target in targets:
            source, destination = package_of(module), package_of(target)
            if "autopack" in (source, destination) or source == destination:
                continue
            if layer_rank(destination) < layer_rank(source):
                found.add((module, target))
    return found


def _describe(components: Iterable[frozenset[str]]) -> str:
    return "; ".join(" <-> ".join(sorted(component)) for component in components)


# -- the detector, on a package made for it ------------------------------------------------


def _write(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root / "pkg"


def test_a_type_only_import_closes_a_module_circle(tmp_path: Path) -> None:
    package = _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a/__init__.py": "",
            "pkg/a/left.py": "from pkg.a.right import thing\n",
            "pkg/a/right.py": (
                "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .left import other\n"
            ),
            "pkg/a/alone.py": "from pkg.a import left\n",
        },
    )
    graph = module_graph(package)
    assert graph["pkg.a.right"] == {"pkg.a.left"}
    assert circles(graph) == [frozenset({"pkg.a.left", "pkg.a.right"})]


def test_packages_in_a_circle_without_any_module_circle(tmp_path: Path) -> None:
    package = _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a/__init__.py": "",
            "pkg/a/one.py": "from pkg.b import two\n",
            "pkg/a/three.py": "",
            "pkg/b/__init__.py": "",
            "pkg/b/two.py": "",
            "pkg/b/four.py": "def late() -> None:\n    from ..a import three\n",
        },
    )
    graph = module_graph(package)
    assert circles(graph) == []
    assert circles(package_graph(graph, "pkg")) == [frozenset({"pkg.a", "pkg.b"})]


def test_importing_the_own_package_face_is_not_an_edge(tmp_path: Path) -> None:
    package = _write(
        tmp_path,
        {
            "pkg/__init__.py": "from pkg.a.core import run\n",
            "pkg/a/__init__.py": "from pkg.a.core import run\n",
            "pkg/a/core.py": "import pkg.a\nfrom pkg import a\nfrom . import helper\n",
            "pkg/a/helper.py": "",
        },
    )
    graph = module_graph(package)
    assert graph["pkg.a.core"] == {"pkg.a.helper"}
    assert circles(graph) == []


# -- autopack itself -------------------------------------------------------------------------


@functools.cache
def _autopack_graph() -> dict[str, set[str]]:
    return module_graph(PACKAGE_DIR)


def test_autopack_has_no_module_circle() -> None:
    found = circles(_autopack_graph())
    assert found == [], f"import circles: {_describe(found)}"


def test_autopack_has_no_package_circle() -> None:
    found = circles(package_graph(_autopack_graph(), "autopack"))
    assert found == [], f"package circles: {_describe(found)}"


def test_every_package_has_a_layer() -> None:
    packages = set(package_graph(_autopack_graph(), "autopack"))
    placed = {package for layer in LAYERS for package in layer}
    assert packages - placed == set(), "place these in LAYERS (tests/test_import_layers.py)"


def test_packages_import_only_downward() -> None:
    upward = sorted(upward_imports(_autopack_graph()))
    assert upward == [], f"a lower layer imports a higher one: {upward}"


@pytest.mark.parametrize("core", ["drain", "executor", "llm", "estimator", "telemetry", "seed"])
def test_core_packages_import_neither_typer_nor_rich(core: str) -> None:
    for name, path in module_files(PACKAGE_DIR).items():
        if package_of(name) != f"autopack.{core}":
            continue
        third_party = {n.split(".")[0] for n in imported_names(name, path)}
        assert third_party.isdisjoint({"typer", "rich", "click"}), name


def test_executor_touches_no_database() -> None:
    """DESIGN §4: claims, sessions and recording belong to drain/; the executor is pure."""
    graph = _autopack_graph()
    for name, path in module_files(PACKAGE_DIR).items():
        if package_of(name) != "autopack.executor":
            continue
        reached = {package_of(t) for t in graph[name]}
        assert reached.isdisjoint({"autopack.db", "autopack.drain", "autopack.telemetry"}), name
        third_party = {n.split(".")[0] for n in imported_names(name, path)}
        assert third_party.isdisjoint({"sqlalchemy", "sqlmodel", "sqlite3", "psycopg"}), name

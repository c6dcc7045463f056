"""Each package's `__init__` names its public API, and importing the package stays cheap."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "autopack"
LAZY_FACES = ("db", "drain", "estimator", "llm", "seed", "telemetry")


def _face(package: str) -> tuple[set[str], set[str], set[str]]:
    """(names imported under TYPE_CHECKING, names given to lazy_exports, names in __all__)."""
    tree = ast.parse((PACKAGE_DIR / package / "__init__.py").read_text(encoding="utf-8"))
    typed: set[str] = set()
    lazy: set[str] = set()
    listed: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for child in node.body:
                assert isinstance(child, ast.ImportFrom)
                typed.update(alias.name for alias in child.names)
        elif isinstance(node, ast.Assign):
            target = node.targets[0]
            assert isinstance(target, ast.Name)
            if target.id == "__getattr__":
                assert isinstance(node.value, ast.Call)
                exports = ast.literal_eval(node.value.args[1])
                lazy.update(name for names in exports.values() for name in names)
            elif target.id == "__all__":
                listed.update(ast.literal_eval(node.value))
    return typed, lazy, listed


@pytest.mark.parametrize("package", LAZY_FACES)
def test_the_three_lists_of_a_face_agree(package: str) -> None:
    typed, lazy, listed = _face(package)
    assert typed, f"autopack.{package} names no API"
    assert typed == lazy == listed


@pytest.mark.parametrize("package", LAZY_FACES)
def test_every_public_name_is_the_object_of_its_module(package: str) -> None:
    face = importlib.import_module(f"autopack.{package}")
    tree = ast.parse((PACKAGE_DIR / package / "__init__.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert getattr(face, alias.name) is getattr(module, alias.name), alias.name


def test_an_unknown_name_is_an_attribute_error() -> None:
    drain = importlib.import_module("autopack.drain")
    with pytest.raises(AttributeError, match=r"autopack\.drain.*no_such_thing"):
        _ = drain.no_such_thing


def test_importing_the_faces_loads_no_heavy_library() -> None:
    code = (
        "import sys\n"
        + "".join(f"import autopack.{package}\n" for package in LAZY_FACES)
        + "heavy = ('sqlalchemy', 'sqlmodel', 'httpx', 'pydantic_settings', 'alembic')\n"
        "print(sorted(name for name in heavy if name in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"

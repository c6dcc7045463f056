"""Package faces that import on first use (PEP 562).

A package's `__init__` names its public API; importing every module behind those names would
load SQLAlchemy, httpx and pydantic-settings into commands that need none of them (`db
identity`, `--version`). `lazy_exports` gives the package a module `__getattr__` that imports a
name's module only when the name is first used; the package lists the names under
`if TYPE_CHECKING:` (for type checkers and readers) and in `__all__`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, Iterable[str]]) -> Callable[[str], Any]:
    """The module `__getattr__` of `package`, from {module: the names it exports}.

    The package also lists the names in `__all__`; tests/test_package_faces.py checks that the
    three lists (`TYPE_CHECKING` imports, these exports, `__all__`) agree.
    """
    owner = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str) -> Any:
        module = owner.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module), name)

    return __getattr__

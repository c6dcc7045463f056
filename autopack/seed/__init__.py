"""Seeding: the built-in seed runs and seed files, planned, checked and created in a DB.

Plain Python (no CLI or terminal code):

    from autopack import seed

    spec = seed.load_builtin("telemetry-collection-v4")     # or seed.load_seed_file(path)
    plan = seed.plan_of(spec, builtin="telemetry-collection-v4")   # what would be created
    report = seed.seed_run(database, spec, builtin="telemetry-collection-v4")  # -> SeedReport

See docs/seeding.md for the file format and the role guard.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from autopack.lazy import lazy_exports

if TYPE_CHECKING:
    from autopack.seed.catalog import builtin_names, load_builtin
    from autopack.seed.coverage import Coverage, coverage_of
    from autopack.seed.create import SeedReport, seed_run
    from autopack.seed.files import SeedFileError, load_seed_file, parse_seed_text
    from autopack.seed.model import SeedPhase, SeedRunSpec
    from autopack.seed.plan import BuiltinSummary, SeedPlan, list_builtins, plan_of

__getattr__ = lazy_exports(
    __name__,
    {
        "autopack.seed.catalog": (
            "builtin_names",
            "load_builtin",
        ),
        "autopack.seed.coverage": (
            "Coverage",
            "coverage_of",
        ),
        "autopack.seed.create": (
            "seed_run",
            "SeedReport",
        ),
        "autopack.seed.files": (
            "load_seed_file",
            "parse_seed_text",
            "SeedFileError",
        ),
        "autopack.seed.model": (
            "SeedPhase",
            "SeedRunSpec",
        ),
        "autopack.seed.plan": (
            "BuiltinSummary",
            "list_builtins",
            "plan_of",
            "SeedPlan",
        ),
    },
)

__all__ = [
    "BuiltinSummary",
    "Coverage",
    "SeedFileError",
    "SeedPhase",
    "SeedPlan",
    "SeedReport",
    "SeedRunSpec",
    "builtin_names",
    "coverage_of",
    "list_builtins",
    "load_builtin",
    "load_seed_file",
    "parse_seed_text",
    "plan_of",
    "seed_run",
]

"""The database layer: open a database, tell which it is, create, stamp, upgrade and check it.

Plain Python (no CLI or terminal code). Nothing here creates a file except `init_database`:

    from autopack import db
    from autopack.settings import build_target

    target = build_target("sqlite:///autopack_seed.db", source="python", cwd=Path.cwd())
    db.init_database(target, "seed")                   # -> InitResult; .to_json()
    with db.open_database(target, db.OpenMode.READ_ONLY) as database:
        report = db.inspect_database(database)         # -> IdentityReport (pydantic)

Names load on first use, so `autopack db identity` never imports SQLAlchemy for a file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from autopack.lazy import lazy_exports

if TYPE_CHECKING:
    from autopack.db.engine import Database, OpenMode, open_database
    from autopack.db.identity import (
        IdentityReport,
        TargetInfo,
        TargetPanel,
        inspect_database,
        read_panel,
    )
    from autopack.db.lifecycle import (
        CheckResult,
        InitResult,
        StampResult,
        UpgradePlan,
        UpgradeResult,
        check_database,
        init_database,
        stamp_database,
        upgrade_database,
    )
    from autopack.db.models import PhaseState, RunState

__getattr__ = lazy_exports(
    __name__,
    {
        "autopack.db.engine": (
            "Database",
            "open_database",
            "OpenMode",
        ),
        "autopack.db.identity": (
            "IdentityReport",
            "inspect_database",
            "read_panel",
            "TargetInfo",
            "TargetPanel",
        ),
        "autopack.db.lifecycle": (
            "check_database",
            "CheckResult",
            "init_database",
            "InitResult",
            "stamp_database",
            "StampResult",
            "upgrade_database",
            "UpgradePlan",
            "UpgradeResult",
        ),
        "autopack.db.models": (
            "PhaseState",
            "RunState",
        ),
    },
)

__all__ = [
    "CheckResult",
    "Database",
    "IdentityReport",
    "InitResult",
    "OpenMode",
    "PhaseState",
    "RunState",
    "StampResult",
    "TargetInfo",
    "TargetPanel",
    "UpgradePlan",
    "UpgradeResult",
    "check_database",
    "init_database",
    "inspect_database",
    "open_database",
    "read_panel",
    "stamp_database",
    "upgrade_database",
]

"""What a drain checks before it touches a phase, as plain functions with typed results.

In the order an operator expects: the sandbox (and making this process non-dumpable before any
model code can run), the workspace, then, on the opened database, autopack's tables, the
telemetry tables, whether telemetry is written and why, the coefficient set, and the commits a
crashed drain left to make. The command line shows the target panel between the two halves and
renders `DrainSetup.warnings`; nothing here prints.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from autopack.db.engine import Database, translated_errors
from autopack.db.models import DRAIN_TABLES
from autopack.db.schema import require_tables
from autopack.drain.gitwork import commit_pending
from autopack.drain.isolation import SANDBOXES, isolation_warning, make_non_dumpable
from autopack.errors import GuardError
from autopack.estimator.active import resolve_coefficients
from autopack.estimator.coefficients import CoefficientSet
from autopack.estimator.report import choose_coefficients
from autopack.executor.sandbox import find_bwrap
from autopack.telemetry.recorder import telemetry_tables_present
from autopack.telemetry.seal import lacks_seal_column

# What a dry run reads: the original tables (nothing of autopack's is needed to plan).
PLAN_TABLES = ("runs", "tiers", "phases")


def telemetry_choice(environ: Mapping[str, str], no_telemetry: bool) -> tuple[bool, str]:
    """Whether this drain writes telemetry rows, and why (DESIGN §2, docs/databases.md).

    --no-telemetry > TELEMETRY_DB_ENABLED > on: drains turn telemetry on unless told not to.
    """
    from autopack.settings_models import load_telemetry_settings

    enabled = load_telemetry_settings(environ, no_telemetry=no_telemetry).db_enabled
    if no_telemetry:
        return False, "off (--no-telemetry)"
    if enabled is None:
        return True, "on (drains turn it on; --no-telemetry turns it off)"
    if enabled:
        return True, "on (TELEMETRY_DB_ENABLED)"
    return False, "off (TELEMETRY_DB_ENABLED is not 1, true or yes)"


def harden_process(sandbox: str) -> str | None:
    """Check `--sandbox`, make this process non-dumpable; the isolation warning, if any."""
    if sandbox not in SANDBOXES:
        raise GuardError(
            f"--sandbox {sandbox!r} is not one of {', '.join(SANDBOXES)}.",
            hint="e.g. --sandbox bwrap",
        )
    if sandbox == "bwrap" and find_bwrap() is None:
        raise GuardError(
            "--sandbox bwrap: bubblewrap (bwrap) is not installed.",
            hint="install it (apt-get install bubblewrap, dnf install bubblewrap), or drain "
            "without --sandbox",
        )
    make_non_dumpable()
    return isolation_warning(sandbox)


def check_workspace(workspace: Path, coefficients_file: Path | None) -> Path:
    """The workspace as an absolute directory; a bad coefficients file is refused here, before
    any database is opened."""
    if coefficients_file is not None:
        choose_coefficients(None, coefficients_file)
    root = workspace.resolve()
    if not root.is_dir():
        raise GuardError(f"workspace {root} is not a directory.", hint="give --workspace DIR")
    return root


@dataclass(frozen=True)
class DrainSetup:
    coefficients: CoefficientSet
    telemetry: bool
    telemetry_reason: str
    tables_present: bool
    """token_estimation_v2_events exists (without it phases are built but yield no rows)."""
    drain_tables: bool
    """False on a legacy DB not upgraded yet: only a dry run gets this far."""
    active_set_model: str | None
    """Follow the DB's active set for this model, per phase attempt (no --coefficients)."""
    warnings: list[str] = field(default_factory=list)


def prepare_drain(
    database: Database,
    *,
    environ: Mapping[str, str],
    workspace: Path,
    model: str | None,
    coefficients: str | None,
    coefficients_file: Path | None,
    no_telemetry: bool,
    writable: bool,
    commit: bool,
    log: Callable[[str], None],
) -> DrainSetup:
    """The checks and choices made on the opened database before a drain acts."""
    warnings: list[str] = []
    with translated_errors(database):
        drain_tables = _require_drain_tables(database, writable=writable, warnings=warnings)
        if writable and lacks_seal_column(database.engine):
            raise GuardError(
                f"{database.target.display_url} has no telemetry seal column.",
                hint="back it up and bring it up to date with `autopack db upgrade`",
            )
        tables_present = telemetry_tables_present(database.engine)
        if not tables_present:
            warnings.append(
                "token_estimation_v2_events is missing: phases will be built but yield no "
                "telemetry (autopack db upgrade adds the table)"
            )
        telemetry, why = telemetry_choice(environ, no_telemetry)
        chosen = resolve_coefficients(
            database.engine, model=model, name=coefficients, file=coefficients_file
        )
        follow = model if coefficients is None and coefficients_file is None else None
        if writable and commit:
            commit_pending(database.engine, workspace, log)
    return DrainSetup(
        coefficients=chosen,
        telemetry=telemetry,
        telemetry_reason=why,
        tables_present=tables_present,
        drain_tables=drain_tables,
        active_set_model=follow,
        warnings=warnings,
    )


def _require_drain_tables(database: Database, *, writable: bool, warnings: list[str]) -> bool:
    """A drain needs autopack's tables; a dry run writes nothing, so it plans from the
    original tables alone on a DB not upgraded yet (and says what the real drain needs)."""
    if writable:
        require_tables(database, DRAIN_TABLES)
        return True
    state = require_tables(database, PLAN_TABLES)
    if all(name in state.existing_tables for name in DRAIN_TABLES):
        return True
    warnings.append(
        "this database has not been upgraded: the dry run plans from the original tables "
        "alone; the real drain needs `autopack db upgrade` first"
    )
    return False

"""The explicit acts on a database's schema and stamp: init, plan/upgrade, stamp, check.

These are the only functions that create or change a schema. Each takes a resolved target or
an open Database and returns a typed result holding the database's target facts after the act;
`to_json()` is the command's `--json` document (docs/json.md), and the CLI renders it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from autopack.db.backup import backup_sqlite, remove_incomplete_backups
from autopack.db.engine import Database, OpenMode, open_database, translated_errors
from autopack.db.identity import TargetInfo, TargetPanel, read_panel
from autopack.db.integrity import IntegrityReport, check_integrity
from autopack.db.meta import (
    UNSTAMPED_ROLE,
    RoleStamp,
    read_stamp,
    record_schema_revision,
    validate_role,
    write_stamp,
)
from autopack.db.names import HEAD_REVISION
from autopack.db.schema import (
    SchemaState,
    enable_wal,
    inspect_schema,
    require_autopack_schema,
)
from autopack.db.upgrade_lock import upgrade_lock
from autopack.errors import ConfigError, SchemaError, TargetError
from autopack.settings import BUILTIN_TARGET_ROLES, DatabaseTarget

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def run_migrations(connection: sa.Connection) -> str:
    """Bring the schema on `connection` to head through Alembic; return the head revision."""
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")
    return HEAD_REVISION


def role_for_init(target: DatabaseTarget, role: str | None) -> str:
    """`seed`/`legacy` for those built-in names, else `--role`, else `general`."""
    builtin = BUILTIN_TARGET_ROLES.get(target.name or "")
    if role is None:
        return builtin or "general"
    chosen = validate_role(role)
    if builtin is not None and chosen != builtin:
        raise ConfigError(
            f"--db {target.name} is the {builtin} database; it cannot be stamped {chosen!r}.",
            hint=f"drop --role, or use --database-url for a {chosen} database",
        )
    return chosen


@dataclass(frozen=True)
class InitResult:
    panel: TargetPanel | None
    """The new database's facts; None for an in-memory one, gone when its connection closes."""
    role: str
    db_id: str | None
    revision: str
    created_file: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.panel.target.model_dump(mode="json") if self.panel else None,
            "role": self.role,
            "db_id": self.db_id,
            "revision": self.revision,
            "created_file": self.created_file,
        }


def init_database(target: DatabaseTarget, role: str | None) -> InitResult:
    """Create the schema in a new (or empty) database and stamp its role.

    Refuses a database that already holds tables; a file it created is removed again if
    anything fails, so a failed init leaves nothing behind.
    """
    chosen_role = role_for_init(target, role)
    db = open_database(
        target, OpenMode.CREATE if target.backend == "sqlite" else OpenMode.READ_WRITE
    )
    try:
        with translated_errors(db):
            _refuse_non_empty(db)
            with db.engine.begin() as connection:
                revision = run_migrations(connection)
                stamp = write_stamp(connection, chosen_role, revision)
            enable_wal(db)
    except BaseException:
        db.close()
        if db.created_file and target.sqlite_path is not None:
            _remove_sqlite_files(target.sqlite_path)
        raise
    db.close()
    panel = None
    if not target.in_memory:
        with open_database(target, OpenMode.READ_ONLY) as created:
            panel = read_panel(created)
    return InitResult(panel, chosen_role, stamp.db_id, revision, db.created_file)


def _refuse_non_empty(db: Database) -> None:
    with db.engine.connect() as connection:
        tables = sa.inspect(connection).get_table_names()
    if db.target.backend != "sqlite":
        # A PostgreSQL database may hold unrelated schemas' tables; only ours matter.
        state_tables = [t for t in tables if t in ("runs", "phases", "autopack_meta")]
        tables = state_tables
    if tables:
        raise TargetError(
            f"{db.target.display_url} already holds a database ({len(tables)} tables); "
            "db init never overwrites one.",
            hint="inspect it with `autopack db identity`, or bring it up to date with "
            "`autopack db upgrade`",
        )


def _remove_sqlite_files(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


# Why an unstamped DB is stamped legacy by `db upgrade`: autopack's own `db init` always
# stamps, so a DB without a stamp was made by the original Autopack (its backlog).
LEGACY_STAMP_REASON = "the DB has no role stamp; it was made by the original Autopack"


@dataclass(frozen=True)
class UpgradePlan:
    state: SchemaState
    stamped: bool = True
    """False: the DB has no role stamp, and the upgrade stamps it `legacy`."""

    @property
    def tables_to_create(self) -> tuple[str, ...]:
        return self.state.missing_tables

    @property
    def columns_to_add(self) -> dict[str, tuple[str, ...]]:
        return self.state.missing_columns

    @property
    def stamp_role(self) -> str | None:
        """The role the upgrade stamps (`legacy` for an unstamped DB), or None."""
        return None if self.stamped else UNSTAMPED_ROLE

    @property
    def nothing_to_do(self) -> bool:
        # A newer schema that opened for writing is one this autopack may use as it is
        # (autopack.db.compat); it is never migrated "back" to this head, nor stamped.
        return (self.state.matches_code and self.stamped) or self.state.newer


def plan_upgrade(db: Database) -> UpgradePlan:
    with translated_errors(db), db.engine.connect() as connection:
        state = inspect_schema(connection, columns=True)
        stamp = read_stamp(connection)
    require_autopack_schema(db, state)
    return UpgradePlan(state, stamped=stamp.stamped)


@dataclass(frozen=True)
class UpgradeResult:
    target: TargetInfo
    plan: UpgradePlan
    """What the upgrade found to do (nothing: `changed` is False and no backup was made)."""
    revision: str
    backup_path: Path | None = None
    rows_before: dict[str, int] | None = None
    rows_after: dict[str, int] | None = None

    @property
    def changed(self) -> bool:
        return not self.plan.nothing_to_do

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "target": self.target.model_dump(mode="json"),
            "changed": self.changed,
            "revision": self.revision,
        }
        if self.changed:
            document |= {
                "stamped_role": self.plan.stamp_role,
                "backup_path": str(self.backup_path) if self.backup_path else None,
                "created_tables": list(self.plan.tables_to_create),
                "added_columns": {t: list(c) for t, c in self.plan.columns_to_add.items()},
                "rows_before": self.rows_before,
                "rows_after": self.rows_after,
            }
        return document


def _all_row_counts(connection: sa.Connection) -> dict[str, int]:
    names = sa.inspect(connection).get_table_names()
    return {
        name: int(
            connection.execute(sa.select(sa.func.count()).select_from(sa.table(name))).scalar_one()
        )
        for name in sorted(names)
    }


def upgrade_database(
    db: Database,
    *,
    backup: bool = True,
    confirm: Callable[[UpgradePlan], None] = lambda _plan: None,
    on_wait: Callable[[str], None] | None = None,
) -> UpgradeResult:
    """Plan; if there is work, back the file up (SQLite), migrate to head, switch WAL on, and
    prove no row was lost.

    One upgrade of a database at a time (autopack.db.upgrade_lock): a second one waits, then
    plans again and finds nothing to do (`changed` False) instead of failing half-way.
    `confirm` sees the plan before anything changes and raises to refuse it (the CLI shows it
    and asks); it is not called when there is nothing to do.
    """
    if not db.writable:
        raise TargetError("db upgrade needs the database opened for writing.", hint="internal")
    with upgrade_lock(db, on_wait=on_wait):
        plan = plan_upgrade(db)
        if plan.nothing_to_do:
            return UpgradeResult(read_panel(db).target, plan, plan.state.revision or HEAD_REVISION)
        confirm(plan)
        return _upgrade_locked(db, plan, backup=backup)


def _upgrade_locked(db: Database, plan: UpgradePlan, *, backup: bool) -> UpgradeResult:
    with translated_errors(db):
        with db.engine.connect() as connection:
            before = _all_row_counts(connection)
        backup_path = None
        if backup and db.target.sqlite_path is not None:
            remove_incomplete_backups(db.target.sqlite_path)
            backup_path = backup_sqlite(db.target.sqlite_path)
        with db.engine.begin() as connection:
            revision = run_migrations(connection)
            if plan.stamp_role is not None:
                write_stamp(connection, plan.stamp_role, revision)
            record_schema_revision(connection, revision)
        enable_wal(db)
        with db.engine.connect() as connection:
            after = _all_row_counts(connection)
    lost = {t: (n, after.get(t, 0)) for t, n in before.items() if after.get(t, 0) < n}
    if lost:
        details = ", ".join(f"{t}: {a} → {b}" for t, (a, b) in lost.items())
        raise SchemaError(
            f"the upgrade lost rows ({details}).",
            hint=f"restore from the backup {backup_path}"
            if backup_path
            else "restore from a backup",
        )
    return UpgradeResult(read_panel(db).target, plan, revision, backup_path, before, after)


@dataclass(frozen=True)
class StampResult:
    target: TargetInfo
    previous: RoleStamp
    current: RoleStamp

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target.model_dump(mode="json"),
            "previous_role": self.previous.role if self.previous.stamped else None,
            "role": self.current.role,
            "db_id": self.current.db_id,
        }


def stamp_database(db: Database, role: str) -> StampResult:
    """Write the role stamp; creates only the small autopack_meta table if it is missing."""
    chosen = validate_role(role)
    with translated_errors(db):
        with db.engine.connect() as connection:
            state = inspect_schema(connection)
            previous = read_stamp(connection)
        require_autopack_schema(db, state)
        with db.engine.begin() as connection:
            current = write_stamp(connection, chosen, state.revision)
    return StampResult(read_panel(db).target, previous, current)


@dataclass(frozen=True)
class CheckResult:
    target: TargetInfo | None
    """None when the file is too damaged for the panel's reads."""
    integrity: IntegrityReport
    state: SchemaState | None
    """None when the file is too damaged to compare its schema."""

    @property
    def ok(self) -> bool:
        """Whole, and a schema this autopack can use as it is: its own head, or a newer one
        declared compatible with it that has every table and column the models name."""
        state = self.state
        if not self.integrity.ok or state is None:
            return False
        compatible_newer = state.newer and state.compatibility.writable
        complete = not state.missing_tables and not state.missing_columns
        return state.matches_code or (compatible_newer and complete)

    def to_json(self) -> dict[str, Any]:
        integrity, state = self.integrity, self.state
        return {
            "target": self.target.model_dump(mode="json") if self.target else None,
            "integrity": {
                "checked": integrity.checked,
                "mode": integrity.mode,
                "ok": integrity.ok,
                "problems": list(integrity.problems),
            },
            "matches": bool(state and state.matches_code),
            "revision": state.revision if state else None,
            "head": HEAD_REVISION,
            "missing_tables": list(state.missing_tables) if state else [],
            "missing_columns": {t: list(c) for t, c in state.missing_columns.items()}
            if state
            else {},
        }


def check_database(db: Database, *, full: bool = False) -> CheckResult:
    """Is the file whole (SQLite's quick_check, or integrity_check with `full`), and how does
    its schema compare with the code? Read-only."""
    integrity = check_integrity(db, full=full)
    try:
        target: TargetInfo | None = read_panel(db).target
    except TargetError:
        if integrity.ok:
            raise  # whole, yet unreadable: the error says why
        target = None  # a damaged file may fail the panel's reads: the check says why
    if not integrity.ok:
        return CheckResult(target, integrity, None)
    with translated_errors(db), db.engine.connect() as connection:
        state = inspect_schema(connection, columns=True)
    require_autopack_schema(db, state)
    return CheckResult(target, integrity, state)

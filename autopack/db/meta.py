"""The role stamp (autopack_meta): which DB this is, so commands can refuse the wrong one.

Modelled on Rails' ar_internal_metadata. A DB made by the original Autopack has no stamp; it
is treated as `legacy` with a warning, never refused for that alone.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from autopack import __version__
from autopack.db.names import COMPATIBLE_WITH, HEAD_REVISION
from autopack.errors import ConfigError

if TYPE_CHECKING:
    import sqlalchemy as sa

    from autopack.db.transaction import Transaction

META_TABLE = "autopack_meta"
_READ_SQL = f"SELECT role, db_id FROM {META_TABLE} WHERE id = 1"

KNOWN_ROLES = ("seed", "legacy", "general")
UNSTAMPED_ROLE = "legacy"
_ROLE_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


@dataclass(frozen=True)
class RoleStamp:
    role: str
    db_id: str | None
    stamped: bool
    """False for a DB without a stamp (made by the original): `role` is then the assumed one."""


def validate_role(role: str) -> str:
    cleaned = role.strip().lower()
    if not _ROLE_PATTERN.match(cleaned):
        raise ConfigError(
            f"invalid role {role!r}.",
            hint=f"use one of {', '.join(KNOWN_ROLES)} or a short lowercase word",
        )
    return cleaned


def read_stamp(connection: sa.Connection) -> RoleStamp:
    import sqlalchemy as sa

    if not sa.inspect(connection).has_table(META_TABLE):
        return RoleStamp(UNSTAMPED_ROLE, None, stamped=False)
    return _stamp_of(connection.exec_driver_sql(_READ_SQL).first())


def read_stamp_in(snapshot: Transaction, tables: set[str]) -> RoleStamp:
    """read_stamp() in a read snapshot, given the DB's tables (already read for the panel)."""
    if META_TABLE not in tables:
        return RoleStamp(UNSTAMPED_ROLE, None, stamped=False)
    rows = snapshot.all(_READ_SQL)
    return _stamp_of(rows[0] if rows else None)


def _stamp_of(row: Sequence[Any] | None) -> RoleStamp:
    if row is None:
        return RoleStamp(UNSTAMPED_ROLE, None, stamped=False)
    role, db_id = row[0], row[1]
    return RoleStamp(str(role), None if db_id is None else str(db_id), stamped=True)


def write_stamp(connection: sa.Connection, role: str, schema_revision: str | None) -> RoleStamp:
    """Stamp (or re-stamp) the DB; the db_id is kept if one exists, created otherwise."""
    from sqlmodel import Session, select  # writing goes through the model

    from autopack.db.clock import utc_now
    from autopack.db.models import AutopackMeta, table_of

    role = validate_role(role)
    table_of(AutopackMeta).create(connection, checkfirst=True)
    with Session(connection) as session:
        meta = session.exec(select(AutopackMeta).where(AutopackMeta.id == 1)).first()
        if meta is None:
            meta = AutopackMeta(
                id=1,
                role=role,
                db_id=str(uuid.uuid4()),
                tool_version=__version__,
                schema_revision=schema_revision,
            )
            if schema_revision == HEAD_REVISION:
                meta.compatible_with = COMPATIBLE_WITH
        else:
            meta.role = role
            meta.stamped_at = utc_now()
            meta.tool_version = __version__
            if schema_revision is not None:
                meta.schema_revision = schema_revision
        session.add(meta)
        session.flush()
        return RoleStamp(meta.role, meta.db_id, stamped=True)


def record_schema_revision(connection: sa.Connection, revision: str) -> None:
    """After `db upgrade` to this autopack's head: the revision, and what it stays compatible
    with (autopack.db.compat), so older autopacks know whether they may still write."""
    import sqlalchemy as sa

    if sa.inspect(connection).has_table(META_TABLE):
        meta = sa.table(
            META_TABLE,
            sa.column("id"),
            sa.column("schema_revision"),
            sa.column("tool_version"),
            sa.column("compatible_with"),
        )
        values: dict[str, str] = {"schema_revision": revision, "tool_version": __version__}
        if revision == HEAD_REVISION:
            values["compatible_with"] = COMPATIBLE_WITH
        connection.execute(sa.update(meta).where(meta.c.id == 1).values(**values))

"""The role stamp (autopack_meta): which DB this is, so commands can refuse the wrong one.

Modelled on Rails' ar_internal_metadata. A DB made by the original Autopack has no stamp; it
is treated as `legacy` with a warning, never refused for that alone.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

import sqlalchemy as sa

from autopack import __version__
from autopack.errors import ConfigError

META_TABLE = "autopack_meta"
# A light view of the table for reading (the panel reads it on every command).
_META = sa.table(
    META_TABLE,
    sa.column("id"),
    sa.column("role"),
    sa.column("db_id"),
    sa.column("schema_revision"),
    sa.column("tool_version"),
)

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
    if not sa.inspect(connection).has_table(META_TABLE):
        return RoleStamp(UNSTAMPED_ROLE, None, stamped=False)
    row = connection.execute(sa.select(_META.c.role, _META.c.db_id).where(_META.c.id == 1)).first()
    if row is None:
        return RoleStamp(UNSTAMPED_ROLE, None, stamped=False)
    return RoleStamp(row.role, row.db_id, stamped=True)


def write_stamp(connection: sa.Connection, role: str, schema_revision: str | None) -> RoleStamp:
    """Stamp (or re-stamp) the DB; the db_id is kept if one exists, created otherwise."""
    from sqlmodel import Session, select  # writing goes through the model

    from autopack.db.models import AutopackMeta, table_of, utc_now

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
    if sa.inspect(connection).has_table(META_TABLE):
        connection.execute(
            sa.update(_META)
            .where(_META.c.id == 1)
            .values(schema_revision=revision, tool_version=__version__)
        )

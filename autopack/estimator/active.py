"""Which coefficient set a call uses: the ONE place that decides it.

- a file (`--coefficients-file`) or a name (`--coefficients NAME`: a built-in set, else a set
  stored in the target DB) wins;
- otherwise the target DB's active set for the model called (`calibrate apply`/`activate`);
- otherwise (no DB, no table yet, nothing applied for that model) the built-in `default`.

DB-stored sets live in `autopack_coefficient_sets` (autopack.db.models.CoefficientSetRow).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from autopack.db.models import CoefficientSetRow, table_of
from autopack.estimator.coefficients import (
    DEFAULT_SET_NAME,
    CoefficientSet,
    CoefficientSetError,
    builtin_set_names,
    load_builtin_set,
    load_set_from_file,
    load_set_from_json,
)

COEFFICIENT_SETS: Final = table_of(CoefficientSetRow)
TABLE_NAME: Final = COEFFICIENT_SETS.name


def _has_table(connection: Connection) -> bool:
    return bool(sa.inspect(connection).has_table(TABLE_NAME))


def stored_set(connection: Connection, name: str) -> CoefficientSet | None:
    """The set stored in the DB under `name`, or None (also when the table does not exist)."""
    if not _has_table(connection):
        return None
    document = connection.execute(
        sa.select(COEFFICIENT_SETS.c.document).where(COEFFICIENT_SETS.c.name == name)
    ).scalar()
    if document is None:
        return None
    return load_set_from_json(str(document), source=f"{name!r} (stored in the database)")


def active_set(connection: Connection, model: str | None) -> CoefficientSet | None:
    """The DB's active set for `model`, or None (no table, no model, none applied)."""
    if model is None or not _has_table(connection):
        return None
    row = connection.execute(
        sa.select(COEFFICIENT_SETS.c.name, COEFFICIENT_SETS.c.document).where(
            COEFFICIENT_SETS.c.model == model, COEFFICIENT_SETS.c.active == sa.true()
        )
    ).first()
    if row is None:
        return None
    return load_set_from_json(str(row.document), source=f"{row.name!r} (active in the database)")


def resolve_coefficients(
    db: Engine | Connection | None,
    *,
    model: str | None,
    name: str | None = None,
    file: Path | None = None,
) -> CoefficientSet:
    """The set a call uses (see the module docstring for the order)."""
    if file is not None:
        return load_set_from_file(file)
    if name is not None and (name in builtin_set_names() or db is None):
        return load_builtin_set(name)
    if db is None:
        return load_builtin_set(DEFAULT_SET_NAME)
    if isinstance(db, Engine):
        with db.connect() as connection:
            return _from_db(connection, model=model, name=name)
    return _from_db(db, model=model, name=name)


def _from_db(connection: Connection, *, model: str | None, name: str | None) -> CoefficientSet:
    if name is not None:
        stored = stored_set(connection, name)
        if stored is None:
            raise CoefficientSetError(
                f"There is no coefficient set named {name!r}, built in or in the database.",
                hint=f"Built-in sets: {', '.join(builtin_set_names())}; "
                "`autopack calibrate sets` lists the database's.",
            )
        return stored
    return active_set(connection, model) or load_builtin_set(DEFAULT_SET_NAME)

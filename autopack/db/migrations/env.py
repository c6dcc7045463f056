"""Alembic environment: runs only on the connection autopack hands over, never a URL."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import autopack.db.models  # noqa: F401  (registers the tables on SQLModel.metadata)
from autopack.db.names import VERSION_TABLE

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("autopack migrations run only through autopack.db.schema")

context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    # A DB made by the original may carry its own `alembic_version`; ours lives apart.
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=False,
)
with context.begin_transaction():
    context.run_migrations()

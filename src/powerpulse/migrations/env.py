"""Alembic environment: runs on the connection PowerPulse hands it (see powerpulse.migrate)."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

from powerpulse import models  # noqa: F401  (registers the tables)
from powerpulse.migrate import schema_filter

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `powerpulse db upgrade`, not the alembic CLI")

context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    # SQLite alters tables by copying them; batch mode does that for us.
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
    include_object=schema_filter(connection.dialect.name),
)
with context.begin_transaction():
    context.run_migrations()

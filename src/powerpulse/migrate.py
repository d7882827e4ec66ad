"""Applying and checking schema migrations from PowerPulse's own commands."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import resources
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import SQLModel

from . import models  # noqa: F401  (registers the tables CONVERSATION_ROW_TABLES reads)
from .errors import ConfigurationError

logger = logging.getLogger("powerpulse.migrate")


def alembic_config(connection: Any = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(resources.files("powerpulse") / "migrations"))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


@dataclass(frozen=True, slots=True)
class SchemaState:
    current: str | None
    head: str | None

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


async def schema_state(engine: AsyncEngine) -> SchemaState:
    def read(sync_connection: Any) -> str | None:
        return MigrationContext.configure(sync_connection).get_current_revision()

    async with engine.connect() as connection:
        current = await connection.run_sync(read)
    return SchemaState(current=current, head=head_revision())


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    async with engine.begin() as connection:
        await connection.run_sync(
            lambda sync_connection: command.upgrade(alembic_config(sync_connection), revision)
        )


# The rows that belong to a conversation: every table with a key to conversations. The
# models give each a conversation_id foreign key, which SQLite enforces; on PostgreSQL
# migration 0005 replaced those keys with triggers that keep the same rules (see the
# migration), named here.
CONVERSATION_ROW_TABLES = tuple(
    table.name
    for table in SQLModel.metadata.sorted_tables
    if any(key.column.table.name == "conversations" for key in table.foreign_keys)
)
# Two more keys that PostgreSQL checks by triggers since migration 0006: (table, referred
# table) -> the triggers of that key, on either table.
POSTGRES_TRIGGER_KEYS = {
    ("conversations", "tenants"): (
        ("conversations", "conversations_tenant_insert"),
        ("conversations", "conversations_tenant_update"),
        ("tenants", "tenants_delete_conversations"),
        ("tenants", "tenants_truncate_conversations"),
        ("tenants", "tenants_keep_id"),
    ),
    ("analysis_tasks", "analysis_jobs"): (
        ("analysis_tasks", "analysis_tasks_job_insert"),
        ("analysis_tasks", "analysis_tasks_job_update"),
        ("analysis_jobs", "analysis_jobs_delete_analysis_tasks"),
        ("analysis_jobs", "analysis_jobs_truncate_analysis_tasks"),
        ("analysis_jobs", "analysis_jobs_keep_id"),
    ),
}
POSTGRES_TRIGGERS = frozenset(
    [
        *(
            (table, f"{table}_conversation_{event}")
            for table in CONVERSATION_ROW_TABLES
            for event in ("insert", "update")
        ),
        ("conversations", "conversations_delete_rows"),
        ("conversations", "conversations_truncate_rows"),
        ("conversations", "conversations_keep_id"),
        *(trigger for triggers in POSTGRES_TRIGGER_KEYS.values() for trigger in triggers),
    ]
)


def schema_filter(dialect: str) -> Any:
    """Alembic's include_object for a dialect: on PostgreSQL the models' keys that triggers
    replace (to conversations, and POSTGRES_TRIGGER_KEYS) are not expected in the database."""

    def include(item: Any, name: str | None, kind: str, reflected: bool, compare_to: Any) -> bool:
        return not (
            dialect == "postgresql"
            and kind == "foreign_key_constraint"
            and not reflected
            and (
                item.referred_table.name == "conversations"
                or (item.table.name, item.referred_table.name) in POSTGRES_TRIGGER_KEYS
            )
        )

    return include


async def schema_differences(engine: AsyncEngine) -> list[Any]:
    """What autogenerate would change between the database and the models (empty = in sync),
    and on PostgreSQL any of POSTGRES_TRIGGERS that is missing."""

    def compare(sync_connection: Any) -> list[Any]:
        dialect = sync_connection.dialect.name
        context = MigrationContext.configure(
            sync_connection,
            opts={"compare_type": True, "include_object": schema_filter(dialect)},
        )
        differences = list(compare_metadata(context, SQLModel.metadata))
        if dialect == "postgresql":
            present = {
                (table, name)
                for table, name in sync_connection.exec_driver_sql(
                    "SELECT tgrelid::regclass::text, tgname FROM pg_trigger WHERE NOT tgisinternal"
                )
            }
            differences += [
                ("missing_trigger", table, name)
                for table, name in sorted(POSTGRES_TRIGGERS - present)
            ]
        return differences

    async with engine.connect() as connection:
        return await connection.run_sync(compare)


async def prepare_schema(engine: AsyncEngine, *, migrate: bool | None) -> None:
    """Bring the schema to head, or refuse to run on an outdated one.

    `migrate=None` is the default policy: SQLite (the embedded default) migrates by itself,
    PostgreSQL only when asked, so production schema changes are a deliberate step.
    """
    state = await schema_state(engine)
    if state.up_to_date:
        return
    if migrate is None:
        migrate = engine.dialect.name == "sqlite"
    if migrate:
        await upgrade(engine)
        logger.info("database schema migrated from %s to %s", state.current, state.head)
        return
    raise ConfigurationError(
        f"the database schema is at {state.current or 'nothing'} but this version needs "
        f"{state.head}; run `powerpulse db upgrade` (or start with --migrate)"
    )

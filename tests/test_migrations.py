"""Migrations are the only way the schema changes: they must match the models exactly."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from alembic import command
from sqlalchemy import inspect, text

from powerpulse.db import create_engine
from powerpulse.errors import ConfigurationError
from powerpulse.migrate import (
    alembic_config,
    head_revision,
    prepare_schema,
    schema_differences,
    schema_state,
    upgrade,
)
from powerpulse.settings import Settings


async def test_initial_migration_matches_the_models_exactly(database_url: str) -> None:
    engine = create_engine(Settings(database_url=database_url))
    try:
        await prepare_schema(engine, migrate=True)
        assert await schema_differences(engine) == []
        assert (await schema_state(engine)).current == head_revision()
    finally:
        await engine.dispose()


async def test_an_empty_database_has_no_revision_until_migrated(database_url: str) -> None:
    engine = create_engine(Settings(database_url=database_url))
    try:
        state = await schema_state(engine)
        assert state.current is None
        assert not state.up_to_date
    finally:
        await engine.dispose()


async def test_outdated_schema_is_refused_when_migration_is_not_allowed(
    database_url: str,
) -> None:
    engine = create_engine(Settings(database_url=database_url))
    try:
        with pytest.raises(ConfigurationError, match="powerpulse db upgrade"):
            await prepare_schema(engine, migrate=False)
        async with engine.connect() as connection:
            tables = await connection.run_sync(lambda c: inspect(c).get_table_names())
        assert "conversations" not in tables
    finally:
        await engine.dispose()


async def test_default_policy_migrates_sqlite_but_not_postgres(database_url: str) -> None:
    engine = create_engine(Settings(database_url=database_url))
    try:
        if engine.dialect.name == "sqlite":
            await prepare_schema(engine, migrate=None)
            assert (await schema_state(engine)).up_to_date
        else:
            with pytest.raises(ConfigurationError, match="--migrate"):
                await prepare_schema(engine, migrate=None)
    finally:
        await engine.dispose()


CONVERSATION_ROWS = {
    "messages": (
        "INSERT INTO messages (tenant_id, conversation_id, message_key, sender, sent_at)"
        " VALUES (:tenant, :conversation, 'p:1', 'customer', :now)"
    ),
    "reply_events": (
        "INSERT INTO reply_events (tenant_id, conversation_id, agent, waiting_since,"
        " replied_at, response_minutes) VALUES (:tenant, :conversation, 'ana', :now, :now, 2.5)"
    ),
    "conversation_agents": (
        "INSERT INTO conversation_agents (conversation_id, agent, tenant_id, message_count)"
        " VALUES (:conversation, 'ana', :tenant, 3)"
    ),
    "conversation_analyses": (
        "INSERT INTO conversation_analyses (conversation_id, tenant_id, status, input_tokens,"
        " output_tokens, cost_usd, updated_at) VALUES (:conversation, :tenant, 'DONE', 1, 1, 0,"
        " :now)"
    ),
    "conversation_topics": (
        "INSERT INTO conversation_topics (conversation_id, topic, tenant_id, position)"
        " VALUES (:conversation, 'billing', :tenant, 0)"
    ),
    "analysis_tasks": (
        "INSERT INTO analysis_tasks (tenant_id, job_id, conversation_id, force, state, attempts)"
        " VALUES (:tenant, :job, :conversation, false, 'queued', 0)"
    ),
}


async def downgrade(engine: Any, revision: str) -> None:
    async with engine.begin() as connection:
        await connection.run_sync(
            lambda sync_connection: command.downgrade(alembic_config(sync_connection), revision)
        )


async def _foreign_keys(engine: Any) -> dict[str, set[tuple[str, ...]]]:
    """Table -> (its columns, the referred table) of each foreign key, for CONVERSATION_ROWS."""

    def read(connection: Any) -> dict[str, set[tuple[str, ...]]]:
        inspector = inspect(connection)
        return {
            table: {
                (*key["constrained_columns"], key["referred_table"])
                for key in inspector.get_foreign_keys(table)
            }
            for table in CONVERSATION_ROWS
        }

    async with engine.connect() as connection:
        return await connection.run_sync(read)


async def _counts(engine: Any, tenant: int) -> dict[str, int]:
    async with engine.connect() as connection:
        return {
            table: (
                await connection.execute(
                    text(f"SELECT count(*) FROM {table} WHERE tenant_id = :tenant"),
                    {"tenant": tenant},
                )
            ).scalar_one()
            for table in CONVERSATION_ROWS
        }


async def test_rows_of_a_conversation_keep_their_data_and_cascades_without_a_tenant_key(
    database_url: str,
) -> None:
    """0004 drops the tenant foreign key of conversation rows; nothing stored is lost, and
    deleting a tenant or a conversation still deletes every row of it."""
    engine = create_engine(Settings(database_url=database_url))
    try:
        await upgrade(engine, "0003")
        before = await _foreign_keys(engine)
        assert all(("tenant_id", "tenants") in keys for keys in before.values())
        now = datetime(2026, 12, 1, tzinfo=UTC)
        tenants: list[int] = []
        async with engine.begin() as connection:
            for name in ("north", "south"):
                tenant = (
                    await connection.execute(
                        text(
                            "INSERT INTO tenants (name, created_at, data_version)"
                            " VALUES (:name, :now, 0) RETURNING id"
                        ),
                        {"name": name, "now": now},
                    )
                ).scalar_one()
                tenants.append(tenant)
                for chat in ("c1", "c2"):
                    conversation = (
                        await connection.execute(
                            text(
                                "INSERT INTO conversations (tenant_id, chat_id, message_count,"
                                " customer_message_count, agent_message_count,"
                                " bot_message_count, first_message_at, last_message_at,"
                                " duration_minutes, reply_count, contact_count, updated_at,"
                                " data_version) VALUES (:tenant, :chat, 1, 1, 0, 0, :now, :now,"
                                " 0, 0, 1, :now, 0) RETURNING id"
                            ),
                            {"tenant": tenant, "chat": chat, "now": now},
                        )
                    ).scalar_one()
                    job = (
                        await connection.execute(
                            text(
                                "INSERT INTO analysis_jobs (tenant_id, status, total, analyzed,"
                                " cached, failed, forced, input_tokens, output_tokens, cost_usd,"
                                " created_at) VALUES (:tenant, 'queued', 1, 0, 0, 0, 0, 0, 0, 0,"
                                " :now) RETURNING id"
                            ),
                            {"tenant": tenant, "now": now},
                        )
                    ).scalar_one()
                    for statement in CONVERSATION_ROWS.values():
                        await connection.execute(
                            text(statement),
                            {
                                "tenant": tenant,
                                "conversation": conversation,
                                "job": job,
                                "now": now,
                            },
                        )
        north, south = tenants
        stored = {table: 2 for table in CONVERSATION_ROWS}
        assert await _counts(engine, north) == stored

        await upgrade(engine, "head")

        assert await schema_differences(engine) == []
        after = await _foreign_keys(engine)
        for table, keys in after.items():
            assert ("tenant_id", "tenants") not in keys, table
            assert ("conversation_id", "conversations") in keys, table
        assert ("job_id", "analysis_jobs") in after["analysis_tasks"]
        assert await _counts(engine, north) == stored
        assert await _counts(engine, south) == stored
        async with engine.connect() as connection:
            content = (
                await connection.execute(
                    text("SELECT agent, response_minutes FROM reply_events WHERE tenant_id = :t"),
                    {"t": north},
                )
            ).all()
        assert [tuple(row) for row in content] == [("ana", 2.5), ("ana", 2.5)]

        async with engine.begin() as connection:
            await connection.execute(
                text("DELETE FROM conversations WHERE tenant_id = :t AND chat_id = 'c1'"),
                {"t": north},
            )
        assert await _counts(engine, north) == {table: 1 for table in CONVERSATION_ROWS}
        async with engine.begin() as connection:
            await connection.execute(text("DELETE FROM tenants WHERE id = :t"), {"t": north})
        assert await _counts(engine, north) == {table: 0 for table in CONVERSATION_ROWS}
        assert await _counts(engine, south) == stored

        await downgrade(engine, "0003")
        assert await _foreign_keys(engine) == before
        assert await _counts(engine, south) == stored
    finally:
        await engine.dispose()

"""Migrations are the only way the schema changes: they must match the models exactly."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from alembic import command
from sqlalchemy import inspect, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from powerpulse.db import create_engine
from powerpulse.errors import ConfigurationError
from powerpulse.ingest.pgcopy import encode_message
from powerpulse.kinds import sqlite_timestamp
from powerpulse.migrate import (
    alembic_config,
    head_revision,
    prepare_schema,
    schema_differences,
    schema_state,
    upgrade,
)
from powerpulse.models import Message
from powerpulse.repositories.analyses import AnalysisRepository
from powerpulse.repositories.conversations import ConversationRepository
from powerpulse.repositories.messages import INSERT_COLUMNS, MessageRepository
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


NOW = datetime(2026, 12, 1, tzinfo=UTC)


async def _store_rows(engine: Any, names: tuple[str, ...]) -> list[int]:
    """Tenants of these names, each with conversations c1 and c2 and one row of each of
    CONVERSATION_ROWS per conversation; their ids."""
    tenants: list[int] = []
    async with engine.begin() as connection:
        for name in names:
            tenant = (
                await connection.execute(
                    text(
                        "INSERT INTO tenants (name, created_at, data_version)"
                        " VALUES (:name, :now, 0) RETURNING id"
                    ),
                    {"name": name, "now": NOW},
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
                        {"tenant": tenant, "chat": chat, "now": NOW},
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
                        {"tenant": tenant, "now": NOW},
                    )
                ).scalar_one()
                for statement in CONVERSATION_ROWS.values():
                    await connection.execute(
                        text(statement),
                        {
                            "tenant": tenant,
                            "conversation": conversation,
                            "job": job,
                            "now": NOW,
                        },
                    )
    return tenants


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
        north, south = await _store_rows(engine, ("north", "south"))
        stored = {table: 2 for table in CONVERSATION_ROWS}
        assert await _counts(engine, north) == stored

        await upgrade(engine, "0004")

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


MISSING = 987_654_321


async def _conversation_id(engine: Any, tenant: int, chat: str) -> int:
    async with engine.connect() as connection:
        return int(
            (
                await connection.execute(
                    text("SELECT id FROM conversations WHERE tenant_id = :t AND chat_id = :c"),
                    {"t": tenant, "c": chat},
                )
            ).scalar_one()
        )


async def _job_id(engine: Any, tenant: int) -> int:
    async with engine.connect() as connection:
        return int(
            (
                await connection.execute(
                    text("SELECT min(id) FROM analysis_jobs WHERE tenant_id = :t"), {"t": tenant}
                )
            ).scalar_one()
        )


def _assert_names_a_missing_conversation(error: BaseException, dialect: str) -> None:
    """`error` as SQLAlchemy raises it, or as the driver's bulk path does."""
    driver_error = error.orig if isinstance(error, DBAPIError) else error
    if dialect == "postgresql":
        assert getattr(driver_error, "sqlstate", None) == "23503"
        assert f"names conversation {MISSING}, which does not exist" in str(driver_error)
    else:
        assert "FOREIGN KEY constraint failed" in str(driver_error)


async def test_rows_of_a_conversation_must_name_one_that_exists(database_url: str) -> None:
    """At head both engines refuse the same writes: SQLite by its foreign keys, PostgreSQL by
    the triggers of 0005. A refused statement stores nothing, and the rows already stored
    stay as they were."""
    engine = create_engine(Settings(database_url=database_url))
    dialect = engine.dialect.name
    try:
        await upgrade(engine)
        (north,) = await _store_rows(engine, ("north",))
        stored = await _counts(engine, north)
        c1 = await _conversation_id(engine, north, "c1")
        c2 = await _conversation_id(engine, north, "c2")
        job = await _job_id(engine, north)

        for table, statement in CONVERSATION_ROWS.items():
            with pytest.raises(IntegrityError) as refused:
                async with engine.begin() as connection:
                    await connection.execute(
                        text(statement),
                        {"tenant": north, "conversation": MISSING, "job": job, "now": NOW},
                    )
            _assert_names_a_missing_conversation(refused.value, dialect)
            with pytest.raises(IntegrityError) as refused:
                async with engine.begin() as connection:
                    await connection.execute(
                        text(
                            f"UPDATE {table} SET conversation_id = :missing"
                            " WHERE conversation_id = :c1"
                        ),
                        {"missing": MISSING, "c1": c1},
                    )
            _assert_names_a_missing_conversation(refused.value, dialect)

        # The upload's own bulk path (COPY on PostgreSQL): one bad row refuses the batch.
        rows = [
            (
                north,
                conversation,
                f"p:bulk{index}",
                None,
                "customer",
                "hi",
                NOW,
                None,
                None,
                None,
                None,
            )
            for index, conversation in enumerate([c1] * 50 + [MISSING] + [c2] * 50)
        ]
        with pytest.raises((sqlite3.IntegrityError, asyncpg.ForeignKeyViolationError)) as bulk:
            async with engine.begin() as connection:
                await MessageRepository(connection).bulk_insert(
                    Message.__table__,  # type: ignore[attr-defined]
                    ("tenant_id", *INSERT_COLUMNS),
                    rows,
                )
        _assert_names_a_missing_conversation(bulk.value, dialect)
        # As an upload stores messages (binary COPY of packed rows on PostgreSQL).
        with pytest.raises((sqlite3.IntegrityError, asyncpg.ForeignKeyViolationError)) as bulk:
            async with engine.begin() as connection:
                await MessageRepository(connection).insert_chats(
                    north,
                    [
                        (
                            row[1],
                            [
                                encode_message(row[2:])
                                if dialect == "postgresql"
                                else (*row[2:6], sqlite_timestamp(row[6]), *row[7:])
                            ],
                        )
                        for row in rows
                    ],
                )
        _assert_names_a_missing_conversation(bulk.value, dialect)
        assert await _counts(engine, north) == stored

        # Rows may move to a conversation that exists, and the same batch without the bad
        # row is stored.
        async with engine.begin() as connection:
            await connection.execute(
                text("UPDATE reply_events SET conversation_id = :c2 WHERE conversation_id = :c1"),
                {"c1": c1, "c2": c2},
            )
            await MessageRepository(connection).bulk_insert(
                Message.__table__,  # type: ignore[attr-defined]
                ("tenant_id", *INSERT_COLUMNS),
                [row for row in rows if row[1] != MISSING],
            )
        counts = await _counts(engine, north)
        assert counts == {**stored, "messages": stored["messages"] + 100}

        # A conversation that rows name keeps its id.
        with pytest.raises(IntegrityError):
            async with engine.begin() as connection:
                await connection.execute(
                    text("UPDATE conversations SET id = :missing WHERE id = :c2"),
                    {"missing": MISSING, "c2": c2},
                )
        assert await _conversation_id(engine, north, "c2") == c2
    finally:
        await engine.dispose()


async def test_deleting_conversations_or_their_tenant_deletes_their_rows(
    database_url: str,
) -> None:
    engine = create_engine(Settings(database_url=database_url))
    try:
        await upgrade(engine)
        north, south, west = await _store_rows(engine, ("north", "south", "west"))
        stored = {table: 2 for table in CONVERSATION_ROWS}
        async with engine.begin() as connection:
            await connection.execute(
                text("DELETE FROM conversations WHERE tenant_id = :t AND chat_id = 'c1'"),
                {"t": north},
            )
        assert await _counts(engine, north) == {table: 1 for table in CONVERSATION_ROWS}
        async with engine.begin() as connection:
            await connection.execute(text("DELETE FROM tenants WHERE id = :t"), {"t": north})
        assert await _counts(engine, north) == {table: 0 for table in CONVERSATION_ROWS}
        # One statement deleting conversations of two tenants.
        async with engine.begin() as connection:
            await connection.execute(
                text("DELETE FROM conversations WHERE chat_id = 'c2' AND tenant_id IN (:s, :w)"),
                {"s": south, "w": west},
            )
        for tenant in (south, west):
            assert await _counts(engine, tenant) == {table: 1 for table in CONVERSATION_ROWS}
        assert stored == {table: 2 for table in CONVERSATION_ROWS}
        if engine.dialect.name == "postgresql":
            async with engine.begin() as connection:
                await connection.execute(text("TRUNCATE conversations"))
            for tenant in (south, west):
                assert await _counts(engine, tenant) == {table: 0 for table in CONVERSATION_ROWS}
    finally:
        await engine.dispose()


Statement = tuple[str, dict[str, Any]]


async def _delete_waits_for_writer(engine: Any, write: Statement, delete: Statement) -> None:
    """`delete` cannot take its locks while `write` is uncommitted (it gives up after its
    lock timeout), and deletes once the writer has committed."""
    async with engine.connect() as writer, engine.connect() as deleter:
        await writer.execute(text(write[0]), write[1])
        await deleter.execute(text("SET lock_timeout = '200ms'"))
        with pytest.raises(DBAPIError) as blocked:
            await deleter.execute(text(delete[0]), delete[1])
        assert getattr(blocked.value.orig, "sqlstate", None) == "55P03"  # lock_not_available
        await deleter.rollback()
        await writer.commit()
        await deleter.execute(text(delete[0]), delete[1])
        await deleter.commit()


async def _writer_fails_after_delete(engine: Any, delete: Statement, write: Statement) -> None:
    """A `write` naming what an uncommitted `delete` removes waits for the deleting
    transaction, then fails as a foreign key would (23503) once it commits."""
    async with engine.connect() as deleter, engine.connect() as writer:
        await deleter.execute(text(delete[0]), delete[1])
        pending = asyncio.create_task(writer.execute(text(write[0]), write[1]))
        await asyncio.sleep(0.3)
        assert not pending.done()  # waiting for the deleting transaction
        await deleter.commit()
        with pytest.raises(IntegrityError) as refused:
            await pending
        assert getattr(refused.value.orig, "sqlstate", None) == "23503"
        await writer.rollback()


async def test_postgres_conversation_checks_lock_as_a_foreign_key_does(postgres_url: str) -> None:
    """A writer's rows keep their conversation from being deleted until it commits, and a
    writer naming a conversation that another transaction deletes fails once that commits,
    so no row outlives its conversation."""
    engine = create_engine(Settings(database_url=postgres_url))
    message = (
        "INSERT INTO messages (tenant_id, conversation_id, message_key, sender, sent_at)"
        " VALUES (:t, :c, :key, 'customer', :now)"
    )
    try:
        await upgrade(engine)
        (north,) = await _store_rows(engine, ("north",))
        c1 = await _conversation_id(engine, north, "c1")
        c2 = await _conversation_id(engine, north, "c2")

        # A cascade from an older snapshot could miss rows committed meanwhile: refused.
        for statement in (
            "DELETE FROM conversations WHERE id = :c",
            "DELETE FROM tenants WHERE id = (SELECT tenant_id FROM conversations WHERE id = :c)",
        ):
            async with engine.connect() as connection:
                repeatable = await connection.execution_options(isolation_level="REPEATABLE READ")
                with pytest.raises(DBAPIError) as refused:
                    await repeatable.execute(text(statement), {"c": c1})
                assert getattr(refused.value.orig, "sqlstate", None) == "55000"
                assert "READ COMMITTED" in str(refused.value.orig)
        assert await _counts(engine, north) == {table: 2 for table in CONVERSATION_ROWS}

        await _delete_waits_for_writer(
            engine,
            (message, {"t": north, "c": c1, "key": "p:w", "now": NOW}),
            ("DELETE FROM conversations WHERE id = :c", {"c": c1}),
        )
        assert (await _counts(engine, north))["messages"] == 1
        await _writer_fails_after_delete(
            engine,
            ("DELETE FROM conversations WHERE id = :c", {"c": c2}),
            (message, {"t": north, "c": c2, "key": "p:late", "now": NOW}),
        )
        assert await _counts(engine, north) == {table: 0 for table in CONVERSATION_ROWS}
    finally:
        await engine.dispose()


async def test_0005_downgrades_to_the_foreign_keys_and_back(database_url: str) -> None:
    engine = create_engine(Settings(database_url=database_url))
    try:
        await upgrade(engine)
        north, south = await _store_rows(engine, ("north", "south"))
        stored = {table: 2 for table in CONVERSATION_ROWS}
        keys = await _foreign_keys(engine)
        on_postgres = engine.dialect.name == "postgresql"
        for table in CONVERSATION_ROWS:
            assert (("conversation_id", "conversations") in keys[table]) is not on_postgres

        await downgrade(engine, "0004")
        for table, keys_then in (await _foreign_keys(engine)).items():
            assert ("conversation_id", "conversations") in keys_then, table
        async with engine.connect() as connection:
            triggers = (
                (
                    await connection.execute(
                        text("SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal")
                    )
                ).scalar_one()
                if on_postgres
                else 0
            )
        assert triggers == 0
        assert await _counts(engine, north) == stored

        await upgrade(engine)
        assert await schema_differences(engine) == []
        assert await _counts(engine, south) == stored
    finally:
        await engine.dispose()


async def test_postgres_stores_analyses_and_topics_in_a_statement_per_batch(
    postgres_url: str,
) -> None:
    """The analysis worker's writes fire the conversation check once per statement, so
    they must not be one statement per row (executemany): 50 analyses and their topics,
    first stored then overwritten, run the check twice each time."""
    engine = create_engine(Settings(database_url=postgres_url))
    try:
        await upgrade(engine)
        (north,) = await _store_rows(engine, ("north",))
        async with engine.begin() as connection:
            ids = list(
                (
                    await connection.execute(
                        text(
                            "INSERT INTO conversations (tenant_id, chat_id, message_count,"
                            " customer_message_count, agent_message_count, bot_message_count,"
                            " first_message_at, last_message_at, duration_minutes, reply_count,"
                            " contact_count, updated_at, data_version)"
                            " SELECT :t, 'bulk' || n, 1, 1, 0, 0, :now, :now, 0, 0, 1, :now, 0"
                            " FROM generate_series(1, 50) AS n RETURNING id"
                        ),
                        {"t": north, "now": NOW},
                    )
                ).scalars()
            )
        # The view also counts calls of earlier transactions that the backend has not yet
        # reported, so count the difference inside one transaction.
        calls_so_far = text(
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_xact_user_functions"
            " WHERE funcname = 'powerpulse_check_conversation_rows'"
        )
        for status in ("PENDING", "DONE"):
            async with engine.begin() as connection:
                await connection.execute(text("SET LOCAL track_functions = 'all'"))
                before = (await connection.execute(calls_so_far)).scalar_one()
                await AnalysisRepository(connection).store(
                    north,
                    [{"conversation_id": cid, "status": status, "updated_at": NOW} for cid in ids],
                    [
                        (cid, topic, position)
                        for cid in ids
                        for position, topic in enumerate(("billing", "outage"))
                    ],
                    version=1,
                )
                calls = (await connection.execute(calls_so_far)).scalar_one() - before
            assert calls == 2, (status, calls)  # the analyses, then the topics
        async with engine.connect() as connection:
            stored = (
                await connection.execute(
                    text(
                        "SELECT count(*) FROM conversation_analyses"
                        " WHERE status = 'DONE' AND conversation_id = ANY(:ids)"
                    ),
                    {"ids": ids},
                )
            ).scalar_one()
            topics = (
                await connection.execute(
                    text(
                        "SELECT count(*) FROM conversation_topics WHERE conversation_id = ANY(:ids)"
                    ),
                    {"ids": ids},
                )
            ).scalar_one()
        assert (stored, topics) == (50, 100)
    finally:
        await engine.dispose()


async def _parent_keys(engine: Any) -> set[tuple[str, str, str]]:
    """(table, column, referred table) of the keys that 0006 replaces on PostgreSQL."""

    def read(connection: Any) -> set[tuple[str, str, str]]:
        inspector = inspect(connection)
        return {
            (table, column, key["referred_table"])
            for table in ("conversations", "analysis_tasks")
            for key in inspector.get_foreign_keys(table)
            for column in key["constrained_columns"]
            if column in ("tenant_id", "job_id")
        }

    async with engine.connect() as connection:
        return await connection.run_sync(read)


PARENT_KEYS = {
    ("conversations", "tenant_id", "tenants"),
    ("analysis_tasks", "job_id", "analysis_jobs"),
}
NEW_CONVERSATION = (
    "INSERT INTO conversations (tenant_id, chat_id, message_count, customer_message_count,"
    " agent_message_count, bot_message_count, first_message_at, last_message_at,"
    " duration_minutes, reply_count, contact_count, updated_at, data_version)"
    " VALUES (:tenant, :chat, 1, 1, 0, 0, :now, :now, 0, 0, 1, :now, 0)"
)


def _assert_names_a_missing(error: BaseException, dialect: str, parent: str) -> None:
    driver_error = error.orig if isinstance(error, DBAPIError) else error
    if dialect == "postgresql":
        assert getattr(driver_error, "sqlstate", None) == "23503"
        assert f"names {parent} {MISSING}, which does not exist" in str(driver_error)
    else:
        assert "FOREIGN KEY constraint failed" in str(driver_error)


async def test_conversations_and_tasks_must_name_a_tenant_and_a_job_that_exist(
    database_url: str,
) -> None:
    """At head both engines refuse the same writes: SQLite by its foreign keys, PostgreSQL by
    the triggers of 0006, for SQL statements and for an upload's COPY alike. Nothing already
    stored changes."""
    engine = create_engine(Settings(database_url=database_url))
    dialect = engine.dialect.name
    try:
        await upgrade(engine)
        assert await _parent_keys(engine) == (set() if dialect == "postgresql" else PARENT_KEYS)
        (north,) = await _store_rows(engine, ("north",))
        stored = await _counts(engine, north)
        c1 = await _conversation_id(engine, north, "c1")
        job = await _job_id(engine, north)
        task = CONVERSATION_ROWS["analysis_tasks"]
        refused_writes = [
            (NEW_CONVERSATION, {"tenant": MISSING, "chat": "c9", "now": NOW}, "tenant"),
            (
                "UPDATE conversations SET tenant_id = :missing WHERE id = :c1",
                {"missing": MISSING, "c1": c1},
                "tenant",
            ),
            (task, {"tenant": north, "conversation": c1, "job": MISSING}, "analysis job"),
            (
                "UPDATE analysis_tasks SET job_id = :missing WHERE job_id = :job",
                {"missing": MISSING, "job": job},
                "analysis job",
            ),
        ]
        for statement, values, parent in refused_writes:
            with pytest.raises(IntegrityError) as refused:
                async with engine.begin() as connection:
                    await connection.execute(text(statement), values)
            _assert_names_a_missing(refused.value, dialect, parent)

        # As an upload stores conversations (binary COPY on PostgreSQL): one statement.
        convert = sqlite_timestamp if dialect == "sqlite" else (lambda moment: moment)
        measurement = ("web", 1, 1, 0, 0, convert(NOW), convert(NOW), 0.0, None, None, None, 0, 1)
        with pytest.raises((sqlite3.IntegrityError, asyncpg.ForeignKeyViolationError)) as bulk:
            async with engine.begin() as connection:
                await ConversationRepository(connection).insert_many(
                    MISSING,
                    [("u1", measurement), ("u2", measurement)],
                    version=1,
                    updated_at=convert(NOW),
                )
        _assert_names_a_missing(bulk.value, dialect, "tenant")
        assert await _counts(engine, north) == stored

        # A tenant and a job that rows name keep their ids.
        for statement in (
            "UPDATE tenants SET id = :missing WHERE id = :north",
            "UPDATE analysis_jobs SET id = :missing WHERE id = :job",
        ):
            with pytest.raises(IntegrityError):
                async with engine.begin() as connection:
                    await connection.execute(
                        text(statement), {"missing": MISSING, "north": north, "job": job}
                    )
        # The same writes naming ones that exist are stored.
        async with engine.begin() as connection:
            await connection.execute(
                text(NEW_CONVERSATION), {"tenant": north, "chat": "c9", "now": NOW}
            )
            await ConversationRepository(connection).insert_many(
                north, [("u1", measurement)], version=1, updated_at=convert(NOW)
            )
            await connection.execute(text(task), {"tenant": north, "conversation": c1, "job": job})
        counts = await _counts(engine, north)
        assert counts == {**stored, "analysis_tasks": stored["analysis_tasks"] + 1}
        assert await _conversation_id(engine, north, "u1") > 0
    finally:
        await engine.dispose()


async def test_deleting_a_job_deletes_its_tasks_and_a_tenant_its_conversations(
    database_url: str,
) -> None:
    engine = create_engine(Settings(database_url=database_url))
    try:
        await upgrade(engine)
        north, south = await _store_rows(engine, ("north", "south"))
        job = await _job_id(engine, north)
        async with engine.begin() as connection:
            await connection.execute(text("DELETE FROM analysis_jobs WHERE id = :j"), {"j": job})
        counts = await _counts(engine, north)
        assert counts == {**{table: 2 for table in CONVERSATION_ROWS}, "analysis_tasks": 1}

        async with engine.begin() as connection:
            await connection.execute(text("DELETE FROM tenants WHERE id = :t"), {"t": north})
            left = (
                await connection.execute(
                    text("SELECT count(*) FROM conversations WHERE tenant_id = :t"), {"t": north}
                )
            ).scalar_one()
        assert left == 0
        assert await _counts(engine, north) == {table: 0 for table in CONVERSATION_ROWS}
        assert await _counts(engine, south) == {table: 2 for table in CONVERSATION_ROWS}
        if engine.dialect.name == "postgresql":
            async with engine.begin() as connection:
                await connection.execute(text("TRUNCATE analysis_jobs CASCADE"))
            assert (await _counts(engine, south))["analysis_tasks"] == 0
            async with engine.begin() as connection:
                await connection.execute(text("TRUNCATE tenants CASCADE"))
                left = (
                    await connection.execute(text("SELECT count(*) FROM conversations"))
                ).scalar_one()
            assert left == 0
            assert await _counts(engine, south) == {table: 0 for table in CONVERSATION_ROWS}
    finally:
        await engine.dispose()


async def test_postgres_tenant_checks_lock_as_a_foreign_key_does(postgres_url: str) -> None:
    """A writer's conversations keep their tenant from being deleted until it commits, and a
    writer naming a tenant that another transaction deletes fails once that commits."""
    engine = create_engine(Settings(database_url=postgres_url))
    try:
        await upgrade(engine)
        north, south = await _store_rows(engine, ("north", "south"))
        async with engine.connect() as connection:
            repeatable = await connection.execution_options(isolation_level="REPEATABLE READ")
            with pytest.raises(DBAPIError) as refused:
                await repeatable.execute(text("DELETE FROM tenants WHERE id = :t"), {"t": north})
            assert getattr(refused.value.orig, "sqlstate", None) == "55000"

        await _delete_waits_for_writer(
            engine,
            (NEW_CONVERSATION, {"tenant": north, "chat": "w", "now": NOW}),
            ("DELETE FROM tenants WHERE id = :t", {"t": north}),
        )
        await _writer_fails_after_delete(
            engine,
            ("DELETE FROM tenants WHERE id = :t", {"t": south}),
            (NEW_CONVERSATION, {"tenant": south, "chat": "late", "now": NOW}),
        )
        async with engine.connect() as connection:
            left = (
                await connection.execute(
                    text("SELECT count(*) FROM conversations WHERE tenant_id IN (:n, :s)"),
                    {"n": north, "s": south},
                )
            ).scalar_one()
        assert left == 0  # the conversation written before the delete went with its tenant
    finally:
        await engine.dispose()


async def test_0006_downgrades_to_the_foreign_keys_and_back(database_url: str) -> None:
    engine = create_engine(Settings(database_url=database_url))
    try:
        await upgrade(engine)
        (north,) = await _store_rows(engine, ("north",))
        stored = await _counts(engine, north)
        await downgrade(engine, "0005")
        assert await _parent_keys(engine) == PARENT_KEYS
        assert await _counts(engine, north) == stored
        await upgrade(engine)
        assert await schema_differences(engine) == []
        on_postgres = engine.dialect.name == "postgresql"
        assert await _parent_keys(engine) == (set() if on_postgres else PARENT_KEYS)
        assert await _counts(engine, north) == stored
    finally:
        await engine.dispose()

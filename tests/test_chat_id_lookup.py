"""Finding an upload's chats among the stored conversations: the right ids on both engines,
and on PostgreSQL a key lookup per chat id even while no statistics exist yet."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, datetime
from typing import TypeVar

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from powerpulse.db import Database, create_engine, create_schema
from powerpulse.kinds import from_storage_timestamp, storage_timestamps
from powerpulse.repositories.analyses import AnalysisRepository
from powerpulse.repositories.conversations import ConversationRepository
from powerpulse.repositories.messages import MessageRepository
from powerpulse.repositories.tenants import TenantRepository
from powerpulse.settings import Settings

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
T = TypeVar("T")


async def _database(url: str) -> AsyncIterator[Database]:
    database = Database(create_engine(Settings(database_url=url)))
    try:
        await create_schema(database.engine)
        yield database
    finally:
        await database.dispose()


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    async for database in _database(database_url):
        yield database


@pytest.fixture
async def postgres(postgres_url: str) -> AsyncIterator[Database]:
    async for database in _database(postgres_url):
        yield database


async def _store(
    connection: AsyncConnection, tenant_id: int, chat_ids: list[str]
) -> dict[str, int]:
    """New conversations as an upload stores them (one message each)."""
    convert = storage_timestamps(connection.dialect.name) or (lambda moment: moment)
    stamp = convert(T0)
    measurement = ("web", 1, 1, 0, 0, stamp, stamp, 0.0, None, None, None, 0, 1)
    return await ConversationRepository(connection).insert_many(
        tenant_id, [(chat_id, measurement) for chat_id in chat_ids], version=1, updated_at=stamp
    )


async def test_only_the_tenants_stored_chats_are_found(database: Database) -> None:
    async with database.write() as connection:
        tenants = TenantRepository(connection)
        ours, theirs = await tenants.create("ours"), await tenants.create("theirs")
        stored = await _store(connection, ours, ["a", "b", "c"])
        await _store(connection, theirs, ["d", "a"])

    async with database.write() as connection:
        found = await ConversationRepository(connection).ids_by_chat_id(
            ours, ["c", "a", "d", "never", "c"]
        )
        assert found == {"a": stored["a"], "c": stored["c"]}
        assert await ConversationRepository(connection).ids_by_chat_id(ours, []) == {}


async def _index_rows_read(connection: AsyncConnection, table: str) -> int:
    """Index entries this transaction has read from the table's indexes so far."""
    statement = text(
        "SELECT coalesce(sum(pg_stat_get_xact_tuples_returned(indexrelid)), 0) "
        "FROM pg_index WHERE indrelid = CAST(:table AS regclass)"
    )
    return int((await connection.execute(statement, {"table": table})).scalar_one())


async def _sequential_scans(connection: AsyncConnection, table: str) -> int:
    """Sequential scans this transaction has started on the table so far."""
    statement = text("SELECT pg_stat_get_xact_numscans(CAST(:table AS regclass))")
    return int((await connection.execute(statement, {"table": table})).scalar_one())


async def _measured(
    connection: AsyncConnection, table: str, read: Awaitable[T]
) -> tuple[T, int, int]:
    """What `read` returns, with the index entries it read from `table` and the
    sequential scans it started on it (both of this transaction)."""
    before = await _index_rows_read(connection, table)
    scans = await _sequential_scans(connection, table)
    result = await read
    return (
        result,
        await _index_rows_read(connection, table) - before,
        await _sequential_scans(connection, table) - scans,
    )


async def _assert_looked_up_by_key(
    connection: AsyncConnection, tenant_id: int, asked: list[str], stored: dict[str, int]
) -> None:
    """Each run finds the stored chats among `asked` (50 of them) by reading about one
    index entry per chat id; enough runs for PostgreSQL to switch a prepared statement
    from plans for the values to a generic plan."""
    conversations = ConversationRepository(connection)
    for _ in range(8):
        before = await _index_rows_read(connection, "conversations")
        found = await conversations.ids_by_chat_id(tenant_id, asked)
        read = await _index_rows_read(connection, "conversations") - before

        assert found == {chat_id: stored[chat_id] for chat_id in asked if chat_id in stored}
        assert len(found) == 50
        assert read <= len(asked), f"read {read} index entries for {len(asked)} chat ids"


async def test_a_first_upload_looks_its_chats_up_by_key_on_postgresql(postgres: Database) -> None:
    """Until it is first analysed, the conversations table has no statistics (an upload
    right after the first, or the repeated chats of a first upload). Asking for a batch's
    chat ids must still read about one index entry per chat id, not every conversation of
    the tenant (which made the lookups of an upload grow with the square of its size)."""
    async with postgres.write() as connection:
        tenant_id = await TenantRepository(connection).create("acme")
    async with postgres.write(bulk=True) as connection:
        stored = await _store(connection, tenant_id, [f"chat-{n}" for n in range(3000)])
        asked = [f"chat-{n}" for n in range(0, 3000, 60)]
        asked += [f"new-{n}" for n in range(50)]

        await _assert_looked_up_by_key(connection, tenant_id, asked, stored)


async def test_a_tenant_the_statistics_have_not_seen_is_looked_up_by_key_on_postgresql(
    postgres: Database,
) -> None:
    """Statistics taken while only other tenants had conversations say nothing of a new
    tenant's. Planned for its id, the lookup judged it to have one conversation and read
    all of them through another index that starts with tenant_id, for each chat id: 0.7 s
    for a batch of 500 at 12,000 conversations, in the first five batches of a connection."""
    async with postgres.write() as connection:
        tenants = TenantRepository(connection)
        known, new = await tenants.create("known"), await tenants.create("new")
        await _store(connection, known, [f"known-{n}" for n in range(3000)])
    async with postgres.write() as connection:
        await connection.exec_driver_sql("ANALYZE conversations")
    async with postgres.write(bulk=True) as connection:
        stored = await _store(connection, new, [f"chat-{n}" for n in range(3000)])
        asked = [f"chat-{n}" for n in range(0, 3000, 60)] + [f"known-{n}" for n in range(50)]

        await _assert_looked_up_by_key(connection, new, asked, stored)


async def test_a_reupload_reads_only_its_chats_stored_messages_on_postgresql(
    postgres: Database,
) -> None:
    """Re-measuring chats already stored reads their messages. Right after a big upload the
    messages table has no statistics; the read must still go by conversation, not through
    every message of the tenant."""
    async with postgres.write() as connection:
        tenant_id = await TenantRepository(connection).create("acme")
    async with postgres.write(bulk=True) as connection:
        stored = await _store(connection, tenant_id, [f"chat-{n}" for n in range(3000)])
        rows = [
            (f"p:{n}-{m}", None, "CUSTOMER", "hi", T0, None, None, None, None)
            for n in range(3000)
            for m in range(3)
        ]
        await MessageRepository(connection).insert_chats(
            tenant_id,
            [(stored[f"chat-{n}"], rows[n * 3 : n * 3 + 3]) for n in range(3000)],
        )
    async with postgres.write(bulk=True) as connection:
        messages = MessageRepository(connection)
        asked = [stored[f"chat-{n}"] for n in range(0, 3000, 60)]
        for _ in range(8):
            facts, read, scans = await _measured(
                connection, "messages", messages.facts_for(tenant_id, asked)
            )

            assert sorted({row.conversation_id for row in facts}) == sorted(asked)
            assert len(facts) == 3 * len(asked)
            assert scans == 0, "read every message of the table"
            assert read <= 3 * len(asked), f"read {read} index entries for {len(facts)} messages"

            # The keys alone, read first to find what is new, the same way.
            keys, read, scans = await _measured(
                connection, "messages", messages.keys_for(tenant_id, asked)
            )

            assert keys == {
                stored[f"chat-{n}"]: {f"p:{n}-{m}" for m in range(3)} for n in range(0, 3000, 60)
            }
            assert scans == 0, "read every message of the table"
            assert read <= 3 * len(asked), f"read {read} index entries for {3 * len(asked)} keys"

        # What the analysis of an upload reads of the same conversations, the same way.
        transcripts, read, scans = await _measured(
            connection, "messages", messages.transcripts_for(tenant_id, asked)
        )

        assert sorted(transcripts) == sorted(asked)
        assert all(len(transcript) == 3 for transcript in transcripts.values())
        assert scans == 0, "read every message of the table"
        assert read <= 3 * len(asked), f"read {read} index entries for {3 * len(asked)} messages"


async def test_a_reupload_reads_its_chats_analyses_by_key_on_postgresql(
    postgres: Database,
) -> None:
    """A re-upload asks for the analysis state of each unchanged chat. Right after the
    first upload the analyses table has no statistics, and asked as
    `conversation_id = ANY(...)` the planner scanned it whole for every batch (12–15 ms a
    batch of 500 at 121,910 conversations, 3 s of a re-upload of 1M messages): each
    conversation must be read by its key."""
    async with postgres.write() as connection:
        tenant_id = await TenantRepository(connection).create("acme")
    async with postgres.write(bulk=True) as connection:
        stored = await _store(connection, tenant_id, [f"chat-{n}" for n in range(3000)])
        await AnalysisRepository(connection).mark_pending(
            tenant_id, list(stored.values()), created=set(stored.values()), version=1
        )
    async with postgres.write(bulk=True) as connection:
        analyses = AnalysisRepository(connection)
        asked = [stored[f"chat-{n}"] for n in range(0, 3000, 60)] + [10_000_000]
        for _ in range(8):
            states, read, scans = await _measured(
                connection, "conversation_analyses", analyses.state_of(tenant_id, asked)
            )

            assert sorted(states) == sorted(asked[:-1])
            assert {state["status"] for state in states.values()} == {"PENDING"}
            assert scans == 0, "read every analysis of the table"
            assert read <= len(asked), f"read {read} index entries for {len(asked)} ids"


async def test_analysis_states_are_found_within_the_tenant(database: Database) -> None:
    async with database.write() as connection:
        tenants = TenantRepository(connection)
        ours, theirs = await tenants.create("ours"), await tenants.create("theirs")
        mine = await _store(connection, ours, ["a", "b", "unjudged"])
        other = await _store(connection, theirs, ["a"])
        analyses = AnalysisRepository(connection)
        await analyses.mark_pending(ours, [mine["a"], mine["b"]], created=set(), version=1)
        await analyses.mark_pending(theirs, [other["a"]], created=set(), version=1)
    async with database.read() as connection:
        analyses = AnalysisRepository(connection)
        asked = [mine["b"], mine["a"], mine["unjudged"], other["a"], mine["a"]]
        states = await analyses.state_of(ours, asked)
        assert sorted(states) == sorted([mine["a"], mine["b"]])
        assert states[mine["a"]]["status"] == "PENDING"
        assert states[mine["a"]]["fingerprint"] is None
        assert set(await analyses.state_of(theirs, asked)) == {other["a"]}
        assert await analyses.state_of(ours, []) == {}


async def test_stored_keys_are_found_by_conversation_within_the_tenant(
    database: Database,
) -> None:
    async with database.write() as connection:
        tenants = TenantRepository(connection)
        ours, theirs = await tenants.create("ours"), await tenants.create("theirs")
        mine = await _store(connection, ours, ["a", "b", "silent"])
        other = await _store(connection, theirs, ["a"])
        convert = storage_timestamps(connection.dialect.name) or (lambda moment: moment)
        row = ("CUSTOMER", "hi", convert(T0), None, None, None, None)
        await MessageRepository(connection).insert_chats(
            ours,
            [
                (mine["a"], [("p:1", None, *row), ("p:2", "2", *row)]),
                (mine["b"], [("h:x", None, *row)]),
            ],
        )
        await MessageRepository(connection).insert_chats(
            theirs, [(other["a"], [("p:9", None, *row)])]
        )
    async with database.read() as connection:
        messages = MessageRepository(connection)
        asked = [mine["a"], mine["b"], mine["silent"], other["a"]]
        assert await messages.keys_for(ours, asked) == {
            mine["a"]: {"p:1", "p:2"},
            mine["b"]: {"h:x"},
        }
        assert await messages.keys_for(theirs, asked) == {other["a"]: {"p:9"}}
        assert await messages.keys_for(ours, []) == {}


async def test_stored_facts_come_in_time_order_within_the_tenant(database: Database) -> None:
    """What re-measuring a continued chat reads: every stored message of the tenant's
    chats, by chat and in time order (ties by id), with a time that reads back as the
    aware UTC moment stored, on either engine."""
    later = datetime(2026, 3, 2, 9, 5, 30, 250_000, tzinfo=UTC)
    async with database.write() as connection:
        tenants = TenantRepository(connection)
        ours, theirs = await tenants.create("ours"), await tenants.create("theirs")
        mine = await _store(connection, ours, ["a", "b"])
        other = await _store(connection, theirs, ["a"])
        convert = storage_timestamps(connection.dialect.name) or (lambda moment: moment)

        def row(key: str, sender: str, moment: datetime, agent: str | None = None) -> tuple:
            return (key, None, sender, "hi", convert(moment), agent, None, None, None)

        await MessageRepository(connection).insert_chats(
            ours,
            [
                # Stored out of time order: the later message first, then a tie at T0.
                (
                    mine["a"],
                    [
                        row("p:3", "AGENT", later, "amina"),
                        row("p:1", "CUSTOMER", T0),
                        row("p:2", "BOT", T0),
                    ],
                ),
                (mine["b"], [row("p:4", "CUSTOMER", T0)]),
            ],
        )
        await MessageRepository(connection).insert_chats(
            theirs, [(other["a"], [row("p:9", "CUSTOMER", T0)])]
        )
    async with database.read() as connection:
        messages = MessageRepository(connection)
        facts = await messages.facts_for(ours, [mine["b"], mine["a"], other["a"]])

        read = [
            (conversation_id, sender, from_storage_timestamp(sent_at), username)
            for _id, conversation_id, sender, sent_at, username, _email in facts
        ]
        first, second = sorted((mine["a"], mine["b"]))
        by_chat = {
            mine["a"]: [
                (mine["a"], "CUSTOMER", T0, None),
                (mine["a"], "BOT", T0, None),
                (mine["a"], "AGENT", later, "amina"),
            ],
            mine["b"]: [(mine["b"], "CUSTOMER", T0, None)],
        }
        assert read == by_chat[first] + by_chat[second]
        assert all(moment.tzinfo is not None for _, _, moment, _ in read)
        assert await messages.facts_for(ours, []) == []

"""Messages packed in PostgreSQL's binary COPY form: what is encoded is what is stored."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from powerpulse.db import Database, create_engine, create_schema
from powerpulse.ingest import pgcopy
from powerpulse.ingest.batches import open_source
from powerpulse.ingest.packing import pack_batch, pack_rows, platform_of, row_key, row_values
from powerpulse.ingest.reader import ReadOptions, UploadReport
from powerpulse.kinds import SenderKind
from powerpulse.models import Conversation, Message
from powerpulse.repositories.conversations import MEASUREMENT_COLUMNS, ConversationRepository
from powerpulse.repositories.messages import INSERT_COLUMNS, MessageRepository
from powerpulse.repositories.tenants import TenantRepository
from powerpulse.settings import Settings
from powerpulse.synthetic import write_export

EARLY = datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC)  # before PostgreSQL's epoch
LATE = datetime(2099, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)
FIELDS: list[tuple[Any, ...]] = [
    (
        "p:1",
        "1",
        SenderKind.CUSTOMER,
        "Habari 👋 — token haijafika ✓ 你好",
        EARLY,
        None,
        None,
        None,
        None,
    ),
    ("h:2", None, SenderKind.AGENT, "", LATE, "Zoë", "zoe@example.com", "message", "fb_chat"),
    ("h:3", "", SenderKind.BOT, None, datetime(2000, 1, 1, tzinfo=UTC), "", "", "", ""),
    (
        "p:" + "k" * 253,
        "x" * 255,
        SenderKind.CUSTOMER,
        "a\tb\nc\\d\r" * 500,
        LATE,
        None,
        None,
        None,
        None,
    ),
]


def read_options(*, copy_rows: bool) -> ReadOptions:
    return ReadOptions(
        max_message_chars=4000,
        max_reported_errors=5,
        autoresponse_patterns=("is away",),
        session_gap=timedelta(hours=24),
        batch_chats=50,
        timestamp=None,
        copy_rows=copy_rows,
    )


@pytest.mark.parametrize("fields", FIELDS)
def test_a_message_decodes_to_the_fields_it_was_encoded_from(fields: tuple[Any, ...]) -> None:
    packed = pgcopy.encode_message(fields)
    decoded = pgcopy.decode_message(packed)
    assert decoded == fields
    # Empty text and NULL are different values, and both survive.
    assert [value is None for value in decoded] == [value is None for value in fields]
    assert isinstance(decoded[2], SenderKind)
    assert row_values(packed) == fields
    assert row_values(fields) is fields
    # The key alone, as the store checks for messages it has already.
    assert pgcopy.message_key(packed) == row_key(packed) == row_key(fields) == fields[0]


def test_a_packed_message_with_bytes_left_over_is_refused() -> None:
    packed = pgcopy.encode_message(FIELDS[0])
    with pytest.raises(ValueError, match="after its last field"):
        pgcopy.decode_message(packed + b"\x00")


def test_copy_packing_keeps_timestamps_as_datetimes() -> None:
    with pytest.raises(ValueError, match="datetimes"):
        pack_rows([], str, copy=True)


def synthetic_export(messages: int) -> bytes:
    export = io.BytesIO()
    write_export(export, messages=messages, seed=5)
    return export.getvalue()


def test_copy_packed_batches_hold_the_same_rows_as_tuple_packed_ones() -> None:
    data = synthetic_export(3000)
    plain = read_options(copy_rows=False).reader(io.BytesIO(data), UploadReport())
    packed = read_options(copy_rows=True).reader(io.BytesIO(data), UploadReport())
    batches = replies = 0
    while tuples := pack_batch(plain.next_batch(50), None):
        copied = pack_batch(packed.next_batch(50), None, copy=True)
        batches += 1
        for chat, twin in zip(tuples, copied, strict=True):
            assert all(isinstance(row, bytes) for row in twin.rows)
            assert [row_values(row) for row in twin.rows] == chat.rows
            # So is the measurement, with the chat id.
            assert twin.measurement == (
                None
                if chat.measurement is None
                else pgcopy.encode_conversation(chat.chat_id, chat.measurement)
            )
            assert platform_of(twin.measurement) == platform_of(chat.measurement)
            # Agents and reply events are packed for COPY too.
            assert twin.agents == [pgcopy.encode_agent(agent) for agent in chat.agents]
            assert twin.replies == [pgcopy.encode_reply(reply) for reply in chat.replies]
            replies += len(chat.replies)
    assert batches > 2 and replies > 100
    assert packed.next_batch(50) == []


async def test_the_parsing_process_packs_for_copy_when_asked() -> None:
    data = synthetic_export(800)
    options = read_options(copy_rows=True)
    batches = {}
    for name, minimum in (("process", 0), ("thread", None)):
        source = await open_source(
            io.BytesIO(data), options, UploadReport(), process_min_bytes=minimum
        )
        batches[name] = [batch async for batch in source]
        await source.aclose()
    assert batches["process"] == batches["thread"]
    rows = [row for batch in batches["process"] for chat in batch for row in chat.rows]
    assert len(rows) > 500 and all(isinstance(row, bytes) for row in rows)


@pytest.fixture
async def postgres(postgres_url: str) -> AsyncIterator[Database]:
    database = Database(create_engine(Settings(database_url=postgres_url)))
    try:
        await create_schema(database.engine)
        yield database
    finally:
        await database.dispose()


async def _two_chats(connection: AsyncConnection) -> tuple[int, dict[str, int]]:
    """A tenant and its conversations "a" and "b"."""
    tenant_id = await TenantRepository(connection).create("acme")
    measurement = ("web", 1, 1, 0, 0, EARLY, LATE, 1.0, None, None, None, 0, 1)
    ids = await ConversationRepository(connection).insert_many(
        tenant_id, [("a", measurement), ("b", measurement)], version=1, updated_at=LATE
    )
    return tenant_id, ids


async def test_new_conversations_take_their_ids_from_the_tables_sequence(
    postgres: Database,
) -> None:
    """An upload takes its conversations' ids before their rows go in, from the sequence a
    plain insert draws on: a conversation inserted afterwards without an id comes after
    them, and no id is taken twice."""
    async with postgres.write() as connection:
        tenant_id, ids = await _two_chats(connection)
        measurement = ("web", 1, 1, 0, 0, EARLY, LATE, 1.0, None, None, None, 0, 1)
        more = await ConversationRepository(connection).insert_many(
            tenant_id, [(f"more-{n}", measurement) for n in range(3)], version=1, updated_at=LATE
        )
        later = (
            await connection.execute(
                text(
                    "INSERT INTO conversations (tenant_id, chat_id, message_count, "
                    "customer_message_count, agent_message_count, bot_message_count, "
                    "first_message_at, last_message_at, duration_minutes, reply_count, "
                    "contact_count, updated_at) VALUES (:tenant, 'plain', 1, 1, 0, 0, :at, "
                    ":at, 0, 0, 1, :at) RETURNING id"
                ),
                {"tenant": tenant_id, "at": LATE},
            )
        ).scalar_one()
    taken = [ids["a"], ids["b"], *(more[f"more-{n}"] for n in range(3)), later]
    assert taken == sorted(set(taken))


async def test_postgres_stores_packed_and_tuple_rows_as_given(postgres: Database) -> None:
    async with postgres.write() as connection:
        tenant_id, ids = await _two_chats(connection)
        await MessageRepository(connection).insert_chats(
            tenant_id,
            [
                # As an upload packs them, and as tuples (re-measured chats, other callers).
                (ids["a"], [pgcopy.encode_message(fields) for fields in FIELDS]),
                (ids["b"], []),
                (ids["b"], FIELDS[:2]),
            ],
        )
    table = Message.__table__  # type: ignore[attr-defined]
    columns = [table.c[name] for name in ("tenant_id", *INSERT_COLUMNS)]
    async with postgres.read() as connection:
        stored = (await connection.execute(select(*columns).order_by(table.c.id))).all()
    expected = [(tenant_id, ids["a"], *fields) for fields in FIELDS] + [
        (tenant_id, ids["b"], *fields) for fields in FIELDS[:2]
    ]
    assert [tuple(row) for row in stored] == expected


REPLIES: list[tuple[Any, ...]] = [
    ("Zoë", EARLY, LATE, 0.1),
    (
        "agent.one",
        datetime(2000, 1, 1, tzinfo=UTC),
        datetime(2000, 1, 1, 0, 0, 1, tzinfo=UTC),
        1e-9,
    ),
    ("a" * 320, LATE, LATE, 0.0),
    ("agent.one", EARLY, EARLY + timedelta(days=40_000), 57_600_000.25),
]
AGENTS: list[tuple[Any, ...]] = [("Zoë", 1), ("agent.one", 2_147_483_647), ("a" * 320, 0)]


async def test_postgres_stores_packed_and_tuple_details_as_given(postgres: Database) -> None:
    """Agents and reply events, packed as an upload packs them or given as tuples (chats
    re-measured while storing), are stored with every value unchanged."""
    async with postgres.write() as connection:
        tenant_id, ids = await _two_chats(connection)
        await ConversationRepository(connection).replace_details(
            tenant_id,
            [],
            [(ids["a"], list(map(pgcopy.encode_agent, AGENTS))), (ids["b"], AGENTS[:2])],
            [
                (ids["a"], list(map(pgcopy.encode_reply, REPLIES))),
                (ids["b"], []),
                (ids["b"], REPLIES[:2]),
            ],
        )
    async with postgres.read() as connection:
        agents = (
            await connection.execute(
                text(
                    "SELECT tenant_id, conversation_id, agent, message_count "
                    "FROM conversation_agents ORDER BY conversation_id, message_count"
                )
            )
        ).all()
        replies = (
            await connection.execute(
                text(
                    "SELECT tenant_id, conversation_id, agent, waiting_since, replied_at, "
                    "response_minutes FROM reply_events ORDER BY id"
                )
            )
        ).all()
    assert [tuple(row) for row in agents] == sorted(
        [(tenant_id, ids["a"], *agent) for agent in AGENTS]
        + [(tenant_id, ids["b"], *agent) for agent in AGENTS[:2]],
        key=lambda row: (row[1], row[3]),
    )
    assert [tuple(row) for row in replies] == [
        (tenant_id, ids["a"], *reply) for reply in REPLIES
    ] + [(tenant_id, ids["b"], *reply) for reply in REPLIES[:2]]


MEASUREMENTS: list[tuple[str, tuple[Any, ...]]] = [
    ("p:1", ("web", 1, 1, 0, 0, EARLY, EARLY, 0.0, None, None, None, 0, 1)),
    (
        "c" * 249,  # 255 with the "tuple-" prefix
        (None, 2_147_483_647, 7, 3, 0, EARLY, LATE, 57_600_000.25, 1e-9, "Zoë", 0.5, 9, 3),
    ),
    (
        "Habari 👋 你好",
        (
            "fb_chat",
            5,
            2,
            2,
            1,
            datetime(2000, 1, 1, tzinfo=UTC),
            LATE,
            1.5,
            0.0,
            "a" * 320,
            2.25,
            2,
            2,
        ),
    ),
]


async def test_postgres_stores_packed_and_tuple_conversations_as_given(
    postgres: Database,
) -> None:
    """New conversations, packed as an upload packs them or given as tuples, are stored with
    every value unchanged, stamped with the version and time of the insert."""
    table = Conversation.__table__  # type: ignore[attr-defined]
    stamp = datetime(2026, 12, 7, 20, 30, 1, 123_456, tzinfo=UTC)
    async with postgres.write() as connection:
        tenant_id = await TenantRepository(connection).create("acme")
        ids = await ConversationRepository(connection).insert_many(
            tenant_id,
            [(chat_id, pgcopy.encode_conversation(chat_id, m)) for chat_id, m in MEASUREMENTS]
            + [(f"tuple-{chat_id}", m) for chat_id, m in MEASUREMENTS],
            version=42,
            updated_at=stamp,
        )
    columns = [table.c[name] for name in ("id", "tenant_id", "chat_id", *MEASUREMENT_COLUMNS)]
    async with postgres.read() as connection:
        stored = (
            await connection.execute(select(*columns, table.c.data_version).order_by(table.c.id))
        ).all()
    expected = [
        (ids[name], tenant_id, name, *measurement, stamp, 42)
        for prefix in ("", "tuple-")
        for chat_id, measurement in MEASUREMENTS
        for name in (prefix + chat_id,)
    ]
    assert [tuple(row) for row in stored] == expected
    assert len(set(ids.values())) == len(expected)
    assert [platform_of(pgcopy.encode_conversation(c, m)) for c, m in MEASUREMENTS] == [
        m[0] for _, m in MEASUREMENTS
    ]

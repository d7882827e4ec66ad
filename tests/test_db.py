"""Database.read(quick=True): on SQLite the statements run on the event loop's thread,
every other use of a connection on the connection's own thread, and a failure in place
leaves the connection as usable as one on its thread; and which pages are quick."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

from powerpulse.db import Database, create_engine
from powerpulse.repositories.conversations import ConversationRepository
from powerpulse.services.filters import ConversationCriteria, ConversationOrder
from powerpulse.settings import Settings


async def _single_connection(settings: Settings) -> AsyncIterator[Database]:
    database = Database(create_engine(settings))
    try:
        yield database
    finally:
        await database.dispose()


# One pooled connection: every use in a test takes the same one.
ONE_CONNECTION = {"db_pool_size": 1, "db_max_overflow": 0}


@pytest.fixture
async def database(settings_factory: Any) -> AsyncIterator[Database]:
    """A database of each engine."""
    async for database in _single_connection(settings_factory(**ONE_CONNECTION)):
        yield database


@pytest.fixture
async def sqlite(tmp_path: Path) -> AsyncIterator[Database]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'quick.db'}"
    async for database in _single_connection(Settings(database_url=url, **ONE_CONNECTION)):
        yield database


async def _thread_of(connection: AsyncConnection) -> int:
    """The thread SQLite runs this connection's statements on."""
    raw = await connection.get_raw_connection()
    sqlite_connection = raw.driver_connection._connection  # type: ignore[union-attr]
    sqlite_connection.create_function("pp_thread", 0, threading.get_ident)
    return int((await connection.execute(text("SELECT pp_thread()"))).scalar_one())


async def test_quick_reads_run_on_the_event_loop_thread_and_others_do_not(sqlite: Database) -> None:
    database = sqlite
    loop_thread = threading.get_ident()

    async with database.read() as connection:
        assert await _thread_of(connection) != loop_thread
    async with database.read(quick=True) as connection:
        assert await _thread_of(connection) == loop_thread
    # The same pooled connection, taken again: back on its own thread.
    async with database.read() as connection:
        assert await _thread_of(connection) != loop_thread
    async with database.read(quick=True) as connection:
        assert await _thread_of(connection) == loop_thread
    async with database.write() as connection:
        assert await _thread_of(connection) != loop_thread
    async with database.read(consistent=True) as connection:
        assert await _thread_of(connection) != loop_thread


async def test_a_consistent_read_moved_in_place_keeps_its_snapshot(tmp_path: Path) -> None:
    """Database.in_place: the statements after it run on the event loop's thread, in the
    read transaction already begun (a write committed meanwhile is not seen until the next
    read). That connection going back to its own thread is tested above."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'snapshot.db'}"
    async for database in _single_connection(Settings(database_url=url, db_pool_size=2)):
        async with database.write() as connection:
            await connection.execute(text("CREATE TABLE numbers (n INTEGER)"))
            await connection.execute(text("INSERT INTO numbers VALUES (1)"))
        loop_thread = threading.get_ident()
        count = text("SELECT count(*) FROM numbers")
        async with database.read(consistent=True) as connection:
            await connection.exec_driver_sql("BEGIN")
            assert (await connection.execute(count)).scalar_one() == 1
            assert await _thread_of(connection) != loop_thread
            async with database.write() as writer:  # committed after the snapshot began
                await writer.execute(text("INSERT INTO numbers VALUES (2)"))
            await database.in_place(connection)
            assert await _thread_of(connection) == loop_thread
            assert (await connection.execute(count)).scalar_one() == 1
        async with database.read() as connection:
            assert await _thread_of(connection) != loop_thread
            assert (await connection.execute(count)).scalar_one() == 2


async def test_a_failed_quick_read_leaves_the_connection_usable(sqlite: Database) -> None:
    database = sqlite
    async with database.write() as connection:
        await connection.execute(text("CREATE TABLE numbers (n INTEGER)"))
        await connection.execute(text("INSERT INTO numbers VALUES (1), (2), (3)"))

    with pytest.raises(OperationalError, match="no such table"):
        async with database.read(quick=True) as connection:
            await connection.execute(text("SELECT * FROM no_such_table"))

    async with database.read(quick=True) as connection:
        assert (await connection.execute(text("SELECT sum(n) FROM numbers"))).scalar_one() == 6
    async with database.write() as connection:
        await connection.execute(text("INSERT INTO numbers VALUES (4)"))
    async with database.read() as connection:
        assert (await connection.execute(text("SELECT sum(n) FROM numbers"))).scalar_one() == 10


async def test_quick_reads_see_committed_writes_on_both_engines(database: Database) -> None:
    async with database.write() as connection:
        await connection.execute(text("CREATE TABLE numbers (n INTEGER)"))
    for n in range(1, 4):
        async with database.write() as connection:
            await connection.execute(text("INSERT INTO numbers VALUES (:n)"), {"n": n})
        async with database.read(quick=True) as connection:
            found = (await connection.execute(text("SELECT count(*) FROM numbers"))).scalar_one()
        assert found == n


async def test_a_quick_read_cannot_write(sqlite: Database) -> None:
    """Nothing a read does is committed, in place or not."""
    database = sqlite
    async with database.write() as connection:
        await connection.execute(text("CREATE TABLE numbers (n INTEGER)"))
    async with database.read(quick=True) as connection:
        await connection.execute(text("INSERT INTO numbers VALUES (1)"))
    async with database.read() as connection:
        assert (await connection.execute(text("SELECT count(*) FROM numbers"))).scalar_one() == 0


def test_only_unfiltered_pages_in_an_indexed_order_read_in_place() -> None:
    """A page is a quick read only when an index gives its rows in order, unfiltered."""
    unfiltered = ConversationCriteria()
    quick = {
        order for order in ConversationOrder if ConversationRepository.reads_few(unfiltered, order)
    }
    assert quick == {
        ConversationOrder.LAST_MESSAGE_DESC,
        ConversationOrder.LAST_MESSAGE_ASC,
        ConversationOrder.FIRST_MESSAGE_DESC,
        ConversationOrder.FIRST_MESSAGE_ASC,
    }
    for criteria in (
        ConversationCriteria(search="refund"),
        ConversationCriteria(agents=("ana",)),
        ConversationCriteria(min_csi=50.0),
        ConversationCriteria(chat_ids=("a", "b")),
    ):
        assert not ConversationRepository.reads_few(criteria, ConversationOrder.LAST_MESSAGE_DESC)


@pytest.mark.parametrize("allowed", [False, True])
async def test_postgresql_connections_compile_no_plans_unless_allowed(
    postgres_url: str, allowed: bool
) -> None:
    """JIT compilation costs 100 ms on reads of a few ms whose estimates are high (tables
    without statistics after a big upload): PowerPulse's connections turn it off, unless
    the operator lets the server's own setting stand."""
    database = Database(create_engine(Settings(database_url=postgres_url)))
    try:
        async with database.write() as connection:
            name = (await connection.execute(text("SELECT current_database()"))).scalar_one()
            # The server's own setting, explicitly on for this database.
            await connection.execute(text(f'ALTER DATABASE "{name}" SET jit = on'))
    finally:
        await database.dispose()

    database = Database(create_engine(Settings(database_url=postgres_url, postgres_jit=allowed)))
    try:
        async with database.read() as connection:
            jit = (await connection.execute(text("SHOW jit"))).scalar_one()
        assert jit == ("on" if allowed else "off")
    finally:
        await database.dispose()

"""Database engine and sessions: one place that knows how to connect to SQLite or PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import sqlite3
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any

import aiosqlite
from sqlalchemy import event, text
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    create_async_engine,
)

from . import models  # noqa: F401  (registers the tables on SQLModel.metadata)
from .errors import ServiceBusy
from .settings import Settings

logger = logging.getLogger("powerpulse.db")


# Page cache per SQLite connection, and for the connection storing an upload, in KiB.
SQLITE_CACHE_KIB = 16 * 1024
SQLITE_INGEST_CACHE_KIB = 64 * 1024


class _SQLiteConnection(aiosqlite.Connection):
    """An aiosqlite connection whose calls can also run on the event loop's own thread.

    aiosqlite hands every call (open a cursor, execute, fetch, close it, roll back) to the
    connection's thread and wakes the event loop when it is done. For a read of a few
    indexed rows those hand-offs cost far more than SQLite itself: 0.67 ms of CPU for a
    pooled `SELECT 1` through SQLAlchemy, 0.13 ms when run in place (docs/operations.md). While
    `inline` is set (Database.read(quick=True)), calls run directly; otherwise, as usual, on
    the connection's thread. Calls on one connection are awaited one after another, so
    the SQLite connection is never used by two threads at once.
    """

    inline = False

    async def _execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self.inline and self._running and self._connection is not None:
            return fn(*args, **kwargs)
        return await super()._execute(fn, *args, **kwargs)


def _connect_sqlite(database: str, **kwargs: Any) -> _SQLiteConnection:
    """What aiosqlite.connect does, with a connection that can run calls in place.

    Called by SQLAlchemy's aiosqlite dialect with the arguments of the URL; it awaits
    the connection, which starts its thread and opens the database there.
    """
    # Used by the event loop's thread as well as its own (never both at once).
    kwargs["check_same_thread"] = False
    connection = _SQLiteConnection(partial(sqlite3.connect, database, **kwargs), iter_chunk_size=64)
    # A connection the pool never closed must not keep the interpreter from exiting.
    connection._thread.daemon = True
    return connection


def create_engine(settings: Settings) -> AsyncEngine:
    url = settings.database_url
    kwargs: dict[str, Any] = {
        "pool_pre_ping": not settings.is_sqlite,
        "pool_size": settings.db_pool_size,
        "max_overflow": settings.db_max_overflow,
        "pool_timeout": settings.db_pool_timeout,
    }
    if settings.is_sqlite:
        kwargs["connect_args"] = {
            "timeout": settings.sqlite_busy_timeout_ms / 1000,
            "async_creator_fn": _connect_sqlite,
        }
    elif not settings.postgres_jit:
        # PostgreSQL compiles a plan whose estimated cost passes jit_above_cost, which pays
        # off only for queries of seconds. Ours take milliseconds, and right after a big
        # upload, before the tables have statistics, estimates run far above the truth:
        # reading a batch's stored messages (6 ms) spent 100 ms compiling, 20 s of a
        # re-upload of 1M messages.
        kwargs["connect_args"] = {"server_settings": {"jit": "off"}}
    engine = create_async_engine(url, **kwargs)
    if settings.is_sqlite:
        busy_timeout = settings.sqlite_busy_timeout_ms

        @event.listens_for(engine.sync_engine, "checkout")
        def _threaded_by_default(_dbapi: Any, record: Any, _proxy: Any) -> None:
            # Whoever held the connection before may have run it in place.
            driver = record.driver_connection
            if isinstance(driver, _SQLiteConnection):
                driver.inline = False

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            # WAL lets dashboards read while an upload is being written.
            if ":memory:" not in url:
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            # Each pooled connection has its own page cache: kept modest, since a busy
            # server holds many. An upload raises its own (SQLITE_INGEST_CACHE_KIB).
            cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
            # Sorts and temporary tables spill to disk past the page cache (the default):
            # in memory, a full messages export sorted 750k rows in RAM (+260 MiB).
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout)}")
            cursor.close()
            _ensure_math_functions(dbapi_connection)

    return engine


async def create_schema(engine: AsyncEngine) -> None:
    """Bring an empty (or older) database to the current schema through the migrations."""
    from .migrate import upgrade

    await upgrade(engine)


def _ensure_math_functions(dbapi_connection: Any) -> None:
    """The CSI needs ln(); SQLite builds without math functions get Python's."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("SELECT ln(1.0)")
    except sqlite3.OperationalError:  # no such function: ln
        dbapi_connection.create_function("ln", 1, _ln, deterministic=True)
    finally:
        cursor.close()


def _ln(value: float | None) -> float | None:
    if value is None or value <= 0:
        return None
    return math.log(value)


async def _checked_out(stack: contextlib.AsyncExitStack, opening: Any) -> AsyncConnection:
    """A pooled connection, or ServiceBusy when every one stayed taken for the pool timeout."""
    try:
        connection: AsyncConnection = await stack.enter_async_context(opening)
    except PoolTimeout as exc:
        raise ServiceBusy(
            "the server is busy: every database connection stayed in use; try again shortly"
        ) from exc
    return connection


async def _set_sqlite_cache(connection: AsyncConnection, kib: int) -> None:
    try:
        await connection.exec_driver_sql(f"PRAGMA cache_size=-{int(kib)}")
    except Exception:  # a failed transaction keeps its cache; the pool recycles it later
        logger.debug("could not set the SQLite page cache", exc_info=True)


class Database:
    """The engine and the two ways to use it: a read connection or a write transaction."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        # SQLite has one writer at a time; queueing writers here means a long upload makes
        # the others wait instead of failing on SQLite's lock timeout.
        self._write_lock = asyncio.Lock() if engine.dialect.name == "sqlite" else None

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextlib.asynccontextmanager
    async def read(
        self, *, consistent: bool = False, quick: bool = False
    ) -> AsyncIterator[AsyncConnection]:
        """A connection for queries; nothing it does is committed.

        On PostgreSQL each statement runs on its own (autocommit): a BEGIN and a ROLLBACK
        around every read would triple its round trips. `consistent` reads run in one
        transaction instead: several statements that must see the same state, or a
        server-side cursor streaming rows (which PostgreSQL keeps only in a transaction).

        `quick` promises reads of a few rows found by an index (a version, a key, a page
        without filters). On SQLite they then run on the event loop's thread, saving the
        hand-offs to the connection's thread that cost more than such a read
        (_SQLiteConnection). Anything that may scan (a search, a filter, an export,
        analytics) must not be quick: it would hold up every other request of the process.
        """
        async with contextlib.AsyncExitStack() as stack:
            connection = await _checked_out(stack, self.engine.connect())
            if self.is_sqlite:
                if quick:
                    await self.in_place(connection)
            elif not consistent:
                await connection.execution_options(isolation_level="AUTOCOMMIT")
            yield connection

    async def in_place(self, connection: AsyncConnection) -> None:
        """From now on, run a read connection's calls as `quick` reads do (SQLite only).

        For a read that learns only after its first statement that the rest are quick:
        the same promise as `quick`, for the statements that follow.
        """
        if not self.is_sqlite:
            return
        raw = await connection.get_raw_connection()
        driver = raw.driver_connection
        if isinstance(driver, _SQLiteConnection):
            driver.inline = True

    @contextlib.asynccontextmanager
    async def write(self, *, bulk: bool = False) -> AsyncIterator[AsyncConnection]:
        """A transaction committed when the block ends, rolled back if it raises.

        `bulk` (an upload) gives a SQLite connection a larger page cache for the block.
        """
        async with contextlib.AsyncExitStack() as stack:
            if self._write_lock is not None:
                await stack.enter_async_context(self._write_lock)
            connection = await _checked_out(stack, self.engine.begin())
            if bulk and self.is_sqlite:
                await _set_sqlite_cache(connection, SQLITE_INGEST_CACHE_KIB)
                stack.push_async_callback(_set_sqlite_cache, connection, SQLITE_CACHE_KIB)
            yield connection

    async def ping(self) -> None:
        async with self.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()

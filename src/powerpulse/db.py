"""Database engine and sessions: one place that knows how to connect to SQLite or PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import sqlite3
from collections.abc import AsyncIterator
from typing import Any

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


def create_engine(settings: Settings) -> AsyncEngine:
    url = settings.database_url
    kwargs: dict[str, Any] = {
        "pool_pre_ping": not settings.is_sqlite,
        "pool_size": settings.db_pool_size,
        "max_overflow": settings.db_max_overflow,
        "pool_timeout": settings.db_pool_timeout,
    }
    if settings.is_sqlite:
        kwargs["connect_args"] = {"timeout": settings.sqlite_busy_timeout_ms / 1000}
    engine = create_async_engine(url, **kwargs)
    if settings.is_sqlite:
        busy_timeout = settings.sqlite_busy_timeout_ms

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
    async def read(self, *, consistent: bool = False) -> AsyncIterator[AsyncConnection]:
        """A connection for queries; nothing it does is committed.

        On PostgreSQL each statement runs on its own (autocommit): a BEGIN and a ROLLBACK
        around every read would triple its round trips. `consistent` reads run in one
        transaction instead: several statements that must see the same state, or a
        server-side cursor streaming rows (which PostgreSQL keeps only in a transaction).
        """
        async with contextlib.AsyncExitStack() as stack:
            connection = await _checked_out(stack, self.engine.connect())
            if not consistent and not self.is_sqlite:
                await connection.execution_options(isolation_level="AUTOCOMMIT")
            yield connection

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

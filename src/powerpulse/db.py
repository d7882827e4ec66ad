"""Database engine and sessions: one place that knows how to connect to SQLite or PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import math
import sqlite3
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    create_async_engine,
)

from . import models  # noqa: F401  (registers the tables on SQLModel.metadata)
from .settings import Settings


def create_engine(settings: Settings) -> AsyncEngine:
    url = settings.database_url
    kwargs: dict[str, Any] = {"pool_pre_ping": not settings.is_sqlite}
    if settings.is_sqlite:
        kwargs["connect_args"] = {"timeout": settings.sqlite_busy_timeout_ms / 1000}
    else:
        kwargs.update(
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            pool_timeout=settings.db_pool_timeout,
        )
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
            # Index pages of large uploads stay in memory instead of going back to disk.
            cursor.execute("PRAGMA cache_size=-65536")
            cursor.execute("PRAGMA temp_store=MEMORY")
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

    def read(self) -> Any:
        """A connection for queries; nothing it does is committed."""
        return self.engine.connect()

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A transaction committed when the block ends, rolled back if it raises."""
        if self._write_lock is None:
            async with self.engine.begin() as connection:
                yield connection
            return
        async with self._write_lock, self.engine.begin() as connection:
            yield connection

    async def ping(self) -> None:
        async with self.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()

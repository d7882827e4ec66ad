"""Plain values shared by every layer, importable without the database layer.

The upload's parsing process imports only these, the reader and the standard library, so
that it starts in a fraction of the time the whole application takes to import.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any


class SenderKind(enum.StrEnum):
    CUSTOMER = "CUSTOMER"
    AGENT = "AGENT"
    BOT = "BOT"


def sqlite_timestamp(value: datetime | None) -> str | None:
    """A timestamp as SQLAlchemy itself stores it in SQLite: naive UTC text."""
    if value is None:
        return None
    if value.tzinfo is UTC:  # how every parsed time arrives: drop the "+00:00"
        return value.isoformat(" ", "microseconds")[:-6]
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(" ", "microseconds")


def storage_timestamps(dialect_name: str) -> Any:
    """How rows prepared for a bulk insert hold UTC timestamps on an engine: SQLite's naive
    UTC text (a function to apply), or, on PostgreSQL, the datetimes themselves (None)."""
    return sqlite_timestamp if dialect_name == "sqlite" else None


def from_storage_timestamp(value: Any) -> datetime:
    """A timestamp in storage form (storage_timestamps) as an aware UTC datetime again."""
    if isinstance(value, str):
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    return value  # type: ignore[no-any-return]

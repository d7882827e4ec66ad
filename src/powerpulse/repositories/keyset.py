"""Keyset pagination: opaque cursors that hold the last row's sort key, never an offset."""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Float,
    Integer,
    Numeric,
    String,
    and_,
    case,
    false,
    or_,
    tuple_,
)

from ..errors import BadUserInput


@dataclass(frozen=True, slots=True)
class SortKey:
    """One column of an ordering. Nullable columns sort their nulls last."""

    column: Any
    descending: bool = False
    nullable: bool = False
    is_datetime: bool = False
    # The key the value has in a result row; the column's own key when not given.
    name: str | None = None

    @property
    def row_key(self) -> str:
        return self.name or str(self.column.key)


@dataclass(frozen=True, slots=True)
class Ordering:
    name: str
    keys: tuple[SortKey, ...]

    def order_by(self) -> list[Any]:
        clauses: list[Any] = []
        for key in self.keys:
            if key.nullable:
                clauses.append(case((key.column.is_(None), 1), else_=0))
            clauses.append(key.column.desc() if key.descending else key.column.asc())
        return clauses

    def cursor_for(self, row: Any) -> str:
        values: list[Any] = []
        for key in self.keys:
            value = row[key.row_key] if isinstance(row, Mapping) else getattr(row, key.row_key)
            values.append(value.isoformat() if isinstance(value, datetime) else value)
        payload = json.dumps([self.name, values], separators=(",", ":"))
        return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")

    def decode(self, cursor: str) -> list[Any]:
        try:
            padded = cursor + "=" * (-len(cursor) % 4)
            name, values = json.loads(base64.urlsafe_b64decode(padded.encode()).decode())
        except (ValueError, binascii.Error, UnicodeError, TypeError) as exc:
            raise BadUserInput("the cursor `after` is not valid") from exc
        if name != self.name or not isinstance(values, list) or len(values) != len(self.keys):
            raise BadUserInput(
                "the cursor `after` belongs to another ordering; start again without `after`"
            )
        decoded: list[Any] = []
        for key, value in zip(self.keys, values, strict=True):
            if value is None and not key.nullable:
                raise BadUserInput("the cursor `after` is not valid")
            if key.is_datetime and value is not None:
                try:
                    value = datetime.fromisoformat(value)
                    value = value.astimezone(UTC) if value.tzinfo else value
                except (TypeError, ValueError, OverflowError) as exc:
                    raise BadUserInput("the cursor `after` is not valid") from exc
            elif value is not None:
                value = _checked_value(key, value)
            decoded.append(value)
        return decoded

    def after(self, cursor: str) -> ColumnElement[bool]:
        """Rows strictly after the cursor's row in this ordering."""
        values = self.decode(cursor)
        if (
            not any(key.nullable for key in self.keys)
            and len({key.descending for key in self.keys}) == 1
        ):
            columns = tuple_(*(key.column for key in self.keys))
            bound = tuple_(*values)
            return columns < bound if self.keys[0].descending else columns > bound
        return _lexicographic_after(self.keys, values)


# Cursors come from clients: a value the column cannot hold must be refused here, not
# reach the database as a bind error (a 500 on PostgreSQL, an OverflowError on SQLite).
_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)


def _checked_value(key: SortKey, value: Any) -> Any:
    column_type = key.column.type
    invalid = BadUserInput("the cursor `after` is not valid")
    if isinstance(column_type, Integer):
        low, high = _INT64 if isinstance(column_type, BigInteger) else _INT32
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise invalid
        return value
    if isinstance(column_type, (Float, Numeric)):  # Double is a Float
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise invalid
        if not math.isfinite(value):
            raise invalid
        return float(value)
    if isinstance(column_type, String):
        if not isinstance(value, str):
            raise invalid
        return value
    # An expression of unknown type: any JSON scalar, as the cursor stored it.
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise invalid
    return value


def _lexicographic_after(keys: Sequence[SortKey], values: Sequence[Any]) -> ColumnElement[bool]:
    if not keys:
        return false()
    key, value, rest = keys[0], values[0], _lexicographic_after(keys[1:], values[1:])
    column = key.column
    if key.nullable and value is None:
        # Nulls sort last: only later nulls (decided by the remaining keys) follow.
        return and_(column.is_(None), rest)
    beyond = column < value if key.descending else column > value
    if key.nullable:
        beyond = or_(beyond, column.is_(None))
    return or_(beyond, and_(column == value, rest))

"""What every repository shares: a connection, the dialect, and percentile helpers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Select,
    any_,
    bindparam,
    case,
    func,
    literal_column,
    select,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection

from ..models import UTCDateTime


@dataclass(frozen=True, slots=True)
class Fraction:
    """A percentile rank as an exact fraction, so rank arithmetic in SQL stays integral."""

    numerator: int
    denominator: int

    @property
    def value(self) -> float:
        return self.numerator / self.denominator


MEDIAN = Fraction(1, 2)
P90 = Fraction(9, 10)


def _sqlite_timestamp(value: datetime | None) -> str | None:
    """A timestamp as SQLAlchemy itself stores it in SQLite: naive UTC text."""
    if value is None:
        return None
    if value.tzinfo is UTC:  # how every parsed time arrives: drop the "+00:00"
        return value.isoformat(" ", "microseconds")[:-6]
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(" ", "microseconds")


def _sqlite_converters(table: Any, columns: Sequence[str]) -> list[tuple[int, Any]]:
    converters: list[tuple[int, Any]] = []
    for index, name in enumerate(columns):
        column_type = table.c[name].type
        if isinstance(column_type, UTCDateTime):
            converters.append((index, _sqlite_timestamp))
        elif isinstance(column_type, Boolean):
            converters.append((index, lambda value: None if value is None else int(value)))
    return converters


class Repository:
    def __init__(self, connection: AsyncConnection) -> None:
        self.connection = connection

    async def bulk_insert(
        self, table: Any, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        """Insert many rows through the driver's own fast path, inside this transaction.

        PostgreSQL: COPY (asyncpg copy_records_to_table). SQLite: one executemany. Rows are
        plain tuples in `columns` order, so no per-row statement building happens here.
        """
        if not rows:
            return
        raw = await self.connection.get_raw_connection()
        driver: Any = raw.driver_connection
        if self.is_postgres:
            await driver.copy_records_to_table(table.name, records=rows, columns=list(columns))
            return
        placeholders = ", ".join("?" for _ in columns)
        statement = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({placeholders})"
        converters = _sqlite_converters(table, columns)
        if len(converters) == 1:
            index, convert = converters[0]
            rows = [(*row[:index], convert(row[index]), *row[index + 1 :]) for row in rows]
        elif converters:
            converted = []
            for row in rows:
                values = list(row)
                for index, convert in converters:
                    values[index] = convert(values[index])
                converted.append(values)
            rows = converted
        await driver.executemany(statement, rows)

    @staticmethod
    def owned_by(column: Any, tenant_id: int) -> ColumnElement[bool]:
        """The tenant condition of a lookup by ids, kept out of the planner's index choice.

        Given `tenant_id = ? AND conversation_id IN (...)`, SQLite (which keeps no
        statistics) takes an index that starts with tenant_id for the better one and reads
        every row of the tenant to find a few: 50 ms per lookup at 100k conversations,
        growing with the data. `tenant_id + 0` is the same condition, but no index can
        serve it, so both engines find the rows by their ids and then check the tenant.
        """
        return (column + 0) == tenant_id

    def among(self, column: Any, values: Sequence[Any]) -> ColumnElement[bool]:
        """`column IN values`; on PostgreSQL one array parameter, whatever the length."""
        if self.is_postgres:
            return column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))
        return column.in_(list(values))

    async def lookup(self, statement: Any) -> Any:
        """Run a read that an upload repeats while its own transaction fills the tables.

        PostgreSQL caches a generic plan for a prepared statement after a few runs, costed
        with the table sizes of that moment. In a first upload those tables were nearly
        empty, the cached plan scans an index on tenant only, and every later lookup reads
        every row stored so far: ingest grows with the square of the file. Planning such
        lookups on every run keeps them key lookups. The setting is restored right after,
        so foreign-key checks during COPY keep their cached plans.
        """
        if not self.is_postgres:
            return await self.connection.execute(statement)
        await self.connection.exec_driver_sql("SET LOCAL plan_cache_mode = force_custom_plan")
        try:
            return await self.connection.execute(statement)
        finally:
            await self.connection.exec_driver_sql("SET LOCAL plan_cache_mode = DEFAULT")

    @property
    def is_postgres(self) -> bool:
        return self.connection.dialect.name == "postgresql"

    async def upsert(
        self,
        table: Any,
        rows: Sequence[dict[str, Any]],
        *,
        key: Sequence[str],
        update: Sequence[str],
    ) -> None:
        """Insert rows, or overwrite `update` columns where `key` already exists."""
        if not rows:
            return
        if self.is_postgres:
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        statement = insert(table)
        if update:
            statement = statement.on_conflict_do_update(
                index_elements=list(key),
                set_={column: statement.excluded[column] for column in update},
            )
        else:
            statement = statement.on_conflict_do_nothing(index_elements=list(key))
        await self.connection.execute(statement, list(rows))

    async def percentiles(
        self, values: Select[Any], ranks: Sequence[Fraction], *, grouped: bool = False
    ) -> dict[Any, list[float | None]]:
        """Continuous percentiles (linear between closest ranks, as percentile_cont) in SQL.

        `values` selects one numeric column, or (group key, number) when `grouped`; nulls
        are ignored. Returns the percentiles per group key (the key None when not grouped).
        """
        source = values.subquery("percentile_source")
        group = source.c[0] if grouped else None
        column = source.c[1] if grouped else source.c[0]
        keys = [group] if group is not None else []
        if self.is_postgres:
            statement = (
                select(
                    *keys,
                    *(func.percentile_cont(rank.value).within_group(column) for rank in ranks),
                )
                .where(column.is_not(None))
                .group_by(*keys)
            )
            found: dict[Any, list[float | None]] = {}
            for row in await self.connection.execute(statement):
                key = row[0] if grouped else None
                values_found = row[1:] if grouped else row
                found[key] = [None if value is None else float(value) for value in values_found]
            return found
        partition = {"partition_by": group} if group is not None else {}
        ranked = (
            select(
                *([group.label("g")] if group is not None else []),
                column.label("v"),
                (func.row_number().over(order_by=column, **partition) - 1).label("i"),
                func.count().over(**partition).label("n"),
            )
            .where(column.is_not(None))
            .subquery("ranked")
        )
        picks: list[Any] = []
        for rank in ranks:
            low_index = (ranked.c.n - 1) * rank.numerator // rank.denominator
            picks.append(func.max(_value_at(ranked, low_index)))
            picks.append(func.max(_value_at(ranked, low_index + 1)))
        group_keys = [ranked.c.g] if group is not None else []
        statement = select(*group_keys, func.max(ranked.c.n), *picks).group_by(*group_keys)
        found = {}
        for row in await self.connection.execute(statement):
            key = row[0] if grouped else None
            rest = row[1:] if grouped else row
            count = rest[0]
            if not count:
                continue
            results: list[float | None] = []
            for position, rank in enumerate(ranks):
                low, high = rest[1 + 2 * position], rest[2 + 2 * position]
                exact = (count - 1) * rank.numerator / rank.denominator
                fraction = exact - int(exact)
                if high is None or fraction == 0:
                    results.append(float(low))
                else:
                    results.append(float(low) + fraction * (float(high) - float(low)))
            found[key] = results
        return found


def _value_at(ranked: Any, index: Any) -> Any:
    return case((ranked.c.i == index, ranked.c.v), else_=literal_column("NULL"))

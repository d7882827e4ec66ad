"""What every repository shares: a connection, the dialect, bulk inserts, export columns."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    ColumnElement,
    Float,
    Integer,
    String,
    any_,
    bindparam,
    func,
    select,
    true,
    type_coerce,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection

from ..ingest.pgcopy import FIELD_ENCODERS, copy_data
from ..kinds import sqlite_timestamp
from ..models import UTCDateTime


def _sqlite_converters(table: Any, columns: Sequence[str]) -> list[tuple[int, Any]]:
    converters: list[tuple[int, Any]] = []
    for index, name in enumerate(columns):
        column_type = table.c[name].type
        if isinstance(column_type, UTCDateTime):
            converters.append((index, sqlite_timestamp))
        elif isinstance(column_type, Boolean):
            converters.append((index, lambda value: None if value is None else int(value)))
    return converters


# Column types and how binary COPY encodes their values (pgcopy.FIELD_ENCODERS), the first
# that matches: a BigInteger is an Integer too, and a UTCDateTime wraps a DateTime.
_COPY_KINDS = (
    (UTCDateTime, "timestamptz"),
    (Boolean, "bool"),
    (BigInteger, "int8"),
    (Integer, "int4"),
    (Float, "float8"),
    (String, "text"),
)


def _copy_encoder(column: Any) -> Callable[[Any], bytes]:
    """How PostgreSQL's binary COPY takes a value of this column."""
    for column_type, kind in _COPY_KINDS:
        if isinstance(column.type, column_type):
            return FIELD_ENCODERS[kind]
    raise TypeError(f"no COPY encoding for {column} ({column.type})")


def cell_kind(column: Any) -> str:
    """How an export renders a column's values: "time", "flag", "text" or "value"."""
    if isinstance(column.type, UTCDateTime):
        return "time"
    if isinstance(column.type, Boolean):
        return "flag"
    if isinstance(column.type, String):
        return "text"
    return "value"


def export_select(columns: Sequence[Any]) -> Any:
    """A select of export columns whose values reach the export as the driver reads them:
    timestamps unparsed, flags as numbers (the export renders them, faster, in bulk)."""
    return select(
        *(
            type_coerce(column, String) if cell_kind(column) != "value" else column
            for column in columns
        )
    )


def _on_conflict(statement: Any, key: Sequence[str], update: Sequence[str]) -> Any:
    if update:
        return statement.on_conflict_do_update(
            index_elements=list(key),
            set_={column: statement.excluded[column] for column in update},
        )
    return statement.on_conflict_do_nothing(index_elements=list(key))


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


class Repository:
    def __init__(self, connection: AsyncConnection) -> None:
        self.connection = connection

    async def _driver(self) -> Any:
        """The driver's own connection under this one (asyncpg or sqlite3), for its bulk paths."""
        raw = await self.connection.get_raw_connection()
        return raw.driver_connection

    async def bulk_insert(
        self,
        table: Any,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        *,
        prepared: bool = False,
    ) -> None:
        """Insert many rows through the driver's own fast path, inside this transaction.

        PostgreSQL: COPY (asyncpg copy_records_to_table). SQLite: one executemany. Rows are
        plain tuples in `columns` order, so no per-row statement building happens here.
        `prepared` rows hold their timestamps in storage form already (kinds.storage_timestamps)
        and are passed to the driver untouched.
        """
        if not rows:
            return
        driver = await self._driver()
        if self.is_postgres:
            await driver.copy_records_to_table(table.name, records=rows, columns=list(columns))
            return
        placeholders = ", ".join("?" for _ in columns)
        statement = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({placeholders})"
        converters = [] if prepared else _sqlite_converters(table, columns)
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

    async def insert_by_chat(
        self,
        table: Any,
        columns: Sequence[str],
        tenant_id: int,
        chats: Sequence[tuple[int, Sequence[Any]]],
        encode: Callable[[Any], bytes],
    ) -> None:
        """Insert rows that belong to conversations, chat by chat, in the given order.

        Each chat is (conversation_id, rows); a row holds `columns`, the table's columns
        after tenant_id and conversation_id, timestamps in storage form
        (kinds.storage_timestamps). On PostgreSQL a row may be packed for COPY already
        (ingest.pgcopy), as an upload packs them; a tuple is packed by `encode`, and all go
        to the server in one binary COPY.
        """
        if not any(rows for _, rows in chats):
            return
        names = ("tenant_id", "conversation_id", *columns)
        if self.is_postgres:
            packed = (
                (conversation_id, [row if isinstance(row, bytes) else encode(row) for row in rows])
                for conversation_id, rows in chats
            )
            await self.copy_binary(table, names, copy_data(tenant_id, packed, len(columns)))
            return
        await self.bulk_insert(
            table,
            names,
            [(tenant_id, conversation_id, *row) for conversation_id, rows in chats for row in rows],
            prepared=True,
        )

    async def insert_for_conversations(
        self,
        table: Any,
        tenant_id: int,
        columns: Sequence[str],
        rows: Sequence[tuple[int, tuple[Any, ...]]],
        constants: Mapping[str, Any],
    ) -> None:
        """Insert one row per (conversation_id, values of `columns`), in the given order,
        each with the tenant and the `constants` (column -> the value of every row).

        On PostgreSQL all go in one binary COPY, each distinct tuple of values encoded
        once by its columns' types, and the constants once for all: an upload's analysis
        rows and tasks differ by their conversation alone. Times are datetimes.
        """
        if not rows:
            return
        names = ("tenant_id", "conversation_id", *columns, *constants)
        if not self.is_postgres:
            fixed = tuple(constants.values())
            await self.bulk_insert(
                table,
                names,
                [(tenant_id, conversation_id, *values, *fixed) for conversation_id, values in rows],
            )
            return
        encoders = [_copy_encoder(table.c[name]) for name in columns]
        suffix = self.copy_fields(table, constants)
        encoded: dict[tuple[Any, ...], bytes] = {}
        chats = []
        for conversation_id, values in rows:
            packed = encoded.get(values)
            if packed is None:
                packed = encoded[values] = b"".join(
                    encode(value) for encode, value in zip(encoders, values, strict=True)
                )
            chats.append((conversation_id, [packed]))
        fields = len(columns) + len(constants)
        await self.copy_binary(table, names, copy_data(tenant_id, chats, fields, suffix))

    @staticmethod
    def copy_fields(table: Any, values: Mapping[str, Any]) -> bytes:
        """PostgreSQL: values of these columns of `table`, in order, as binary COPY writes
        fields (each encoded by its column's type): the end every row of a COPY shares."""
        return b"".join(_copy_encoder(table.c[name])(value) for name, value in values.items())

    async def copy_binary(self, table: Any, columns: Sequence[str], data: bytes) -> None:
        """PostgreSQL only: COPY rows already in binary COPY form (header to trailer) into
        `columns` of `table`, inside this transaction."""
        driver = await self._driver()
        await driver.copy_to_table(
            table.name, source=_once(data), columns=list(columns), format="binary"
        )

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

    @staticmethod
    def each_of(values: Sequence[Any], value_type: Any, name: str) -> Any:
        """PostgreSQL: the values as a table of one column `name` (unnest of one array
        parameter), for a lookup that probes an index once per value."""
        return (
            func.unnest(bindparam(None, list(values), type_=ARRAY(value_type)))
            .table_valued(name)
            .render_derived()
        )

    def each_by_key(
        self, table: Any, key: Any, tenant_id: int, ids: Sequence[Any], columns: Sequence[Any]
    ) -> Any:
        """A read of `columns` of the tenant's rows of `table` whose unique `key` is one of
        `ids` (those missing are left out), in no particular order.

        On PostgreSQL each id is its own probe of the key, in a lateral join over the ids.
        Asked as `key = ANY(?)`, the planner chose between the key and a scan of the whole
        table by the table's statistics, and right after a big upload there are none: a
        re-upload of 1M messages scanned all 121,910 analyses for each batch of 500 chats
        (12–15 ms a batch, 3 s in all, by auto_explain). In a lateral join the only other
        choice is a scan per id, which no estimate makes cheaper; its LIMIT (the key is
        unique) keeps the planner from merging it into a join where a scan is a choice
        again. The tenant is checked by `owned_by`.
        """
        if not self.is_postgres:
            return select(*columns).where(
                self.owned_by(table.c.tenant_id, tenant_id), self.among(key, ids)
            )
        asked = self.each_of(sorted(set(ids)), key.type, "id")
        each = (
            select(*columns)
            .where(key == asked.c.id, self.owned_by(table.c.tenant_id, tenant_id))
            .limit(1)
            .lateral()
        )
        return select(*each.c).select_from(asked.join(each, true()))

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
        """Insert rows, or overwrite `update` columns where `key` already exists.

        The result is that of upserting the rows one by one: with `update` the last row of
        a key wins, without it the first. PostgreSQL gets a statement per 1,000 rows
        (executemany would run one per row, and each would fire the statement triggers of
        migration 0005 again); SQLite one executemany.
        """
        if not rows:
            return
        if not self.is_postgres:
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            await self.connection.execute(
                _on_conflict(sqlite_insert(table), key, update), list(rows)
            )
            return
        from sqlalchemy.dialects.postgresql import insert

        # One statement may not touch a row twice: keep one row per key.
        by_key: dict[tuple[Any, ...], Mapping[str, Any]] = {}
        for row in rows:
            row_key = tuple(row[column] for column in key)
            if update or row_key not in by_key:
                by_key[row_key] = row
        # RETURNING makes SQLAlchemy send the rows as multi-row statements ("insertmanyvalues",
        # pages of 1,000) from one cached statement.
        statement = _on_conflict(insert(table), key, update).returning(
            *(table.c[column] for column in key)
        )
        await self.connection.execute(statement, list(by_key.values()))

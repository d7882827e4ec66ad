"""SQL for stored messages."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from sqlalchemy import DateTime, String, literal, select, true, type_coerce, union_all

from ..errors import BadUserInput
from ..ingest.pgcopy import encode_message
from ..models import Message
from .base import Repository, cell_kind, export_select
from .keyset import Ordering, SortKey
from .selection import SOURCE, conversations

messages = Message.__table__  # type: ignore[attr-defined]
_m = messages.c
_c = conversations.c

INSERT_COLUMNS = (
    "conversation_id",
    "message_key",
    "external_id",
    "sender",
    "content",
    "sent_at",
    "agent_username",
    "agent_email",
    "message_type",
    "via",
)
TIME_ORDER = Ordering("time", (SortKey(_m.sent_at, is_datetime=True), SortKey(_m.id)))
# The column that says which request of MessageRepository.pages a row answers.
_REQUEST = "page_request"

# What metric computation reads of stored messages, by dialect. sent_at comes as the
# driver returns it, without UTCDateTime's conversion of every row: an aware UTC datetime
# from asyncpg, SQLite's naive UTC text (kinds.from_storage_timestamp reads both).
# Parsing that text row by row was half the time of reading facts on SQLite.
FACT_COLUMNS = {
    dialect: (
        _m.id,
        _m.conversation_id,
        _m.sender,
        type_coerce(_m.sent_at, raw_type).label("sent_at"),
        _m.agent_username,
        _m.agent_email,
    )
    for dialect, raw_type in (("postgresql", DateTime(timezone=True)), ("sqlite", String))
}
TRANSCRIPT_COLUMNS = (
    _m.conversation_id,
    _m.sender,
    _m.sent_at,
    _m.content,
    _m.agent_username,
    _m.agent_email,
)


class MessageRepository(Repository):
    async def facts_for(
        self, tenant_id: int, conversation_ids: Sequence[int]
    ) -> Sequence[Sequence[Any]]:
        """What metric computation needs of the stored messages, in time order per chat:
        rows of FACT_COLUMNS (id, conversation_id, sender, sent_at, agent_username,
        agent_email) as plain tuples, sent_at in storage form (kinds.storage_timestamps:
        a datetime on PostgreSQL, text on SQLite).

        A chat that continues in the next export is re-measured from all its messages, so
        an upload of such chats reads every stored message of each: read whole (`all`,
        not row by row), with no per-row conversion of the time.
        """
        if not conversation_ids:
            return []
        columns = FACT_COLUMNS[self.connection.dialect.name]
        rows = await self.lookup(self._in_time_order(columns, tenant_id, conversation_ids))
        return rows.all()

    async def keys_for(
        self, tenant_id: int, conversation_ids: Sequence[int]
    ) -> dict[int, set[str]]:
        """The keys of the stored messages of these conversations (those with none are left
        out)."""
        found: dict[int, set[str]] = {}
        if not conversation_ids:
            return found
        rows = await self.lookup(
            self._in_time_order((_m.conversation_id, _m.message_key), tenant_id, conversation_ids)
        )
        for conversation_id, key in rows.all():
            keys = found.get(conversation_id)
            if keys is None:
                keys = found[conversation_id] = set()
            keys.add(key)
        return found

    async def transcripts_for(
        self, tenant_id: int, conversation_ids: Sequence[int]
    ) -> dict[int, list[Mapping[str, Any]]]:
        """What an analyzer reads of each conversation, in time order."""
        found: dict[int, list[Mapping[str, Any]]] = {cid: [] for cid in conversation_ids}
        if not conversation_ids:
            return found
        rows = await self.connection.execute(
            self._in_time_order(TRANSCRIPT_COLUMNS, tenant_id, conversation_ids)
        )
        for row in rows.mappings():
            found[row["conversation_id"]].append(row)
        return found

    def _in_time_order(
        self, columns: Sequence[Any], tenant_id: int, conversation_ids: Sequence[int]
    ) -> Any:
        """The messages of these conversations, by conversation and then in time order.

        On PostgreSQL each conversation is read by its own equality on
        ix_messages_conversation_time, in a lateral join over the ids. Asked as one
        `conversation_id = ANY(?)`, the planner chose between that index and a scan of
        the whole table by the table's statistics, and right after a big upload (a
        re-upload, or the analysis of the upload, before autovacuum has run) there are
        none: it read all of `messages` for every batch of a re-upload of 1M messages
        (0.26–0.29 s each, by auto_explain). In a lateral join the only other choice is a
        scan of the table per conversation, which no estimate makes cheaper. (The JIT
        compilation such estimates also set off is turned off by db.create_engine.)

        The tenant is checked by `owned_by`, so that no index on tenant_id is taken
        instead (on SQLite too).
        """
        order = (_m.conversation_id, _m.sent_at, _m.id)
        if not self.is_postgres:
            return (
                select(*columns)
                .where(
                    self.owned_by(_m.tenant_id, tenant_id),
                    self.among(_m.conversation_id, conversation_ids),
                )
                .order_by(*order)
            )
        asked = self.each_of(
            sorted(set(conversation_ids)), _m.conversation_id.type, "conversation_id"
        )
        # The order's columns are read too, so that the outer query can sort by them.
        read = {column.key: column for column in (*columns, *order)}
        each = (
            select(*read.values())
            .where(
                _m.conversation_id == asked.c.conversation_id,
                self.owned_by(_m.tenant_id, tenant_id),
            )
            # Its own ORDER BY keeps the planner from merging the subquery into the outer
            # join (where a hash join over a scan of the table is a choice again); the
            # index reads in that order anyway.
            .order_by(_m.sent_at, _m.id)
            .lateral()
        )
        return (
            select(*(each.c[column.key] for column in columns))
            .select_from(asked.join(each, true()))
            .order_by(*(each.c[column.key] for column in order))
        )

    async def insert_chats(
        self, tenant_id: int, chats: Sequence[tuple[int, Sequence[tuple[Any, ...]]]]
    ) -> None:
        """Store new messages, chat by chat, in the given order (ids follow it: ties keep
        file order).

        Each chat is (conversation_id, rows); rows hold the INSERT_COLUMNS after
        conversation_id, timestamps in storage form (kinds.storage_timestamps). On
        PostgreSQL a row may also be packed for COPY already (ingest.pgcopy), as an upload
        packs them: the rows then go to the server as they are.
        """
        await self.insert_by_chat(messages, INSERT_COLUMNS[1:], tenant_id, chats, encode_message)

    async def pages(
        self, tenant_id: int, requests: Sequence[tuple[int, int, str | None]]
    ) -> list[tuple[list[Mapping[str, Any]], bool] | BadUserInput]:
        """Pages of messages of several conversations, in time order, in one statement.

        Each request is (conversation_id, first, after cursor or None) and gets (rows,
        whether more follow), or the BadUserInput its cursor raised; the others are read
        all the same. Each request is its own limited read of the conversation's time
        index, joined by UNION ALL: a page of conversations costs one statement for all
        their messages.
        """
        found: list[tuple[list[Mapping[str, Any]], bool] | BadUserInput] = [
            ([], False) for _ in requests
        ]
        parts = []
        for number, (conversation_id, first, after) in enumerate(requests):
            part = select(messages, literal(number).label(_REQUEST)).where(
                _m.tenant_id == tenant_id, _m.conversation_id == conversation_id
            )
            if after is not None:
                try:
                    part = part.where(TIME_ORDER.after(after))
                except BadUserInput as exc:
                    found[number] = exc
                    continue
            parts.append(part.order_by(*TIME_ORDER.order_by()).limit(first + 1))
        if not parts:
            return found
        statement = (
            parts[0]
            if len(parts) == 1
            # SQLite takes ORDER BY and LIMIT in a compound select only on its subqueries.
            else union_all(*(select(part.subquery()) for part in parts))
        )
        read: dict[int, list[Mapping[str, Any]]] = {}
        for row in (await self.connection.execute(statement)).mappings():
            read.setdefault(row[_REQUEST], []).append(row)
        for number, rows in read.items():
            # Each part is ordered, but a compound select does not promise to keep it.
            rows.sort(key=_time_order)
            first = requests[number][1]
            found[number] = (rows[:first], len(rows) > first)
        return found

    async def export_rows(
        self, selection: Any, keys: Sequence[str], *, batch_size: int = 2000
    ) -> AsyncIterator[list[Sequence[Any]]]:
        """Messages of the selected conversations as rows of the `keys` (export_kinds),
        chat by chat in the order of their first message, each chat in time order.

        A key is a message column, or "chat_id" (its conversation's). The conversations are
        read in the order of their index and each one's messages in theirs, so nothing is
        sorted, and a server-side cursor keeps memory flat however many match.
        """
        statement = (
            export_select([_export_column(key) for key in keys])
            .select_from(SOURCE.join(messages, _m.conversation_id == _c.id))
            # The tenant is checked on each message, not looked up by it: SQLite then reads
            # conversations by their first-message index and each one's messages by theirs,
            # in export order, instead of sorting every message of the tenant.
            .where(*selection.conditions, self.owned_by(_m.tenant_id, selection.tenant_id))
            .order_by(_c.first_message_at, _c.id, _m.sent_at, _m.id)
            .execution_options(yield_per=batch_size)
        )
        result = await self.connection.stream(statement)
        async for partition in result.partitions(batch_size):
            yield partition


def _time_order(row: Mapping[str, Any]) -> tuple[Any, Any]:
    return row["sent_at"], row["id"]


def export_kinds(keys: Sequence[str]) -> tuple[str, ...]:
    """How each key's cells are rendered: "text", "time", "flag" or "value"."""
    return tuple(cell_kind(_export_column(key)) for key in keys)


def _export_column(key: str) -> Any:
    return _c.chat_id if key == "chat_id" else _m[key]

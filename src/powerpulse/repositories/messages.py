"""SQL for stored messages."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from sqlalchemy import select

from ..models import Conversation, Message
from .base import Repository
from .keyset import Ordering, SortKey

messages = Message.__table__  # type: ignore[attr-defined]
_m = messages.c

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

FACT_COLUMNS = (
    _m.id,
    _m.conversation_id,
    _m.message_key,
    _m.sender,
    _m.sent_at,
    _m.agent_username,
    _m.agent_email,
)


class MessageRepository(Repository):
    async def facts_for(
        self, tenant_id: int, conversation_ids: Sequence[int]
    ) -> list[Mapping[str, Any]]:
        """What metric computation needs of the stored messages, in time order per chat."""
        if not conversation_ids:
            return []
        rows = await self.lookup(
            select(*FACT_COLUMNS)
            .where(_m.tenant_id == tenant_id, self.among(_m.conversation_id, conversation_ids))
            .order_by(_m.conversation_id, _m.sent_at, _m.id)
        )
        return list(rows.mappings())

    async def transcripts_for(
        self, tenant_id: int, conversation_ids: Sequence[int]
    ) -> dict[int, list[Mapping[str, Any]]]:
        """What an analyzer reads of each conversation, in time order."""
        found: dict[int, list[Mapping[str, Any]]] = {cid: [] for cid in conversation_ids}
        if not conversation_ids:
            return found
        rows = await self.connection.execute(
            select(
                _m.conversation_id,
                _m.sender,
                _m.sent_at,
                _m.content,
                _m.agent_username,
                _m.agent_email,
            )
            .where(_m.tenant_id == tenant_id, _m.conversation_id.in_(conversation_ids))
            .order_by(_m.conversation_id, _m.sent_at, _m.id)
        )
        for row in rows.mappings():
            found[row["conversation_id"]].append(row)
        return found

    async def insert_many(self, tenant_id: int, rows: Sequence[tuple[Any, ...]]) -> None:
        """Store new messages in the given order (ids follow it: ties keep file order).

        Rows are tuples in INSERT_COLUMNS order.
        """
        await self.bulk_insert(
            messages, ("tenant_id", *INSERT_COLUMNS), [(tenant_id, *row) for row in rows]
        )

    async def page(
        self, tenant_id: int, conversation_id: int, *, first: int, after: str | None
    ) -> tuple[list[Mapping[str, Any]], bool, Ordering]:
        statement = select(messages).where(
            _m.tenant_id == tenant_id, _m.conversation_id == conversation_id
        )
        if after is not None:
            statement = statement.where(TIME_ORDER.after(after))
        statement = statement.order_by(*TIME_ORDER.order_by()).limit(first + 1)
        rows = list((await self.connection.execute(statement)).mappings())
        return rows[:first], len(rows) > first, TIME_ORDER

    async def stream_for_selection(
        self, selection: Any, *, batch_size: int = 2000
    ) -> AsyncIterator[list[Mapping[str, Any]]]:
        """Messages of the selected conversations with their chat id, chat by chat in time."""
        conversations = Conversation.__table__  # type: ignore[attr-defined]
        statement = (
            select(conversations.c.chat_id, messages)
            .select_from(messages.join(conversations, conversations.c.id == _m.conversation_id))
            .where(
                _m.tenant_id == selection.tenant_id,
                _m.conversation_id.in_(selection.ids()),
            )
            .order_by(conversations.c.first_message_at, _m.conversation_id, _m.sent_at, _m.id)
            .execution_options(yield_per=batch_size)
        )
        result = await self.connection.stream(statement)
        async for partition in result.mappings().partitions(batch_size):
            yield list(partition)

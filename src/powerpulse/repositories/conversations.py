"""SQL for conversations: reading them a page at a time, and storing their measurements."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import (
    String,
    and_,
    bindparam,
    case,
    delete,
    func,
    literal_column,
    select,
    text,
    type_coerce,
    update,
)
from sqlalchemy.dialects.postgresql import aggregate_order_by

from ..ingest.pgcopy import (
    copy_data,
    encode_agent,
    encode_conversation,
    encode_reply,
)
from ..models import AnalysisStatus
from ..services.filters import ConversationCriteria, ConversationOrder
from .base import Repository, cell_kind, export_select
from .keyset import Ordering, SortKey
from .selection import (
    SOURCE,
    CsiParameters,
    Selection,
    analyses,
    conversation_agents,
    conversations,
    reply_events,
    topics,
)

_c = conversations.c
_a = analyses.c
ANALYSIS_COLUMNS = tuple(
    column
    for column in analyses.c
    if column.key not in {"conversation_id", "tenant_id", "updated_at"}
)


# Orders an index keeps (ix_conversations_tenant_last, ix_conversations_tenant_first): an
# unfiltered page in one of them reads just its own rows.
INDEXED_ORDERS = frozenset(
    {
        ConversationOrder.LAST_MESSAGE_DESC,
        ConversationOrder.LAST_MESSAGE_ASC,
        ConversationOrder.FIRST_MESSAGE_DESC,
        ConversationOrder.FIRST_MESSAGE_ASC,
    }
)


def _orderings(csi: dict[str, Any]) -> dict[ConversationOrder, Ordering]:
    score = csi["csi"]
    return {
        ConversationOrder.LAST_MESSAGE_DESC: Ordering(
            "last_desc",
            (SortKey(_c.last_message_at, True, is_datetime=True), SortKey(_c.id, True)),
        ),
        ConversationOrder.LAST_MESSAGE_ASC: Ordering(
            "last_asc", (SortKey(_c.last_message_at, is_datetime=True), SortKey(_c.id))
        ),
        ConversationOrder.FIRST_MESSAGE_DESC: Ordering(
            "first_desc",
            (SortKey(_c.first_message_at, True, is_datetime=True), SortKey(_c.id, True)),
        ),
        ConversationOrder.FIRST_MESSAGE_ASC: Ordering(
            "first_asc", (SortKey(_c.first_message_at, is_datetime=True), SortKey(_c.id))
        ),
        ConversationOrder.MESSAGE_COUNT_DESC: Ordering(
            "count_desc", (SortKey(_c.message_count, True), SortKey(_c.id, True))
        ),
        ConversationOrder.FIRST_RESPONSE_TIME_DESC: Ordering(
            "frt_desc",
            (
                SortKey(_c.first_response_time_minutes, True, nullable=True),
                SortKey(_c.id, True),
            ),
        ),
        ConversationOrder.FIRST_RESPONSE_TIME_ASC: Ordering(
            "frt_asc",
            (SortKey(_c.first_response_time_minutes, nullable=True), SortKey(_c.id)),
        ),
        ConversationOrder.DURATION_DESC: Ordering(
            "duration_desc", (SortKey(_c.duration_minutes, True), SortKey(_c.id, True))
        ),
        ConversationOrder.SATISFACTION_ASC: Ordering(
            "csat_asc", (SortKey(_a.satisfaction_score, nullable=True), SortKey(_c.id))
        ),
        ConversationOrder.SATISFACTION_DESC: Ordering(
            "csat_desc",
            (SortKey(_a.satisfaction_score, True, nullable=True), SortKey(_c.id, True)),
        ),
        ConversationOrder.SENTIMENT_ASC: Ordering(
            "sentiment_asc", (SortKey(_a.sentiment_score, nullable=True), SortKey(_c.id))
        ),
        ConversationOrder.SENTIMENT_DESC: Ordering(
            "sentiment_desc",
            (SortKey(_a.sentiment_score, True, nullable=True), SortKey(_c.id, True)),
        ),
        ConversationOrder.CSI_ASC: Ordering(
            "csi_asc", (SortKey(score, nullable=True, name="csi"), SortKey(_c.id))
        ),
        ConversationOrder.CSI_DESC: Ordering(
            "csi_desc",
            (SortKey(score, True, nullable=True, name="csi"), SortKey(_c.id, True)),
        ),
    }


# A reply row after its conversation id, in the field order of ReplyEventFacts.
REPLY_EVENT_COLUMNS = ("agent", "waiting_since", "replied_at", "response_minutes")
AGENT_COLUMNS = ("agent", "message_count")
MEASUREMENT_COLUMNS = (
    "platform",
    "message_count",
    "customer_message_count",
    "agent_message_count",
    "bot_message_count",
    "first_message_at",
    "last_message_at",
    "duration_minutes",
    "first_response_time_minutes",
    "first_response_agent",
    "avg_response_time_minutes",
    "reply_count",
    "contact_count",
    "updated_at",
)


class ConversationRepository(Repository):
    def __init__(self, connection: Any, *, csi: CsiParameters | None = None) -> None:
        super().__init__(connection)
        self.csi_parameters = csi or CsiParameters()

    def selection(self, tenant_id: int, criteria: ConversationCriteria) -> Selection:
        return Selection(tenant_id, criteria, self.csi_parameters)

    def _rows(self, selection: Selection) -> Any:
        """Conversation columns plus its analysis and CSI, as one row."""
        return select(
            conversations,
            *ANALYSIS_COLUMNS,
            *(expression.label(name) for name, expression in selection.csi.items()),
        ).select_from(SOURCE)

    # -- reads -----------------------------------------------------------------------
    async def get_by_chat_id(self, tenant_id: int, chat_id: str) -> Mapping[str, Any] | None:
        selection = self.selection(tenant_id, ConversationCriteria())
        row = (
            (
                await self.connection.execute(
                    self._rows(selection).where(*selection.conditions, _c.chat_id == chat_id)
                )
            )
            .mappings()
            .first()
        )
        return row

    async def by_ids(
        self, tenant_id: int, conversation_ids: Sequence[int]
    ) -> dict[int, Mapping[str, Any]]:
        if not conversation_ids:
            return {}
        rows = await self.connection.execute(
            select(conversations).where(
                self.owned_by(_c.tenant_id, tenant_id), self.among(_c.id, conversation_ids)
            )
        )
        return {row["id"]: row for row in rows.mappings()}

    async def agents_for(
        self, tenant_id: int, conversation_ids: Sequence[int]
    ) -> dict[int, list[str]]:
        if not conversation_ids:
            return {}
        rows = await self.connection.execute(
            select(conversation_agents.c.conversation_id, conversation_agents.c.agent)
            .where(
                self.owned_by(conversation_agents.c.tenant_id, tenant_id),
                self.among(conversation_agents.c.conversation_id, conversation_ids),
            )
            .order_by(conversation_agents.c.conversation_id, conversation_agents.c.agent)
        )
        found: dict[int, list[str]] = {conversation_id: [] for conversation_id in conversation_ids}
        for conversation_id, agent in rows:
            found[conversation_id].append(agent)
        return found

    @staticmethod
    def reads_few(criteria: ConversationCriteria, order: ConversationOrder) -> bool:
        """Whether a page reads only its own rows: no filter, in an order an index keeps."""
        return order in INDEXED_ORDERS and criteria == ConversationCriteria()

    async def page(
        self,
        tenant_id: int,
        criteria: ConversationCriteria,
        *,
        order: ConversationOrder,
        first: int,
        after: str | None,
    ) -> tuple[list[Mapping[str, Any]], bool, Ordering]:
        """One page plus whether more follow; reads `first + 1` rows, never an offset."""
        selection = self.selection(tenant_id, criteria)
        ordering = _orderings(selection.csi)[order]
        statement = self._rows(selection).where(*selection.conditions)
        if after is not None:
            statement = statement.where(ordering.after(after))
        statement = statement.order_by(*ordering.order_by()).limit(first + 1)
        rows = list((await self.connection.execute(statement)).mappings())
        return rows[:first], len(rows) > first, ordering

    async def export_rows(
        self,
        tenant_id: int,
        criteria: ConversationCriteria,
        keys: Sequence[str],
        *,
        batch_size: int = 2000,
    ) -> AsyncIterator[list[Sequence[Any]]]:
        """The selected conversations, oldest first, as rows of the `keys` (export_kinds).

        A key is a conversation, analysis or CSI column, "status" (PENDING without an
        analysis), "agents" (their names, ';'-joined in name order) or "topics" (';'-joined
        in the analysis's order, none before a first analysis). Timestamps come as the
        driver reads them and flags as numbers, unconverted: the export renders them.
        Read with a server-side cursor, so memory stays flat however many match.
        """
        selection = self.selection(tenant_id, criteria)
        columns = [self._export_column(key, selection) for key in keys]
        statement = (
            export_select(columns)
            .select_from(SOURCE)
            .where(*selection.conditions)
            .order_by(_c.first_message_at, _c.id)
            .execution_options(yield_per=batch_size)
        )
        result = await self.connection.stream(statement)
        async for partition in result.partitions(batch_size):
            yield partition

    def export_kinds(self, keys: Sequence[str]) -> tuple[str, ...]:
        """How each key's cells are rendered: "text", "time", "flag" or "value"."""
        selection = self.selection(0, ConversationCriteria())
        return tuple(cell_kind(self._export_column(key, selection)) for key in keys)

    def _export_column(self, key: str, selection: Selection) -> Any:
        if key == "agents":
            return type_coerce(
                self._joined(conversation_agents, conversation_agents.c.agent, order=None), String
            )
        if key == "topics":
            joined = self._joined(topics, topics.c.topic, order=topics.c.position)
            return type_coerce(case((_a.analyzed_at.is_not(None), joined), else_=None), String)
        if key == "status":
            return func.coalesce(_a.status, AnalysisStatus.PENDING.value)
        if key in selection.csi:
            return selection.csi[key]
        return _c[key] if key in _c else _a[key]

    def _joined(self, table: Any, column: Any, *, order: Any) -> Any:
        """The conversation's `column` values in `table`, ';'-joined in `order` (or their
        own order), as a correlated scalar subquery."""
        order = column if order is None else order
        if self.is_postgres:
            joined = func.string_agg(column, aggregate_order_by(literal_column("';'"), order))
            return (
                select(joined)
                .where(table.c.conversation_id == _c.id)
                .correlate(conversations)
                .scalar_subquery()
            )
        # SQLite 3.40 has no ORDER BY inside group_concat: it joins in its input's order.
        ordered = (
            select(column.label("value"))
            .where(table.c.conversation_id == _c.id)
            .order_by(order)
            .correlate(conversations)
            .subquery()
        )
        return select(func.group_concat(ordered.c.value, ";")).scalar_subquery()

    # -- ingest ----------------------------------------------------------------------
    async def any_for(self, tenant_id: int) -> bool:
        """Whether the tenant has a conversation at all (one index entry read)."""
        found = await self.connection.execute(
            select(_c.id).where(_c.tenant_id == tenant_id).limit(1)
        )
        return found.first() is not None

    async def ids_by_chat_id(self, tenant_id: int, chat_ids: Iterable[str]) -> dict[str, int]:
        """The ids of the conversations of these chat ids that exist (others are left out).

        On PostgreSQL each chat id is its own probe of the (tenant_id, chat_id) key. Asked
        as `tenant_id = ? AND chat_id = ANY(?)`, the planner judges the conversations of a
        first upload by their size before any statistics exist (a few pages, so a few
        rows) and reads every row of the tenant through another index that starts with
        tenant_id, filtering by chat id: in one upload of 1M messages the lookup grew from
        18 to 42 ms per batch, 6.8 s in all. Probed one chat id at a time, the unique key
        still ties with those indexes whenever the tenant seems to have one conversation:
        planned for a tenant id the statistics have not seen (a new tenant's), or cached
        from a run on a nearly empty table, the probe read all of the tenant's rows, 0.7 s
        for a batch at 12,000 conversations. So the tenant id is hidden from the planner
        (a subquery, whose value it does not know: it then assumes a tenant's share of
        the rows) and the statement is planned on every run, as `lookup` does.
        """
        wanted = list(chat_ids)
        if not wanted:
            return {}
        if self.is_postgres:
            asked = self.each_of(wanted, String(), "chat_id")
            tenant = select(bindparam(None, tenant_id, type_=_c.tenant_id.type))
            found = (
                select(_c.id)
                .where(_c.tenant_id == tenant.scalar_subquery(), _c.chat_id == asked.c.chat_id)
                .scalar_subquery()
            )
            rows = await self.lookup(select(asked.c.chat_id, found))
        else:
            rows = await self.lookup(
                select(_c.chat_id, _c.id).where(
                    _c.tenant_id == tenant_id, self.among(_c.chat_id, wanted)
                )
            )
        return {
            chat_id: conversation_id
            for chat_id, conversation_id in rows
            if conversation_id is not None
        }

    async def insert_many(
        self,
        tenant_id: int,
        chats: Sequence[tuple[str, Any]],
        *,
        version: int,
        updated_at: Any,
    ) -> dict[str, int]:
        """Insert new conversations, stamped with `version` and `updated_at`; returns their
        ids by chat id.

        Chats are (chat_id, measurement): the values of MEASUREMENT_COLUMNS up to, not
        including, updated_at, timestamps in storage form (kinds.storage_timestamps), as is
        `updated_at`. On PostgreSQL a measurement may be packed for COPY already, chat id
        included (pgcopy.encode_conversation), as an upload packs it; all go to the server
        in one binary COPY. Ids are taken before the rows go in, so no lookup follows the
        insert. Call it in a write transaction that has already written (an upload's begins
        by raising the tenant's version): on SQLite it is then the only writer until it
        commits.
        """
        if not chats:
            return {}
        ids = await self._new_ids(len(chats))
        if self.is_postgres:
            packed = [
                (
                    new_id,
                    [
                        measurement
                        if isinstance(measurement, bytes)
                        else encode_conversation(chat_id, measurement)
                    ],
                )
                for new_id, (chat_id, measurement) in zip(ids, chats, strict=True)
            ]
            # The packed fields, then the stamp every row shares.
            stamp = {"updated_at": updated_at, "data_version": version}
            columns = ("tenant_id", "id", *MEASUREMENT_COLUMNS[:-1], "chat_id", *stamp)
            data = copy_data(
                tenant_id, packed, len(columns) - 2, self.copy_fields(conversations, stamp)
            )
            await self.copy_binary(conversations, columns, data)
        else:
            await self.bulk_insert(
                conversations,
                (
                    "id",
                    "tenant_id",
                    "chat_id",
                    *MEASUREMENT_COLUMNS[:-1],
                    "updated_at",
                    "data_version",
                ),
                [
                    (new_id, tenant_id, chat_id, *measurement, updated_at, version)
                    for new_id, (chat_id, measurement) in zip(ids, chats, strict=True)
                ],
                prepared=True,
            )
        return {chat_id: new_id for new_id, (chat_id, _) in zip(ids, chats, strict=True)}

    async def _new_ids(self, count: int) -> list[int]:
        if self.is_postgres:
            # The sequence is found once: pg_get_serial_sequence called for each id took
            # ten times as long as the ids themselves (4.7 µs against 0.4 µs an id).
            taken = await self.connection.execute(
                text(
                    "WITH found AS MATERIALIZED (SELECT CAST(pg_get_serial_sequence("
                    "'conversations', 'id') AS regclass) AS sequence) "
                    "SELECT nextval(found.sequence) FROM found, generate_series(1, :count)"
                ),
                {"count": count},
            )
            return [int(value) for (value,) in taken]
        # As SQLite itself numbers rows: one more than the largest id (a single writer).
        largest = (await self.connection.execute(select(func.max(_c.id)))).scalar()
        start = int(largest or 0) + 1
        return list(range(start, start + count))

    async def update_measurements(
        self, tenant_id: int, rows: Sequence[dict[str, Any]], *, version: int
    ) -> None:
        """Overwrite the stored measurements of existing conversations (rows carry `id`)."""
        if not rows:
            return
        statement = (
            update(conversations)
            .where(_c.id == bindparam("_id"), _c.tenant_id == tenant_id)
            .values(
                {
                    **{column: bindparam(column) for column in MEASUREMENT_COLUMNS},
                    # The first platform seen for a chat stays its platform.
                    "platform": func.coalesce(_c.platform, bindparam("platform")),
                    "data_version": version,
                }
            )
        )
        await self.connection.execute(
            statement,
            [{"_id": row["id"], **{c: row[c] for c in MEASUREMENT_COLUMNS}} for row in rows],
        )

    async def replace_details(
        self,
        tenant_id: int,
        conversation_ids: Sequence[int],
        agents: Sequence[tuple[int, Sequence[Any]]],
        replies: Sequence[tuple[int, Sequence[Any]]],
    ) -> None:
        """Swap in freshly measured agents and reply events for these conversations.

        Both come chat by chat, as (conversation_id, rows). Agent rows are (agent,
        message_count); reply rows follow REPLY_EVENT_COLUMNS, timestamps in storage form
        (kinds.storage_timestamps). On PostgreSQL a row may also be packed for COPY
        already (ingest.pgcopy), as an upload packs them.
        """
        if conversation_ids:
            for table in (conversation_agents, reply_events):
                await self.connection.execute(
                    delete(table).where(
                        and_(
                            self.owned_by(table.c.tenant_id, tenant_id),
                            self.among(table.c.conversation_id, conversation_ids),
                        )
                    )
                )
        await self.insert_by_chat(
            conversation_agents, AGENT_COLUMNS, tenant_id, agents, encode_agent
        )
        await self.insert_by_chat(
            reply_events, REPLY_EVENT_COLUMNS, tenant_id, replies, encode_reply
        )


def _float(value: Any) -> float | None:
    return None if value is None else float(value)

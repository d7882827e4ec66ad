"""SQL for conversations, their agents and reply events, and the aggregates over them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    and_,
    bindparam,
    case,
    delete,
    exists,
    func,
    insert,
    select,
    true,
    update,
)

from ..models import (
    AnalysisStatus,
    Conversation,
    ConversationAgent,
    ConversationAnalysis,
    ConversationTopic,
    Message,
    ReplyEvent,
)
from ..services.filters import ConversationCriteria, ConversationOrder
from .base import MEDIAN, P90, Repository
from .keyset import Ordering, SortKey

conversations = Conversation.__table__  # type: ignore[attr-defined]
conversation_agents = ConversationAgent.__table__  # type: ignore[attr-defined]
reply_events = ReplyEvent.__table__  # type: ignore[attr-defined]
messages = Message.__table__  # type: ignore[attr-defined]
analyses = ConversationAnalysis.__table__  # type: ignore[attr-defined]
topics = ConversationTopic.__table__  # type: ignore[attr-defined]

_c = conversations.c
_a = analyses.c
# Every conversation query reads through this join; an analysis is 1:1 with its conversation.
SOURCE = conversations.outerjoin(
    analyses, and_(_a.conversation_id == _c.id, _a.tenant_id == _c.tenant_id)
)
ANALYSIS_COLUMNS = tuple(
    column
    for column in analyses.c
    if column.key not in {"conversation_id", "tenant_id", "updated_at"}
)
_DONE = _a.status == AnalysisStatus.DONE.value
ORDERINGS: dict[ConversationOrder, Ordering] = {
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
        (SortKey(_c.first_response_time_minutes, True, nullable=True), SortKey(_c.id, True)),
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
}

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


@dataclass(slots=True)
class ConversationTotals:
    total_conversations: int
    total_messages: int
    customer_messages: int
    agent_messages: int
    bot_messages: int
    repeat_contact_conversations: int
    avg_first_response_time_minutes: float | None
    reply_count: int
    agent_count: int
    avg_response_time_minutes: float | None
    median_first_response_time_minutes: float | None
    p90_first_response_time_minutes: float | None
    median_response_time_minutes: float | None
    p90_response_time_minutes: float | None
    analyzed_conversations: int
    satisfied_conversations: int
    first_contact_resolutions: int
    resolved_conversations: int
    avg_satisfaction_score: float | None
    avg_sentiment_score: float | None
    avg_effort_score: float | None
    positive_conversations: int
    neutral_conversations: int
    negative_conversations: int
    input_tokens: int
    output_tokens: int
    cost_usd: float


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class ConversationRepository(Repository):
    # -- selection -------------------------------------------------------------------
    def conditions(
        self, tenant_id: int, criteria: ConversationCriteria
    ) -> list[ColumnElement[bool]]:
        """WHERE clauses for a tenant's conversations that match the criteria."""
        clauses: list[ColumnElement[bool]] = [_c.tenant_id == tenant_id]
        if criteria.first_message_from is not None:
            clauses.append(_c.first_message_at >= criteria.first_message_from)
        if criteria.first_message_before is not None:
            clauses.append(_c.first_message_at < criteria.first_message_before)
        if criteria.chat_ids is not None:
            clauses.append(_c.chat_id.in_(criteria.chat_ids))
        if criteria.agent is not None:
            clauses.append(
                exists().where(
                    conversation_agents.c.conversation_id == _c.id,
                    conversation_agents.c.tenant_id == tenant_id,
                    conversation_agents.c.agent == criteria.agent,
                )
            )
        if criteria.satisfied is not None:
            clauses.append(and_(_DONE, _a.is_satisfied.is_(criteria.satisfied)))
        if criteria.min_satisfaction is not None:
            clauses.append(and_(_DONE, _a.satisfaction_score >= criteria.min_satisfaction))
        if criteria.max_satisfaction is not None:
            clauses.append(and_(_DONE, _a.satisfaction_score <= criteria.max_satisfaction))
        if criteria.sentiment is not None:
            clauses.append(and_(_DONE, _a.sentiment_label == criteria.sentiment))
        if criteria.resolved is not None:
            clauses.append(and_(_DONE, _a.resolved.is_(criteria.resolved)))
        if criteria.analysis_status is not None:
            clauses.append(
                func.coalesce(_a.status, AnalysisStatus.PENDING.value) == criteria.analysis_status
            )
        if criteria.topic is not None:
            clauses.append(_DONE)
            clauses.append(
                exists().where(
                    topics.c.conversation_id == _c.id,
                    topics.c.tenant_id == tenant_id,
                    topics.c.topic == criteria.topic,
                )
            )
        if criteria.search is not None:
            pattern = f"%{_escape_like(criteria.search)}%"
            clauses.append(
                exists().where(
                    messages.c.conversation_id == _c.id,
                    messages.c.tenant_id == tenant_id,
                    messages.c.content.ilike(pattern, escape="\\"),
                )
            )
        return clauses

    def matching_ids(self, tenant_id: int, criteria: ConversationCriteria) -> Any:
        return select(_c.id).select_from(SOURCE).where(*self.conditions(tenant_id, criteria))

    def _rows(self) -> Any:
        """Conversation columns plus its analysis, as one row."""
        return select(conversations, *ANALYSIS_COLUMNS).select_from(SOURCE)

    # -- reads -----------------------------------------------------------------------
    async def get_by_chat_id(self, tenant_id: int, chat_id: str) -> Mapping[str, Any] | None:
        row = (
            (
                await self.connection.execute(
                    self._rows().where(_c.tenant_id == tenant_id, _c.chat_id == chat_id)
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
            select(conversations).where(_c.tenant_id == tenant_id, _c.id.in_(conversation_ids))
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
                conversation_agents.c.tenant_id == tenant_id,
                conversation_agents.c.conversation_id.in_(conversation_ids),
            )
            .order_by(conversation_agents.c.conversation_id, conversation_agents.c.agent)
        )
        found: dict[int, list[str]] = {conversation_id: [] for conversation_id in conversation_ids}
        for conversation_id, agent in rows:
            found[conversation_id].append(agent)
        return found

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
        ordering = ORDERINGS[order]
        statement = self._rows().where(*self.conditions(tenant_id, criteria))
        if after is not None:
            statement = statement.where(ordering.after(after))
        statement = statement.order_by(*ordering.order_by()).limit(first + 1)
        rows = list((await self.connection.execute(statement)).mappings())
        return rows[:first], len(rows) > first, ordering

    async def count(self, tenant_id: int, criteria: ConversationCriteria) -> int:
        statement = select(func.count()).select_from(SOURCE)
        statement = statement.where(*self.conditions(tenant_id, criteria))
        return int((await self.connection.execute(statement)).scalar_one())

    async def totals(self, tenant_id: int, criteria: ConversationCriteria) -> ConversationTotals:
        """Every conversation-level aggregate of the selection, computed in the database."""
        where = self.conditions(tenant_id, criteria)

        def done_count(condition: Any) -> Any:
            return func.coalesce(func.sum(case((and_(_DONE, condition), 1), else_=0)), 0)

        def done_avg(column: Any) -> Any:
            return func.avg(case((_DONE, column), else_=None))

        def done_sum(column: Any) -> Any:
            return func.coalesce(func.sum(case((_DONE, column), else_=0)), 0)

        repeat = func.sum(case((_c.contact_count > 1, 1), else_=0))
        row = (
            await self.connection.execute(
                select(
                    func.count(),
                    func.coalesce(func.sum(_c.message_count), 0),
                    func.coalesce(func.sum(_c.customer_message_count), 0),
                    func.coalesce(func.sum(_c.agent_message_count), 0),
                    func.coalesce(func.sum(_c.bot_message_count), 0),
                    func.coalesce(repeat, 0),
                    func.avg(_c.first_response_time_minutes),
                    done_count(true()),
                    done_count(_a.is_satisfied.is_(True)),
                    done_count(_a.first_contact_resolution.is_(True)),
                    done_count(_a.resolved.is_(True)),
                    done_avg(_a.satisfaction_score),
                    done_avg(_a.sentiment_score),
                    done_avg(_a.effort_score),
                    done_count(_a.sentiment_label == "POSITIVE"),
                    done_count(_a.sentiment_label == "NEUTRAL"),
                    done_count(_a.sentiment_label == "NEGATIVE"),
                    done_sum(_a.input_tokens),
                    done_sum(_a.output_tokens),
                    done_sum(_a.cost_usd),
                )
                .select_from(SOURCE)
                .where(*where)
            )
        ).one()
        selected = self.matching_ids(tenant_id, criteria)
        event_row = (
            await self.connection.execute(
                select(func.count(), func.avg(reply_events.c.response_minutes)).where(
                    reply_events.c.tenant_id == tenant_id,
                    reply_events.c.conversation_id.in_(selected),
                )
            )
        ).one()
        agent_count = (
            await self.connection.execute(
                select(func.count(func.distinct(conversation_agents.c.agent))).where(
                    conversation_agents.c.tenant_id == tenant_id,
                    conversation_agents.c.conversation_id.in_(selected),
                )
            )
        ).scalar_one()
        frt_median, frt_p90 = await self.percentiles(
            select(_c.first_response_time_minutes).select_from(SOURCE).where(*where),
            (MEDIAN, P90),
        )
        reply_median, reply_p90 = await self.percentiles(
            select(reply_events.c.response_minutes).where(
                reply_events.c.tenant_id == tenant_id,
                reply_events.c.conversation_id.in_(selected),
            ),
            (MEDIAN, P90),
        )
        return ConversationTotals(
            total_conversations=int(row[0]),
            total_messages=int(row[1]),
            customer_messages=int(row[2]),
            agent_messages=int(row[3]),
            bot_messages=int(row[4]),
            repeat_contact_conversations=int(row[5]),
            avg_first_response_time_minutes=_float(row[6]),
            reply_count=int(event_row[0]),
            avg_response_time_minutes=_float(event_row[1]),
            agent_count=int(agent_count),
            median_first_response_time_minutes=frt_median,
            p90_first_response_time_minutes=frt_p90,
            median_response_time_minutes=reply_median,
            p90_response_time_minutes=reply_p90,
            analyzed_conversations=int(row[7]),
            satisfied_conversations=int(row[8]),
            first_contact_resolutions=int(row[9]),
            resolved_conversations=int(row[10]),
            avg_satisfaction_score=_float(row[11]),
            avg_sentiment_score=_float(row[12]),
            avg_effort_score=_float(row[13]),
            positive_conversations=int(row[14]),
            neutral_conversations=int(row[15]),
            negative_conversations=int(row[16]),
            input_tokens=int(row[17]),
            output_tokens=int(row[18]),
            cost_usd=float(row[19]),
        )

    async def top_topics(
        self, tenant_id: int, criteria: ConversationCriteria, *, limit: int
    ) -> list[tuple[str, int]]:
        """Most frequent topics among the selection's analysed conversations."""
        selected = self.matching_ids(tenant_id, criteria).where(_DONE)
        count = func.count().label("conversations")
        rows = await self.connection.execute(
            select(topics.c.topic, count)
            .where(topics.c.tenant_id == tenant_id, topics.c.conversation_id.in_(selected))
            .group_by(topics.c.topic)
            .order_by(count.desc(), topics.c.topic)
            .limit(limit)
        )
        return [(topic, int(conversations)) for topic, conversations in rows]

    # -- ingest ----------------------------------------------------------------------
    async def ids_by_chat_id(self, tenant_id: int, chat_ids: Iterable[str]) -> dict[str, int]:
        wanted = list(chat_ids)
        if not wanted:
            return {}
        rows = await self.connection.execute(
            select(_c.chat_id, _c.id).where(_c.tenant_id == tenant_id, _c.chat_id.in_(wanted))
        )
        return {chat_id: conversation_id for chat_id, conversation_id in rows}

    async def insert_many(self, tenant_id: int, rows: Sequence[dict[str, Any]]) -> dict[str, int]:
        """Insert new conversations; returns their ids by chat id."""
        if not rows:
            return {}
        values = [{**row, "tenant_id": tenant_id} for row in rows]
        result = await self.connection.execute(
            insert(conversations).returning(_c.chat_id, _c.id), values
        )
        return {chat_id: conversation_id for chat_id, conversation_id in result}

    async def update_measurements(self, tenant_id: int, rows: Sequence[dict[str, Any]]) -> None:
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
        agent_rows: Sequence[dict[str, Any]],
        reply_rows: Sequence[dict[str, Any]],
    ) -> None:
        """Swap in freshly measured agents and reply events for these conversations."""
        if conversation_ids:
            for table in (conversation_agents, reply_events):
                await self.connection.execute(
                    delete(table).where(
                        and_(
                            table.c.tenant_id == tenant_id,
                            table.c.conversation_id.in_(conversation_ids),
                        )
                    )
                )
        if agent_rows:
            await self.connection.execute(
                insert(conversation_agents),
                [{**row, "tenant_id": tenant_id} for row in agent_rows],
            )
        if reply_rows:
            await self.connection.execute(
                insert(reply_events), [{**row, "tenant_id": tenant_id} for row in reply_rows]
            )


def _float(value: Any) -> float | None:
    return None if value is None else float(value)

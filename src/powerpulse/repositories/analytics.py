"""SQL for aggregates over a selection: totals, series, breakdowns by agent and topic.

Every method issues a fixed number of queries whatever the number of buckets, agents or
topics: grouping happens in the database, never in a query per group.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

from sqlalchemy import BigInteger, Integer, and_, case, cast, func, literal, select, true

from ..models import UTCDateTime
from ..services.filters import ConversationCriteria
from .base import MEDIAN, P90, Repository
from .selection import (
    DONE,
    SOURCE,
    CsiParameters,
    Selection,
    analyses,
    conversation_agents,
    conversations,
    messages,
    reply_events,
    topics,
)

_c = conversations.c
_a = analyses.c
# Activity is counted per quarter hour in UTC and turned into local weekday and hour by the
# service: quarter hours stay exact in every timezone, including +05:30 and +05:45.
ACTIVITY_SLOT_SECONDS = 900


@dataclass(slots=True)
class MetricTotals:
    """Every aggregate of `metrics` for one selection (or one group of it)."""

    total_conversations: int = 0
    total_messages: int = 0
    customer_messages: int = 0
    agent_messages: int = 0
    bot_messages: int = 0
    repeat_contact_conversations: int = 0
    avg_first_response_time_minutes: float | None = None
    median_first_response_time_minutes: float | None = None
    p90_first_response_time_minutes: float | None = None
    reply_count: int = 0
    avg_response_time_minutes: float | None = None
    median_response_time_minutes: float | None = None
    p90_response_time_minutes: float | None = None
    agent_count: int = 0
    analyzed_conversations: int = 0
    satisfied_conversations: int = 0
    first_contact_resolutions: int = 0
    resolved_conversations: int = 0
    avg_satisfaction_score: float | None = None
    avg_sentiment_score: float | None = None
    avg_effort_score: float | None = None
    positive_conversations: int = 0
    neutral_conversations: int = 0
    negative_conversations: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    csi: float | None = None
    csi_effectiveness: float | None = None
    csi_effort: float | None = None
    csi_efficiency: float | None = None
    csi_empathy: float | None = None


@dataclass(slots=True)
class AgentTotals:
    agent: str
    conversations: int = 0
    messages: int = 0
    reply_count: int = 0
    avg_response_time_minutes: float | None = None
    median_response_time_minutes: float | None = None
    first_responses: int = 0
    avg_first_response_time_minutes: float | None = None
    analyzed_conversations: int = 0
    satisfied_conversations: int = 0
    resolved_conversations: int = 0
    avg_csi: float | None = None


@dataclass(slots=True)
class TopicTotals:
    topic: str
    conversations: int = 0
    satisfied_conversations: int = 0
    resolved_conversations: int = 0
    avg_sentiment_score: float | None = None
    avg_csi: float | None = None
    previous_period_conversations: int | None = None


@dataclass(slots=True)
class ActivityCounts:
    customer_messages: dict[int, int] = field(default_factory=dict)
    conversations_started: dict[int, int] = field(default_factory=dict)


def bucket_index(column: Any, boundaries: Sequence[datetime], *, postgres: bool) -> Any:
    """Index i of the bucket [boundaries[i], boundaries[i + 1]) holding `column`.

    Equally long buckets (hours; days and weeks where no clock change falls in the range)
    are plain arithmetic on epoch seconds. Otherwise a balanced tree of CASE expressions
    compares each row about log2(buckets) times.
    """
    steps = {(later - earlier).total_seconds() for earlier, later in pairwise(boundaries)}
    if len(steps) == 1:
        (step,) = steps
        origin = int(boundaries[0].timestamp())
        return (_epoch_seconds(column, postgres=postgres) - origin) // int(step)

    def build(low: int, high: int) -> Any:
        if high - low == 1:
            return literal(low, Integer)
        middle = (low + high) // 2
        bound = literal(boundaries[middle], UTCDateTime())
        return case((column < bound, build(low, middle)), else_=build(middle, high))

    return build(0, len(boundaries) - 1)


def _epoch_seconds(column: Any, *, postgres: bool) -> Any:
    """Whole seconds since 1970 of a stored timestamp, as an integer expression."""
    if postgres:
        return cast(func.floor(func.extract("epoch", column)), BigInteger)
    return cast(func.strftime("%s", column), Integer)


def _aware(value: Any) -> datetime | None:
    """min()/max() over a timestamp come back untyped on SQLite: read them as UTC."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _int(value: Any) -> int:
    return int(value or 0)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


class AnalyticsRepository(Repository):
    def __init__(self, connection: Any, *, csi: CsiParameters | None = None) -> None:
        super().__init__(connection)
        self.csi_parameters = csi or CsiParameters()

    def selection(self, tenant_id: int, criteria: ConversationCriteria) -> Selection:
        return Selection(tenant_id, criteria, self.csi_parameters)

    # -- totals -----------------------------------------------------------------------
    async def totals(
        self,
        tenant_id: int,
        criteria: ConversationCriteria,
        *,
        buckets: Sequence[datetime] | None = None,
    ) -> dict[Any, MetricTotals]:
        """Metrics of the selection; with `buckets`, per bucket of first message time.

        Keys are bucket indexes, or None without buckets. Five queries in all.
        """
        selection = self.selection(tenant_id, criteria)
        where = selection.conditions
        group = (
            bucket_index(_c.first_message_at, buckets, postgres=self.is_postgres)
            if buckets
            else None
        )
        keys = [group.label("g")] if group is not None else []
        group_by = [group] if group is not None else []
        found: dict[Any, MetricTotals] = defaultdict(MetricTotals)
        if group is None:
            found[None] = MetricTotals()

        def done_count(condition: Any) -> Any:
            return func.sum(case((and_(DONE, condition), 1), else_=0))

        def done_avg(column: Any) -> Any:
            return func.avg(case((DONE, column), else_=None))

        def done_sum(column: Any) -> Any:
            return func.sum(case((DONE, column), else_=0))

        csi = selection.csi
        rows = await self.connection.execute(
            select(
                *keys,
                func.count(),
                func.sum(_c.message_count),
                func.sum(_c.customer_message_count),
                func.sum(_c.agent_message_count),
                func.sum(_c.bot_message_count),
                func.sum(case((_c.contact_count > 1, 1), else_=0)),
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
                func.avg(csi["csi"]),
                func.avg(csi["csi_effectiveness"]),
                func.avg(csi["csi_effort"]),
                func.avg(csi["csi_efficiency"]),
                func.avg(csi["csi_empathy"]),
            )
            .select_from(SOURCE)
            .where(*where)
            .group_by(*group_by)
        )
        for row in rows:
            key = row[0] if group is not None else None
            v = row[1:] if group is not None else row
            if not v[0]:
                continue
            totals = found[key]
            totals.total_conversations = _int(v[0])
            totals.total_messages = _int(v[1])
            totals.customer_messages = _int(v[2])
            totals.agent_messages = _int(v[3])
            totals.bot_messages = _int(v[4])
            totals.repeat_contact_conversations = _int(v[5])
            totals.avg_first_response_time_minutes = _float(v[6])
            totals.analyzed_conversations = _int(v[7])
            totals.satisfied_conversations = _int(v[8])
            totals.first_contact_resolutions = _int(v[9])
            totals.resolved_conversations = _int(v[10])
            totals.avg_satisfaction_score = _float(v[11])
            totals.avg_sentiment_score = _float(v[12])
            totals.avg_effort_score = _float(v[13])
            totals.positive_conversations = _int(v[14])
            totals.neutral_conversations = _int(v[15])
            totals.negative_conversations = _int(v[16])
            totals.input_tokens = _int(v[17])
            totals.output_tokens = _int(v[18])
            totals.cost_usd = float(v[19] or 0.0)
            totals.csi = _float(v[20])
            totals.csi_effectiveness = _float(v[21])
            totals.csi_effort = _float(v[22])
            totals.csi_efficiency = _float(v[23])
            totals.csi_empathy = _float(v[24])

        with_events = SOURCE.join(reply_events, reply_events.c.conversation_id == _c.id)
        event_where = [*where, reply_events.c.tenant_id == tenant_id]
        rows = await self.connection.execute(
            select(*keys, func.count(), func.avg(reply_events.c.response_minutes))
            .select_from(with_events)
            .where(*event_where)
            .group_by(*group_by)
        )
        for row in rows:
            key = row[0] if group is not None else None
            v = row[1:] if group is not None else row
            found[key].reply_count = _int(v[0])
            found[key].avg_response_time_minutes = _float(v[1])

        with_agents = SOURCE.join(
            conversation_agents, conversation_agents.c.conversation_id == _c.id
        )
        rows = await self.connection.execute(
            select(*keys, func.count(func.distinct(conversation_agents.c.agent)))
            .select_from(with_agents)
            .where(*where, conversation_agents.c.tenant_id == tenant_id)
            .group_by(*group_by)
        )
        for row in rows:
            key = row[0] if group is not None else None
            found[key].agent_count = _int(row[-1])

        first_response = await self.percentiles(
            select(*keys, _c.first_response_time_minutes).select_from(SOURCE).where(*where),
            (MEDIAN, P90),
            grouped=group is not None,
        )
        for key, (median, p90) in first_response.items():
            found[key].median_first_response_time_minutes = median
            found[key].p90_first_response_time_minutes = p90
        response = await self.percentiles(
            select(*keys, reply_events.c.response_minutes)
            .select_from(with_events)
            .where(*event_where),
            (MEDIAN, P90),
            grouped=group is not None,
        )
        for key, (median, p90) in response.items():
            found[key].median_response_time_minutes = median
            found[key].p90_response_time_minutes = p90
        return dict(found)

    async def top_topics(
        self,
        tenant_id: int,
        criteria: ConversationCriteria,
        *,
        limit: int,
        buckets: Sequence[datetime] | None = None,
    ) -> dict[Any, list[tuple[str, int]]]:
        """Most frequent topics of the analysed conversations (per bucket with buckets)."""
        selection = self.selection(tenant_id, criteria)
        group = (
            bucket_index(_c.first_message_at, buckets, postgres=self.is_postgres)
            if buckets
            else None
        )
        keys = [group.label("g")] if group is not None else []
        count = func.count().label("conversations")
        rows = await self.connection.execute(
            select(*keys, topics.c.topic, count)
            .select_from(SOURCE.join(topics, topics.c.conversation_id == _c.id))
            .where(*selection.conditions, DONE, topics.c.tenant_id == tenant_id)
            .group_by(*([group] if group is not None else []), topics.c.topic)
        )
        found: dict[Any, list[tuple[str, int]]] = defaultdict(list)
        for row in rows:
            key = row[0] if group is not None else None
            found[key].append((row[-2], int(row[-1])))
        return {
            key: sorted(items, key=lambda item: (-item[1], item[0]))[:limit]
            for key, items in found.items()
        }

    async def first_message_range(
        self, tenant_id: int, criteria: ConversationCriteria
    ) -> tuple[datetime | None, datetime | None]:
        selection = self.selection(tenant_id, criteria)
        row = (
            await self.connection.execute(
                select(
                    func.min(_c.first_message_at).label("earliest"),
                    func.max(_c.first_message_at).label("latest"),
                )
                .select_from(SOURCE)
                .where(*selection.conditions)
            )
        ).one()
        return _aware(row[0]), _aware(row[1])

    # -- time -------------------------------------------------------------------------
    def _slot(self, column: Any) -> Any:
        return _epoch_seconds(column, postgres=self.is_postgres) // ACTIVITY_SLOT_SECONDS

    async def activity(self, tenant_id: int, criteria: ConversationCriteria) -> ActivityCounts:
        """Customer messages and conversations started per UTC quarter hour."""
        selection = self.selection(tenant_id, criteria)
        counts = ActivityCounts()
        slot = self._slot(messages.c.sent_at)
        rows = await self.connection.execute(
            select(slot, func.count())
            .select_from(SOURCE.join(messages, messages.c.conversation_id == _c.id))
            .where(
                *selection.conditions,
                messages.c.tenant_id == tenant_id,
                messages.c.sender == "CUSTOMER",
            )
            .group_by(slot)
        )
        counts.customer_messages = {int(key): int(value) for key, value in rows}
        slot = self._slot(_c.first_message_at)
        rows = await self.connection.execute(
            select(slot, func.count())
            .select_from(SOURCE)
            .where(*selection.conditions)
            .group_by(slot)
        )
        counts.conversations_started = {int(key): int(value) for key, value in rows}
        return counts

    async def first_response_histogram(
        self, tenant_id: int, criteria: ConversationCriteria, *, edges: Sequence[float]
    ) -> dict[int | None, int]:
        """Conversations per first-response bucket [edges[i-1], edges[i]); None = no answer."""
        selection = self.selection(tenant_id, criteria)
        frt = _c.first_response_time_minutes
        bucket = case(
            (frt.is_(None), literal(-1, Integer)),
            *((frt < edge, literal(index, Integer)) for index, edge in enumerate(edges)),
            else_=literal(len(edges), Integer),
        )
        rows = await self.connection.execute(
            select(bucket, func.count())
            .select_from(SOURCE)
            .where(*selection.conditions)
            .group_by(bucket)
        )
        return {(None if key == -1 else int(key)): int(value) for key, value in rows}

    # -- breakdowns -------------------------------------------------------------------
    async def agents(self, tenant_id: int, criteria: ConversationCriteria) -> list[AgentTotals]:
        """Per agent: conversations written in, replies, first responses and outcomes."""
        selection = self.selection(tenant_id, criteria)
        where = selection.conditions
        agent = conversation_agents.c.agent
        found: dict[str, AgentTotals] = {}
        rows = await self.connection.execute(
            select(
                agent,
                func.count(),
                func.sum(conversation_agents.c.message_count),
                func.sum(case((DONE, 1), else_=0)),
                func.sum(case((and_(DONE, _a.is_satisfied.is_(True)), 1), else_=0)),
                func.sum(case((and_(DONE, _a.resolved.is_(True)), 1), else_=0)),
                func.avg(selection.csi["csi"]),
            )
            .select_from(
                SOURCE.join(conversation_agents, conversation_agents.c.conversation_id == _c.id)
            )
            .where(*where, conversation_agents.c.tenant_id == tenant_id)
            .group_by(agent)
        )
        for row in rows:
            found[row[0]] = AgentTotals(
                agent=row[0],
                conversations=_int(row[1]),
                messages=_int(row[2]),
                analyzed_conversations=_int(row[3]),
                satisfied_conversations=_int(row[4]),
                resolved_conversations=_int(row[5]),
                avg_csi=_float(row[6]),
            )
        with_events = SOURCE.join(reply_events, reply_events.c.conversation_id == _c.id)
        event_where = [*where, reply_events.c.tenant_id == tenant_id]
        rows = await self.connection.execute(
            select(reply_events.c.agent, func.count(), func.avg(reply_events.c.response_minutes))
            .select_from(with_events)
            .where(*event_where)
            .group_by(reply_events.c.agent)
        )
        for name, count, average in rows:
            totals = found.setdefault(name, AgentTotals(agent=name))
            totals.reply_count = _int(count)
            totals.avg_response_time_minutes = _float(average)
        medians = await self.percentiles(
            select(reply_events.c.agent, reply_events.c.response_minutes)
            .select_from(with_events)
            .where(*event_where),
            (MEDIAN,),
            grouped=True,
        )
        for name, (median,) in medians.items():
            found.setdefault(name, AgentTotals(agent=name)).median_response_time_minutes = median
        rows = await self.connection.execute(
            select(_c.first_response_agent, func.count(), func.avg(_c.first_response_time_minutes))
            .select_from(SOURCE)
            .where(*where, _c.first_response_agent.is_not(None))
            .group_by(_c.first_response_agent)
        )
        for name, count, average in rows:
            totals = found.setdefault(name, AgentTotals(agent=name))
            totals.first_responses = _int(count)
            totals.avg_first_response_time_minutes = _float(average)
        return list(found.values())

    async def topics(
        self,
        tenant_id: int,
        criteria: ConversationCriteria,
        *,
        previous: ConversationCriteria | None,
    ) -> list[TopicTotals]:
        """Per topic of the analysed conversations, with the previous period's count."""
        selection = self.selection(tenant_id, criteria)
        topic = topics.c.topic
        with_topics = SOURCE.join(topics, topics.c.conversation_id == _c.id)
        rows = await self.connection.execute(
            select(
                topic,
                func.count(),
                func.sum(case((_a.is_satisfied.is_(True), 1), else_=0)),
                func.sum(case((_a.resolved.is_(True), 1), else_=0)),
                func.avg(_a.sentiment_score),
                func.avg(selection.csi["csi"]),
            )
            .select_from(with_topics)
            .where(*selection.conditions, DONE, topics.c.tenant_id == tenant_id)
            .group_by(topic)
        )
        found = {
            row[0]: TopicTotals(
                topic=row[0],
                conversations=_int(row[1]),
                satisfied_conversations=_int(row[2]),
                resolved_conversations=_int(row[3]),
                avg_sentiment_score=_float(row[4]),
                avg_csi=_float(row[5]),
                previous_period_conversations=0 if previous is not None else None,
            )
            for row in rows
        }
        if previous is not None:
            earlier = self.selection(tenant_id, previous)
            rows = await self.connection.execute(
                select(topic, func.count())
                .select_from(with_topics)
                .where(*earlier.conditions, DONE, topics.c.tenant_id == tenant_id)
                .group_by(topic)
            )
            for name, count in rows:
                # Topics of the selection only; one that vanished shows in the earlier period.
                if name in found:
                    found[name].previous_period_conversations = _int(count)
        return list(found.values())

"""Analytics for a support lead: totals, trends, period comparison, agents, topics, activity.

Time is bucketed in the configured timezone: bucket boundaries are computed here as exact
UTC instants (daylight saving included) and conversations are grouped by them.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

from ..errors import BadUserInput
from ..repositories.analytics import ACTIVITY_SLOT_SECONDS, AnalyticsRepository
from . import aggregates
from .aggregates import AgentTotals, MetricTotals, TopicTotals
from .base import ReadService
from .filters import ConversationFilter, local_midnight, resolve_filter

MAX_BUCKETS = 2000
MAX_TOPICS = 100
# First response buckets: [0, 5) [5, 15) [15, 60) [60, 240) [240, 1440) [1440, inf) minutes.
FIRST_RESPONSE_EDGES = (5.0, 15.0, 60.0, 240.0, 1440.0)


class Interval(enum.Enum):
    HOUR = "HOUR"
    DAY = "DAY"
    WEEK = "WEEK"
    MONTH = "MONTH"


class AgentOrder(enum.Enum):
    CONVERSATIONS_DESC = "CONVERSATIONS_DESC"
    RESPONSE_TIME_ASC = "RESPONSE_TIME_ASC"
    RESPONSE_TIME_DESC = "RESPONSE_TIME_DESC"
    CSAT_DESC = "CSAT_DESC"
    CSAT_ASC = "CSAT_ASC"
    CSI_DESC = "CSI_DESC"
    CSI_ASC = "CSI_ASC"


def percentage(part: int, whole: int) -> float | None:
    return 100.0 * part / whole if whole else None


def previous_period(selection: ConversationFilter | None) -> ConversationFilter | None:
    """The equally long period just before the filter's dates; None without both dates."""
    if selection is None or selection.start_date is None or selection.end_date is None:
        return None
    days = (selection.end_date - selection.start_date).days + 1
    try:
        start = selection.start_date - timedelta(days=days)
    except OverflowError:
        return None
    return replace(selection, start_date=start, end_date=selection.start_date - timedelta(days=1))


@dataclass(slots=True)
class TimeBucket:
    start: datetime
    totals: MetricTotals
    top_topics: list[tuple[str, int]]


@dataclass(slots=True)
class HeatmapCell:
    weekday: int
    hour: int
    customer_messages: int
    conversations_started: int


@dataclass(slots=True)
class FirstResponseBucket:
    label: str
    min_minutes: float | None
    max_minutes: float | None
    conversations: int


@dataclass(slots=True)
class TopicBreakdown:
    totals: TopicTotals
    percentage: float | None


def _bucket_label(low: float, high: float | None) -> str:
    def words(minutes: float) -> str:
        return f"{minutes / 60:g} h" if minutes >= 60 else f"{minutes:g} min"

    if high is None:
        return f"over {words(low)}"
    return f"{words(low)} to {words(high)}"


class AnalyticsService(ReadService):
    """Every answer is computed from the tenant's facts in memory (services/facts.py) and
    kept until the tenant's data changes (services/cache.py)."""

    async def metrics(self, tenant_id: int, selection: ConversationFilter | None) -> MetricTotals:
        criteria = resolve_filter(selection, await self._zone(tenant_id))

        async def compute(version: int) -> MetricTotals:
            facts, mask = await self._selected(tenant_id, version, criteria)
            return aggregates.totals(facts, aggregates.groups_of(mask), 1)[0]

        return await self._kept(tenant_id, ("metrics", criteria), compute)

    async def top_topics(
        self, tenant_id: int, selection: ConversationFilter | None, *, limit: int
    ) -> list[tuple[str, int]]:
        check_limit(limit)
        criteria = resolve_filter(selection, await self._zone(tenant_id))

        async def compute(version: int) -> list[tuple[str, int]]:
            facts, mask = await self._selected(tenant_id, version, criteria)
            return aggregates.top_topics(facts, aggregates.groups_of(mask), 1, limit=limit)[0]

        return await self._kept(tenant_id, ("top_topics", criteria, limit), compute)

    # -- trends -----------------------------------------------------------------------
    async def timeseries(
        self, tenant_id: int, selection: ConversationFilter | None, interval: Interval
    ) -> list[TimeBucket]:
        """One bucket per interval over the filter's dates (or the data's), empty ones too."""
        zone = await self._zone(tenant_id)
        criteria = resolve_filter(selection, zone)

        async def compute(version: int) -> list[TimeBucket]:
            facts, mask = await self._selected(tenant_id, version, criteria)
            first_day, last_day = _date_range(facts, mask, selection, zone)
            if first_day is None or last_day is None:
                return []
            boundaries = _boundaries(first_day, last_day, interval, zone)
            if len(boundaries) - 1 > MAX_BUCKETS:
                raise BadUserInput(
                    f"that range holds more than {MAX_BUCKETS} {interval.value.lower()} "
                    "buckets; narrow the dates or choose a longer interval"
                )
            count = len(boundaries) - 1
            groups = aggregates.bucket_groups(facts, mask, boundaries)
            totals = aggregates.totals(facts, groups, count)
            topics = aggregates.top_topics(facts, groups, count, limit=MAX_TOPICS)
            return [
                TimeBucket(
                    start=boundaries[index].astimezone(zone),
                    totals=totals[index],
                    top_topics=topics[index],
                )
                for index in range(count)
            ]

        # The filter's dates (not only the resolved instants) decide the buckets.
        question = ("timeseries", criteria, selection, interval, str(zone))
        return await self._kept(tenant_id, question, compute)

    async def activity_heatmap(
        self, tenant_id: int, selection: ConversationFilter | None
    ) -> list[HeatmapCell]:
        """Weekday (1 = Monday) by hour (0-23) in the configured timezone, all 168 cells."""
        zone = await self._zone(tenant_id)
        criteria = resolve_filter(selection, zone)

        async def compute(version: int) -> list[HeatmapCell]:
            # Customer messages are counted by when they were sent: read from the messages.
            async with self._database.read() as connection:
                counts = await AnalyticsRepository(connection, csi=self._csi).activity(
                    tenant_id, criteria
                )
            cells = {
                (weekday, hour): HeatmapCell(weekday, hour, 0, 0)
                for weekday in range(1, 8)
                for hour in range(24)
            }

            def cell(slot: int) -> HeatmapCell:
                moment = datetime.fromtimestamp(slot * ACTIVITY_SLOT_SECONDS, tz=UTC).astimezone(
                    zone
                )
                return cells[(moment.isoweekday(), moment.hour)]

            for slot, count in counts.customer_messages.items():
                cell(slot).customer_messages += count
            for slot, count in counts.conversations_started.items():
                cell(slot).conversations_started += count
            return list(cells.values())

        return await self._kept(tenant_id, ("heatmap", criteria, str(zone)), compute)

    async def first_response_histogram(
        self, tenant_id: int, selection: ConversationFilter | None
    ) -> list[FirstResponseBucket]:
        criteria = resolve_filter(selection, await self._zone(tenant_id))

        async def compute(version: int) -> list[FirstResponseBucket]:
            facts, mask = await self._selected(tenant_id, version, criteria)
            counts = aggregates.first_response_histogram(facts, mask, edges=FIRST_RESPONSE_EDGES)
            lows = (0.0, *FIRST_RESPONSE_EDGES)
            highs: tuple[float | None, ...] = (*FIRST_RESPONSE_EDGES, None)
            buckets = [
                FirstResponseBucket(_bucket_label(low, high), low, high, counts.get(index, 0))
                for index, (low, high) in enumerate(zip(lows, highs, strict=True))
            ]
            buckets.append(
                FirstResponseBucket("no agent response", None, None, counts.get(None, 0))
            )
            return buckets

        return await self._kept(tenant_id, ("histogram", criteria), compute)

    # -- breakdowns -------------------------------------------------------------------
    async def agents(
        self, tenant_id: int, selection: ConversationFilter | None, order: AgentOrder
    ) -> list[AgentTotals]:
        """Every agent of the selection, in the requested order (ties by name)."""
        criteria = resolve_filter(selection, await self._zone(tenant_id))

        async def compute(version: int) -> list[AgentTotals]:
            facts, mask = await self._selected(tenant_id, version, criteria)
            found = aggregates.agents(facts, mask)
            found.sort(key=agent_sort_key(order))
            return found

        return await self._kept(tenant_id, ("agents", criteria, order), compute)

    async def topics(
        self, tenant_id: int, selection: ConversationFilter | None, *, limit: int
    ) -> list[TopicBreakdown]:
        check_limit(limit)
        zone = await self._zone(tenant_id)
        criteria = resolve_filter(selection, zone)
        earlier = previous_period(selection)
        previous = resolve_filter(earlier, zone) if earlier is not None else None

        async def compute(version: int) -> list[TopicBreakdown]:
            facts, mask = await self._selected(tenant_id, version, criteria)
            previous_mask = (
                await self._select(tenant_id, facts, previous) if previous is not None else None
            )
            found = aggregates.topics(facts, mask, previous=previous_mask)
            analyzed = int((facts.done & mask).sum())
            found.sort(key=lambda topic: (-topic.conversations, topic.topic))
            return [
                TopicBreakdown(totals=topic, percentage=percentage(topic.conversations, analyzed))
                for topic in found[:limit]
            ]

        return await self._kept(tenant_id, ("topics", criteria, previous, limit), compute)


def _date_range(
    facts: Any, mask: Any, selection: ConversationFilter | None, zone: Any
) -> tuple[date | None, date | None]:
    """The filter's dates, or the first and last local day of the selection's first
    messages where the filter leaves them open."""
    start = selection.start_date if selection else None
    end = selection.end_date if selection else None
    if start is not None and end is not None:
        return start, end
    earliest, latest = aggregates.first_message_range(facts, mask)
    if earliest is None or latest is None:
        return start, end
    return (
        start or earliest.astimezone(zone).date(),
        end or latest.astimezone(zone).date(),
    )


def agent_sort_key(order: AgentOrder) -> Callable[[AgentTotals], Any]:
    """Sort keys with missing values last and the agent's name as the tie-breaker."""

    def ascending(value: float | None) -> tuple[int, float]:
        return (1, 0.0) if value is None else (0, value)

    def descending(value: float | None) -> tuple[int, float]:
        return (1, 0.0) if value is None else (0, -value)

    def csat(agent: AgentTotals) -> float | None:
        return percentage(agent.satisfied_conversations, agent.analyzed_conversations)

    keys: dict[AgentOrder, Callable[[AgentTotals], Any]] = {
        AgentOrder.CONVERSATIONS_DESC: lambda a: (-a.conversations, a.agent),
        AgentOrder.RESPONSE_TIME_ASC: lambda a: (ascending(a.avg_response_time_minutes), a.agent),
        AgentOrder.RESPONSE_TIME_DESC: lambda a: (
            descending(a.avg_response_time_minutes),
            a.agent,
        ),
        AgentOrder.CSAT_DESC: lambda a: (descending(csat(a)), a.agent),
        AgentOrder.CSAT_ASC: lambda a: (ascending(csat(a)), a.agent),
        AgentOrder.CSI_DESC: lambda a: (descending(a.avg_csi), a.agent),
        AgentOrder.CSI_ASC: lambda a: (ascending(a.avg_csi), a.agent),
    }
    return keys[order]


def check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_TOPICS:
        raise BadUserInput(f"`limit` must be between 1 and {MAX_TOPICS}, got {limit}")


def _boundaries(first: date, last: date, interval: Interval, zone: Any) -> list[datetime]:
    """Bucket starts from the interval containing `first` to the end of `last`, in UTC."""
    if interval is Interval.WEEK:
        first = first - timedelta(days=first.isoweekday() - 1)
    elif interval is Interval.MONTH:
        first = first.replace(day=1)
    end = local_midnight(last + timedelta(days=1), zone).astimezone(UTC)
    cursor = local_midnight(first, zone).astimezone(UTC)
    boundaries = [cursor]
    day = first
    while cursor < end:
        if interval is Interval.HOUR:
            cursor = cursor + timedelta(hours=1)
        else:
            if interval is Interval.DAY:
                day = day + timedelta(days=1)
            elif interval is Interval.WEEK:
                day = day + timedelta(days=7)
            else:
                day = (day.replace(day=28) + timedelta(days=4)).replace(day=1)
            cursor = local_midnight(day, zone).astimezone(UTC)
        boundaries.append(cursor)
        if len(boundaries) > MAX_BUCKETS + 1:
            break
    return boundaries

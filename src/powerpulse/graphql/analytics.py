"""GraphQL types for trends and breakdowns: series, heatmap, histogram, agents, topics."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json

import strawberry

from ..errors import BadUserInput
from ..metric_definitions import MetricDefinition as MetricDefinitionModel
from ..services.aggregates import AgentTotals
from ..services.analytics import AgentOrder as AgentOrderModel
from ..services.analytics import FirstResponseBucket as FirstResponseBucketModel
from ..services.analytics import HeatmapCell as HeatmapCellModel
from ..services.analytics import Interval as IntervalModel
from ..services.analytics import TopicBreakdown, agent_sort_key, percentage
from .types import Metrics, PageInfo

Interval = strawberry.enum(IntervalModel, description="Length of a time-series bucket.")
AgentOrder = strawberry.enum(
    AgentOrderModel,
    description="Orders for agents; missing values (no replies, nothing analysed) last.",
)


@strawberry.type(description="Metrics of the conversations that started in one interval.")
class TimeBucket:
    start: dt.datetime = strawberry.field(
        description="Start of the interval in the configured timezone."
    )
    metrics: Metrics


@strawberry.type(description="Activity in one hour of one weekday (configured timezone).")
class HeatmapCell:
    weekday: int = strawberry.field(description="1 = Monday … 7 = Sunday.")
    hour: int = strawberry.field(description="0-23.")
    customer_messages: int
    conversations_started: int

    @classmethod
    def from_model(cls, cell: HeatmapCellModel) -> HeatmapCell:
        return cls(
            weekday=cell.weekday,
            hour=cell.hour,
            customer_messages=cell.customer_messages,
            conversations_started=cell.conversations_started,
        )


@strawberry.type(description="Conversations whose first response fell in [min, max).")
class FirstResponseBucket:
    label: str
    min_minutes: float | None = strawberry.field(description="Inclusive; null for 'none'.")
    max_minutes: float | None = strawberry.field(description="Exclusive; null when open.")
    conversations: int

    @classmethod
    def from_model(cls, bucket: FirstResponseBucketModel) -> FirstResponseBucket:
        return cls(
            label=bucket.label,
            min_minutes=bucket.min_minutes,
            max_minutes=bucket.max_minutes,
            conversations=bucket.conversations,
        )


@strawberry.type(description="How one agent performs over the selected conversations.")
class AgentStats:
    agent: str
    conversations: int = strawberry.field(description="Conversations the agent wrote in.")
    messages: int = strawberry.field(description="Messages the agent wrote.")
    reply_count: int = strawberry.field(description="Reply events the agent answered.")
    avg_response_time_minutes: float | None
    median_response_time_minutes: float | None
    first_responses: int = strawberry.field(
        description="Conversations where the agent sent the first response."
    )
    avg_first_response_time_minutes: float | None
    analyzed_conversations: int
    csat_percentage: float | None = strawberry.field(
        description="CSAT of the analysed conversations the agent wrote in."
    )
    resolution_rate: float | None
    avg_csi: float | None

    @classmethod
    def from_totals(cls, totals: AgentTotals) -> AgentStats:
        return cls(
            agent=totals.agent,
            conversations=totals.conversations,
            messages=totals.messages,
            reply_count=totals.reply_count,
            avg_response_time_minutes=totals.avg_response_time_minutes,
            median_response_time_minutes=totals.median_response_time_minutes,
            first_responses=totals.first_responses,
            avg_first_response_time_minutes=totals.avg_first_response_time_minutes,
            analyzed_conversations=totals.analyzed_conversations,
            csat_percentage=percentage(
                totals.satisfied_conversations, totals.analyzed_conversations
            ),
            resolution_rate=percentage(
                totals.resolved_conversations, totals.analyzed_conversations
            ),
            avg_csi=totals.avg_csi,
        )


@strawberry.type
class AgentStatsEdge:
    cursor: str
    node: AgentStats


@strawberry.type(description="Agents of the selection, a page at a time.")
class AgentStatsConnection:
    edges: list[AgentStatsEdge]
    page_info: PageInfo
    total_count: int


def _agent_cursor(order: AgentOrderModel, totals: AgentTotals) -> str:
    payload = json.dumps([order.value, agent_sort_key(order)(totals)], separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def agent_page(
    agents: list[AgentTotals], order: AgentOrderModel, *, first: int, after: str | None
) -> AgentStatsConnection:
    """A keyset page over agents already sorted by `order` (the cursor holds the sort key)."""
    start = 0
    if after is not None:
        try:
            padded = after + "=" * (-len(after) % 4)
            name, key = json.loads(base64.urlsafe_b64decode(padded.encode()).decode())
        except (ValueError, binascii.Error, UnicodeError, TypeError) as exc:
            raise BadUserInput("the cursor `after` is not valid") from exc
        if name != order.value:
            raise BadUserInput(
                "the cursor `after` belongs to another ordering; start again without `after`"
            )
        sort_key = agent_sort_key(order)
        bound = json.loads(json.dumps(key))
        start = next(
            (
                index
                for index, agent in enumerate(agents)
                if json.loads(json.dumps(sort_key(agent))) > bound
            ),
            len(agents),
        )
    page = agents[start : start + first]
    cursors = [_agent_cursor(order, agent) for agent in page]
    return AgentStatsConnection(
        edges=[
            AgentStatsEdge(cursor=cursor, node=AgentStats.from_totals(agent))
            for cursor, agent in zip(cursors, page, strict=True)
        ],
        page_info=PageInfo(
            has_next_page=start + first < len(agents),
            has_previous_page=start > 0,
            start_cursor=cursors[0] if cursors else None,
            end_cursor=cursors[-1] if cursors else None,
        ),
        total_count=len(agents),
    )


@strawberry.type(description="How conversations about one topic go.")
class TopicStats:
    topic: str
    conversations: int = strawberry.field(description="Analysed conversations about it.")
    percentage: float | None = strawberry.field(
        description="100 × conversations / all analysed conversations of the selection."
    )
    csat_percentage: float | None
    avg_sentiment_score: float | None
    resolution_rate: float | None
    avg_csi: float | None
    previous_period_conversations: int | None = strawberry.field(
        description="Its conversations in the equally long period before; null without both dates."
    )

    @classmethod
    def from_model(cls, breakdown: TopicBreakdown) -> TopicStats:
        totals = breakdown.totals
        return cls(
            topic=totals.topic,
            conversations=totals.conversations,
            percentage=breakdown.percentage,
            csat_percentage=percentage(totals.satisfied_conversations, totals.conversations),
            avg_sentiment_score=totals.avg_sentiment_score,
            resolution_rate=percentage(totals.resolved_conversations, totals.conversations),
            avg_csi=totals.avg_csi,
            previous_period_conversations=totals.previous_period_conversations,
        )


@strawberry.type(description="What a number means and how it is computed.")
class MetricDefinition:
    name: str
    scope: str = strawberry.field(description="conversation, selection, agent or topic.")
    description: str
    formula: str
    unit: str

    @classmethod
    def from_model(cls, definition: MetricDefinitionModel) -> MetricDefinition:
        return cls(
            name=definition.name,
            scope=definition.scope,
            description=definition.description,
            formula=definition.formula,
            unit=definition.unit,
        )

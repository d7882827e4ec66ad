"""GraphQL object types, inputs and enums, and how domain values become them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import strawberry
from strawberry.types import Info
from strawberry.types.nodes import SelectedField, Selection

from ..analysis.schema import SentimentLabel as SentimentLabelModel
from ..models import AnalysisStatus as AnalysisStatusModel
from ..models import JobStatus as JobStatusModel
from ..models import SenderKind as SenderKindModel
from ..services.aggregates import MetricTotals
from ..services.analytics import check_limit, percentage, previous_period
from ..services.conversations import Page
from ..services.filters import ConversationFilter as ConversationFilterModel
from ..services.filters import ConversationOrder as ConversationOrderModel
from ..services.ingest import UploadReport
from .context import Context

SenderKind = strawberry.enum(
    SenderKindModel,
    description="Who wrote a message: the customer, a human agent, or an automated bot.",
)
ConversationOrder = strawberry.enum(
    ConversationOrderModel, description="Orderings for the conversations connection."
)
SentimentLabel = strawberry.enum(
    SentimentLabelModel, description="NEGATIVE (score 1-2), NEUTRAL (3), POSITIVE (4-5)."
)
AnalysisStatus = strawberry.enum(
    AnalysisStatusModel,
    description="PENDING until analysed (again, after new messages), then DONE or FAILED.",
)
JobStatus = strawberry.enum(JobStatusModel, description="Lifecycle of an analysis job.")


@strawberry.input(description="Selects conversations; every field narrows the selection.")
class ConversationFilter:
    start_date: dt.date | None = strawberry.field(
        default=None,
        description="Conversations whose first message falls on or after this date "
        "(in the configured timezone).",
    )
    end_date: dt.date | None = strawberry.field(
        default=None,
        description="Conversations whose first message falls on or before this date (inclusive).",
    )
    agent: str | None = strawberry.field(
        default=None, description="Conversations in which this agent (username or email) wrote."
    )
    search: str | None = strawberry.field(
        default=None, description="Case-insensitive substring of any message's text."
    )
    chat_ids: list[str] | None = strawberry.field(
        default=None, description="Only these chat ids (at most 1000)."
    )
    satisfied: bool | None = strawberry.field(
        default=None, description="Analysed conversations whose customer is (not) satisfied."
    )
    min_satisfaction: int | None = strawberry.field(
        default=None, description="Analysed conversations with satisfactionScore >= this."
    )
    max_satisfaction: int | None = strawberry.field(
        default=None, description="Analysed conversations with satisfactionScore <= this."
    )
    sentiment: SentimentLabel | None = strawberry.field(
        default=None, description="Analysed conversations with this overall sentiment."
    )
    topic: str | None = strawberry.field(
        default=None, description="Analysed conversations about this topic (normalised)."
    )
    resolved: bool | None = strawberry.field(
        default=None, description="Analysed conversations that were (not) resolved."
    )
    analysis_status: AnalysisStatus | None = strawberry.field(
        default=None, description="Conversations whose analysis is in this state."
    )
    agents: list[str] | None = strawberry.field(
        default=None, description="Conversations in which any of these agents wrote."
    )
    topics: list[str] | None = strawberry.field(
        default=None, description="Analysed conversations about any of these topics."
    )
    min_first_response_time_minutes: float | None = strawberry.field(
        default=None, description="firstResponseTimeMinutes >= this (answered ones only)."
    )
    max_first_response_time_minutes: float | None = strawberry.field(
        default=None, description="firstResponseTimeMinutes <= this (answered ones only)."
    )
    min_csi: float | None = strawberry.field(
        default=None, description="Analysed conversations with CSI >= this."
    )
    max_csi: float | None = strawberry.field(
        default=None, description="Analysed conversations with CSI <= this."
    )
    repeat_contact: bool | None = strawberry.field(
        default=None, description="Conversations with (true) or without (false) contactCount > 1."
    )
    language: str | None = strawberry.field(
        default=None, description="Analysed conversations in this ISO 639-1 language."
    )

    def to_domain(self) -> ConversationFilterModel:
        return ConversationFilterModel(
            start_date=self.start_date,
            end_date=self.end_date,
            agent=self.agent,
            search=self.search,
            chat_ids=tuple(self.chat_ids) if self.chat_ids is not None else None,
            satisfied=self.satisfied,
            min_satisfaction=self.min_satisfaction,
            max_satisfaction=self.max_satisfaction,
            sentiment=self.sentiment.value if self.sentiment is not None else None,
            topic=self.topic,
            resolved=self.resolved,
            analysis_status=(
                self.analysis_status.value if self.analysis_status is not None else None
            ),
            agents=tuple(self.agents) if self.agents is not None else None,
            topics=tuple(self.topics) if self.topics is not None else None,
            min_first_response_time=self.min_first_response_time_minutes,
            max_first_response_time=self.max_first_response_time_minutes,
            min_csi=self.min_csi,
            max_csi=self.max_csi,
            repeat_contact=self.repeat_contact,
            language=self.language,
        )


def to_filter(selection: ConversationFilter | None) -> ConversationFilterModel | None:
    return selection.to_domain() if selection is not None else None


@strawberry.type(description="Relay page information.")
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


def page_info(page: Page, after: str | None) -> PageInfo:
    return PageInfo(
        has_next_page=page.has_next_page,
        has_previous_page=after is not None,
        start_cursor=page.cursors[0] if page.cursors else None,
        end_cursor=page.end_cursor,
    )


def parse_id(value: str) -> int | None:
    """Numeric ids as clients send them; anything else names nothing."""
    text = str(value).strip()
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        return None
    return int(text)


@strawberry.type(description="A message of a conversation.")
class Message:
    id: strawberry.ID = strawberry.field(description="PowerPulse's id of the stored message.")
    external_id: str | None = strawberry.field(
        description="The export's UNIQUE_POST_ID, when it had one."
    )
    sender: SenderKind
    content: str | None = strawberry.field(
        description="Message text; null for non-text messages (photos, stickers)."
    )
    sent_at: dt.datetime = strawberry.field(description="When it was sent, in UTC.")
    agent_username: str | None
    agent_email: str | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Message:
        return cls(
            id=strawberry.ID(str(row["id"])),
            external_id=row["external_id"],
            sender=SenderKindModel(row["sender"]),
            content=row["content"],
            sent_at=row["sent_at"],
            agent_username=row["agent_username"],
            agent_email=row["agent_email"],
        )


@strawberry.type
class MessageEdge:
    cursor: str
    node: Message


@strawberry.type(description="Messages of a conversation in time order.")
class MessageConnection:
    edges: list[MessageEdge]
    page_info: PageInfo
    total_count: int = strawberry.field(description="Messages in the conversation.")


@strawberry.type(description="What reading the conversation tells (scores: 1 worst, 5 best).")
class ConversationAnalysis:
    satisfaction_score: int = strawberry.field(
        description="How satisfied the customer is at the end (1-5)."
    )
    is_satisfied: bool = strawberry.field(description="satisfactionScore >= 4.")
    sentiment_score: int = strawberry.field(description="The customer's overall sentiment.")
    initial_sentiment: int = strawberry.field(description="Of the first customer messages.")
    final_sentiment: int = strawberry.field(description="Of the last customer messages.")
    sentiment_label: SentimentLabel
    resolved: bool = strawberry.field(
        description="The issue was solved or the question answered in this conversation."
    )
    first_contact_resolution: bool = strawberry.field(description="resolved and contactCount == 1.")
    effort_score: int = strawberry.field(
        description="5 = effortless; 1 = the customer had to repeat, chase, re-explain."
    )
    summary: str
    language: str = strawberry.field(description="ISO 639-1 code of the customer's messages.")
    analyzer: str = strawberry.field(description="openai or lexicon.")
    model: str
    prompt_version: str
    input_tokens: int
    output_tokens: int
    cost_usd: float
    analyzed_at: dt.datetime
    conversation_id: strawberry.Private[int]

    @strawberry.field(description="1-3 normalised topic labels, most relevant first.")
    async def topics(self, info: Info[Context, None]) -> list[str]:
        return await info.context.topics_loader.load(self.conversation_id)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> ConversationAnalysis | None:
        if row.get("analyzed_at") is None or row.get("satisfaction_score") is None:
            return None
        return cls(
            conversation_id=row["id"],
            satisfaction_score=row["satisfaction_score"],
            is_satisfied=bool(row["is_satisfied"]),
            sentiment_score=row["sentiment_score"],
            initial_sentiment=row["initial_sentiment"],
            final_sentiment=row["final_sentiment"],
            sentiment_label=SentimentLabelModel(row["sentiment_label"]),
            resolved=bool(row["resolved"]),
            first_contact_resolution=bool(row["first_contact_resolution"]),
            effort_score=row["effort_score"],
            summary=row["summary"],
            language=row["language"],
            analyzer=row["analyzer"],
            model=row["model"],
            prompt_version=row["prompt_version"],
            input_tokens=row["input_tokens"],
            output_tokens=row["output_tokens"],
            cost_usd=row["cost_usd"],
            analyzed_at=row["analyzed_at"],
        )


@strawberry.type(description="Customer Satisfaction Index of one conversation (0-100).")
class CsiScore:
    score: float = strawberry.field(description="Weighted sum of the four pillars.")
    effectiveness: float = strawberry.field(
        description="50 × resolved + 50 × firstContactResolution."
    )
    effort: float = strawberry.field(description="(effortScore − 1) / 4 × 100.")
    efficiency: float = strawberry.field(
        description="From the first response time, linear in log(minutes) between the "
        "target (100) and the limit (0)."
    )
    empathy: float = strawberry.field(
        description="50 × (sentimentScore − 1) / 4 + 50 × (finalSentiment − 1) / 4."
    )

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> CsiScore | None:
        if row.get("csi") is None:
            return None
        return cls(
            score=float(row["csi"]),
            effectiveness=float(row["csi_effectiveness"]),
            effort=float(row["csi_effort"]),
            efficiency=float(row["csi_efficiency"]),
            empathy=float(row["csi_empathy"]),
        )


@strawberry.type(description="One chat, with its exactly measured metrics.")
class Conversation:
    chat_id: str
    platform: str | None
    message_count: int
    customer_message_count: int
    agent_message_count: int
    bot_message_count: int
    first_message_at: dt.datetime
    last_message_at: dt.datetime
    duration_minutes: float = strawberry.field(
        description="Minutes from the first message to the last."
    )
    first_response_time_minutes: float | None = strawberry.field(
        description="First customer message to the first agent message at or after it; "
        "null when no agent replied. Bot messages never count as a response."
    )
    avg_response_time_minutes: float | None = strawberry.field(
        description="Mean of the conversation's reply events; null without any."
    )
    reply_count: int = strawberry.field(description="Reply events in the conversation.")
    contact_count: int = strawberry.field(
        description="1 + the gaps of at least the session gap between consecutive messages."
    )
    analysis_status: AnalysisStatus = strawberry.field(
        description="PENDING until the current messages are analysed, then DONE or FAILED."
    )
    analysis_failure_reason: str | None = strawberry.field(
        description="Why the last analysis failed, when analysisStatus is FAILED."
    )
    analysis: ConversationAnalysis | None = strawberry.field(
        description="The latest analysis; null until analysed. While a re-analysis is "
        "PENDING it is the previous one."
    )
    csi: CsiScore | None = strawberry.field(
        description="Customer Satisfaction Index; null unless analysisStatus is DONE."
    )
    conversation_id: strawberry.Private[int]
    # Read with the conversation whenever the request asks for them (selects()).
    preloaded_agents: strawberry.Private[list[str] | None] = None

    @strawberry.field(description="Distinct agents (username, else email) who wrote.")
    def agents(self) -> list[str]:
        # Synchronous: an awaited field on every node of a page costs graphql-core more
        # than reading the page's agents together. The resolvers that build a
        # Conversation read them whenever the selection asks for them.
        if self.preloaded_agents is None:
            raise RuntimeError("agents asked for but not read with the conversation")
        return self.preloaded_agents

    @strawberry.field(description="The conversation's messages in time order.")
    async def messages(
        self, info: Info[Context, None], first: int | None = 50, after: str | None = None
    ) -> MessageConnection:
        page = await info.context.messages_loader.load(
            (self.conversation_id, 50 if first is None else first, after)
        )
        return MessageConnection(
            edges=[
                MessageEdge(cursor=cursor, node=Message.from_row(row))
                for row, cursor in zip(page.rows, page.cursors, strict=True)
            ],
            page_info=page_info(page, after),
            total_count=self.message_count,
        )

    @classmethod
    def from_row(cls, row: Mapping[str, Any], agents: list[str] | None = None) -> Conversation:
        return cls(
            conversation_id=row["id"],
            preloaded_agents=agents,
            chat_id=row["chat_id"],
            platform=row["platform"],
            message_count=row["message_count"],
            customer_message_count=row["customer_message_count"],
            agent_message_count=row["agent_message_count"],
            bot_message_count=row["bot_message_count"],
            first_message_at=row["first_message_at"],
            last_message_at=row["last_message_at"],
            duration_minutes=row["duration_minutes"],
            first_response_time_minutes=row["first_response_time_minutes"],
            avg_response_time_minutes=row["avg_response_time_minutes"],
            reply_count=row["reply_count"],
            contact_count=row["contact_count"],
            analysis_status=AnalysisStatusModel(row.get("status") or "PENDING"),
            analysis_failure_reason=row.get("failure_reason"),
            analysis=ConversationAnalysis.from_row(row),
            csi=CsiScore.from_row(row),
        )


def selects(selections: Iterable[Selection], path: Sequence[str]) -> bool:
    """Whether the request asks for `path` (GraphQL field names, one level each) under
    these selections, directly or through fragments."""
    for selection in selections:
        if isinstance(selection, SelectedField):
            if selection.name == path[0] and (
                len(path) == 1 or selects(selection.selections, path[1:])
            ):
                return True
        elif selects(selection.selections, path):  # a fragment's fields are at this level
            return True
    return False


@strawberry.type
class ConversationEdge:
    cursor: str
    node: Conversation


@strawberry.type(description="A page of conversations (keyset cursors, Relay style).")
class ConversationConnection:
    edges: list[ConversationEdge]
    page_info: PageInfo
    selection: strawberry.Private[ConversationFilterModel | None]

    @strawberry.field(description="Conversations matching the filter, across all pages.")
    async def total_count(self, info: Info[Context, None]) -> int:
        return await info.context.services.conversations.count(
            info.context.tenant_id, self.selection
        )


def _fraction(part: int, whole: int) -> float | None:
    return part / whole if whole else None


@strawberry.type(description="Analysed conversations by overall sentiment.")
class SentimentDistribution:
    positive: int
    neutral: int
    negative: int
    positive_fraction: float | None = strawberry.field(description="positive / analysed.")
    neutral_fraction: float | None
    negative_fraction: float | None


@strawberry.type(description="How many analysed conversations are about a topic.")
class TopicCount:
    topic: str
    count: int
    percentage: float | None = strawberry.field(description="100 × count / analysed conversations.")


@strawberry.type(description="Aggregates over the selected conversations.")
class Metrics:
    total_conversations: int
    total_messages: int
    customer_messages: int
    agent_messages: int
    bot_messages: int
    agent_count: int = strawberry.field(description="Distinct agents who wrote.")
    repeat_contact_conversations: int = strawberry.field(
        description="Conversations with contactCount > 1."
    )
    avg_first_response_time_minutes: float | None
    median_first_response_time_minutes: float | None
    p90_first_response_time_minutes: float | None
    avg_response_time_minutes: float | None = strawberry.field(
        description="Mean over all reply events (event-weighted)."
    )
    median_response_time_minutes: float | None
    p90_response_time_minutes: float | None
    reply_count: int = strawberry.field(description="Number of reply events.")
    analyzed_conversations: int = strawberry.field(
        description="Conversations whose current analysis is DONE."
    )
    csat_percentage: float | None = strawberry.field(
        description="100 × satisfied / analysed; null when nothing is analysed."
    )
    fcr_percentage: float | None = strawberry.field(
        description="100 × first-contact resolutions / analysed."
    )
    resolution_rate: float | None = strawberry.field(description="100 × resolved / analysed.")
    avg_satisfaction_score: float | None
    avg_sentiment_score: float | None
    avg_effort_score: float | None
    sentiment_distribution: SentimentDistribution
    input_tokens: int = strawberry.field(description="Tokens read by the current analyses.")
    output_tokens: int
    cost_usd: float = strawberry.field(description="USD spent on the current analyses.")
    csi: float | None = strawberry.field(
        description="Mean Customer Satisfaction Index (0-100) of the analysed conversations."
    )
    csi_effectiveness: float | None = strawberry.field(description="Mean CSI effectiveness.")
    csi_effort: float | None = strawberry.field(description="Mean CSI effort.")
    csi_efficiency: float | None = strawberry.field(description="Mean CSI efficiency.")
    csi_empathy: float | None = strawberry.field(description="Mean CSI empathy.")
    selection: strawberry.Private[ConversationFilterModel | None]
    # Inside a time series every bucket's topics arrive with the series (one query).
    preloaded_topics: strawberry.Private[list[tuple[str, int]] | None] = None
    in_series: strawberry.Private[bool] = False

    @strawberry.field(description="Most frequent topics of the analysed conversations.")
    async def top_topics(self, info: Info[Context, None], limit: int = 10) -> list[TopicCount]:
        if self.preloaded_topics is not None:
            check_limit(limit)
            counts = self.preloaded_topics[:limit]
        else:
            counts = await info.context.services.analytics.top_topics(
                info.context.tenant_id, self.selection, limit=limit
            )
        return [
            TopicCount(
                topic=topic,
                count=count,
                percentage=percentage(count, self.analyzed_conversations),
            )
            for topic, count in counts
        ]

    @strawberry.field(
        description="The same metrics for the equally long period just before the filter's "
        "dates; null unless the filter has both startDate and endDate (and inside "
        "timeseries buckets)."
    )
    async def previous_period(self, info: Info[Context, None]) -> Metrics | None:
        earlier = None if self.in_series else previous_period(self.selection)
        if earlier is None:
            return None
        totals = await info.context.services.analytics.metrics(info.context.tenant_id, earlier)
        return Metrics.from_totals(totals, earlier)

    @classmethod
    def from_totals(
        cls,
        totals: MetricTotals,
        selection: ConversationFilterModel | None,
        *,
        preloaded_topics: list[tuple[str, int]] | None = None,
        in_series: bool = False,
    ) -> Metrics:
        analyzed = totals.analyzed_conversations
        return cls(
            selection=selection,
            preloaded_topics=preloaded_topics,
            in_series=in_series,
            csi=totals.csi,
            csi_effectiveness=totals.csi_effectiveness,
            csi_effort=totals.csi_effort,
            csi_efficiency=totals.csi_efficiency,
            csi_empathy=totals.csi_empathy,
            analyzed_conversations=analyzed,
            csat_percentage=percentage(totals.satisfied_conversations, analyzed),
            fcr_percentage=percentage(totals.first_contact_resolutions, analyzed),
            resolution_rate=percentage(totals.resolved_conversations, analyzed),
            avg_satisfaction_score=totals.avg_satisfaction_score,
            avg_sentiment_score=totals.avg_sentiment_score,
            avg_effort_score=totals.avg_effort_score,
            sentiment_distribution=SentimentDistribution(
                positive=totals.positive_conversations,
                neutral=totals.neutral_conversations,
                negative=totals.negative_conversations,
                positive_fraction=_fraction(totals.positive_conversations, analyzed),
                neutral_fraction=_fraction(totals.neutral_conversations, analyzed),
                negative_fraction=_fraction(totals.negative_conversations, analyzed),
            ),
            input_tokens=totals.input_tokens,
            output_tokens=totals.output_tokens,
            cost_usd=totals.cost_usd,
            total_conversations=totals.total_conversations,
            total_messages=totals.total_messages,
            customer_messages=totals.customer_messages,
            agent_messages=totals.agent_messages,
            bot_messages=totals.bot_messages,
            agent_count=totals.agent_count,
            repeat_contact_conversations=totals.repeat_contact_conversations,
            avg_first_response_time_minutes=totals.avg_first_response_time_minutes,
            median_first_response_time_minutes=totals.median_first_response_time_minutes,
            p90_first_response_time_minutes=totals.p90_first_response_time_minutes,
            avg_response_time_minutes=totals.avg_response_time_minutes,
            median_response_time_minutes=totals.median_response_time_minutes,
            p90_response_time_minutes=totals.p90_response_time_minutes,
            reply_count=totals.reply_count,
        )


@strawberry.type(description="The background analysis of one upload's conversations.")
class AnalysisJob:
    id: strawberry.ID
    status: JobStatus
    total: int = strawberry.field(description="Conversations the job covers.")
    processed: int = strawberry.field(description="analyzed + cached + failed.")
    analyzed: int = strawberry.field(description="Conversations sent to the analyzer.")
    cached: int = strawberry.field(
        description="Conversations whose analysis was still current (no analyzer call)."
    )
    failed: int
    forced: int = strawberry.field(description="Conversations re-analysed by forceReprocess.")
    input_tokens: int
    output_tokens: int
    cost_usd: float
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    error: str | None = strawberry.field(description="Why the job stopped, when it FAILED.")

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> AnalysisJob:
        return cls(
            id=strawberry.ID(str(row["id"])),
            status=JobStatusModel(row["status"]),
            total=row["total"],
            processed=row["analyzed"] + row["cached"] + row["failed"],
            analyzed=row["analyzed"],
            cached=row["cached"],
            failed=row["failed"],
            forced=row["forced"],
            input_tokens=row["input_tokens"],
            output_tokens=row["output_tokens"],
            cost_usd=row["cost_usd"],
            created_at=row["created_at"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            error=row["error"],
        )


@strawberry.type
class AnalysisJobEdge:
    cursor: str
    node: AnalysisJob


@strawberry.type(description="Analysis jobs, newest first.")
class AnalysisJobConnection:
    edges: list[AnalysisJobEdge]
    page_info: PageInfo

    @strawberry.field(description="All of the tenant's jobs.")
    async def total_count(self, info: Info[Context, None]) -> int:
        return await info.context.services.jobs.count(info.context.tenant_id)


@strawberry.type(description="A record of the upload that was skipped, and why.")
class RecordError:
    chat_id: str | None
    index: int | None = strawberry.field(description="Position of the record in its chat.")
    message: str


@strawberry.type(
    description="What an upload did. Received = stored + duplicates + autoresponses + invalid."
)
class UploadChatsPayload:
    conversations_received: int = strawberry.field(description="Chat arrays in the file.")
    messages_received: int = strawberry.field(description="Records in the file.")
    messages_stored: int = strawberry.field(description="New messages stored.")
    duplicates_skipped: int = strawberry.field(description="Messages already stored.")
    autoresponses_filtered: int = strawberry.field(
        description="Bot messages dropped for matching an autoresponse pattern."
    )
    invalid_records: int = strawberry.field(description="Records skipped as invalid.")
    conversations_created: int
    conversations_updated: int
    errors: list[RecordError] = strawberry.field(
        description="The invalid records, up to the configured number."
    )
    errors_truncated: bool = strawberry.field(
        description="True when more records were invalid than `errors` lists."
    )
    analysis_queued: int = strawberry.field(
        description="Conversations queued for analysis (new, changed, or forced)."
    )
    analysis_cached: int = strawberry.field(
        description="Unchanged conversations whose analysis is still current."
    )
    analysis_forced: int = strawberry.field(
        description="Queued conversations that bypass the cache (forceReprocess)."
    )
    job_id: strawberry.Private[int]

    @strawberry.field(description="The background analysis of this upload.")
    async def job(self, info: Info[Context, None]) -> AnalysisJob:
        row = await info.context.services.jobs.get(info.context.tenant_id, self.job_id)
        assert row is not None, "an upload's job is stored with the upload"
        return AnalysisJob.from_row(row)

    @classmethod
    def from_report(cls, report: UploadReport) -> UploadChatsPayload:
        return cls(
            conversations_received=report.conversations_received,
            messages_received=report.messages_received,
            messages_stored=report.messages_stored,
            duplicates_skipped=report.duplicates_skipped,
            autoresponses_filtered=report.autoresponses_filtered,
            invalid_records=report.invalid_records,
            conversations_created=report.conversations_created,
            conversations_updated=report.conversations_updated,
            errors=[
                RecordError(chat_id=e.chat_id, index=e.index, message=e.message)
                for e in report.errors
            ],
            errors_truncated=report.errors_truncated,
            analysis_queued=report.analysis_queued,
            analysis_cached=report.analysis_cached,
            analysis_forced=report.analysis_forced,
            job_id=report.job_id or 0,
        )

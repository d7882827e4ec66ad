"""The schema: queries and the upload mutation, each resolver a thin call into a service."""

from __future__ import annotations

from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.extensions import DisableIntrospection, MaxTokensLimiter
from strawberry.file_uploads import Upload
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext, Info

from ..errors import BadUserInput, Forbidden
from ..metric_definitions import METRIC_DEFINITIONS
from ..services.conversations import check_page_size
from ..settings import Settings
from .analytics import (
    AgentOrder,
    AgentStatsConnection,
    FirstResponseBucket,
    HeatmapCell,
    Interval,
    MetricDefinition,
    TimeBucket,
    TopicStats,
    agent_page,
)
from .context import Context
from .documents import DocumentCache, document_cache_extension
from .errors import classify_errors
from .limits import DocumentLimits, document_limits_extension
from .responses import ResponseCacheExtension
from .types import (
    AnalysisJob,
    AnalysisJobConnection,
    AnalysisJobEdge,
    Conversation,
    ConversationConnection,
    ConversationEdge,
    ConversationFilter,
    ConversationOrder,
    Metrics,
    UploadChatsPayload,
    page_info,
    parse_id,
    selects,
    to_filter,
)

DEFAULT_PAGE_SIZE = 20
IntervalDefault: Any = Interval.DAY  # type: ignore[attr-defined]
AgentOrderDefault: Any = AgentOrder.CONVERSATIONS_DESC  # type: ignore[attr-defined]
ConversationOrderDefault: Any = ConversationOrder.LAST_MESSAGE_DESC  # type: ignore[attr-defined]


@strawberry.type
class Query:
    @strawberry.field(description="Aggregate metrics over the selected conversations.")
    async def metrics(
        self, info: Info[Context, None], filter: ConversationFilter | None = None
    ) -> Metrics:
        selection = to_filter(filter)
        totals = await info.context.services.analytics.metrics(info.context.tenant_id, selection)
        return Metrics.from_totals(totals, selection)

    @strawberry.field(
        description="Metrics per interval of first-message time, empty intervals included, "
        "from the filter's startDate (or the first conversation) to its endDate (or the "
        "last). Bucket counts add up to the overall totals."
    )
    async def timeseries(
        self,
        info: Info[Context, None],
        filter: ConversationFilter | None = None,
        interval: Interval = IntervalDefault,
    ) -> list[TimeBucket]:
        selection = to_filter(filter)
        buckets = await info.context.services.analytics.timeseries(
            info.context.tenant_id, selection, interval
        )
        return [
            TimeBucket(
                start=bucket.start,
                metrics=Metrics.from_totals(
                    bucket.totals, selection, preloaded_topics=bucket.top_topics, in_series=True
                ),
            )
            for bucket in buckets
        ]

    @strawberry.field(
        description="Customer messages and conversations started by weekday and hour."
    )
    async def activity_heatmap(
        self, info: Info[Context, None], filter: ConversationFilter | None = None
    ) -> list[HeatmapCell]:
        cells = await info.context.services.analytics.activity_heatmap(
            info.context.tenant_id, to_filter(filter)
        )
        return [HeatmapCell.from_model(cell) for cell in cells]

    @strawberry.field(description="Conversations by first response time.")
    async def first_response_time_histogram(
        self, info: Info[Context, None], filter: ConversationFilter | None = None
    ) -> list[FirstResponseBucket]:
        buckets = await info.context.services.analytics.first_response_histogram(
            info.context.tenant_id, to_filter(filter)
        )
        return [FirstResponseBucket.from_model(bucket) for bucket in buckets]

    @strawberry.field(description="Agents of the selection with their performance.")
    async def agents(
        self,
        info: Info[Context, None],
        filter: ConversationFilter | None = None,
        first: int | None = 20,
        after: str | None = None,
        order_by: AgentOrder = AgentOrderDefault,
    ) -> AgentStatsConnection:
        size = DEFAULT_PAGE_SIZE if first is None else first
        check_page_size(size, info.context.services.conversations.max_page_size)
        agents = await info.context.services.analytics.agents(
            info.context.tenant_id, to_filter(filter), order_by
        )
        return agent_page(agents, order_by, first=size, after=after)

    @strawberry.field(description="Topics of the analysed conversations, most frequent first.")
    async def topics(
        self,
        info: Info[Context, None],
        filter: ConversationFilter | None = None,
        limit: int | None = 20,
    ) -> list[TopicStats]:
        breakdowns = await info.context.services.analytics.topics(
            info.context.tenant_id, to_filter(filter), limit=20 if limit is None else limit
        )
        return [TopicStats.from_model(breakdown) for breakdown in breakdowns]

    @strawberry.field(description="Definitions of every metric PowerPulse reports.")
    def metric_definitions(self) -> list[MetricDefinition]:
        return [MetricDefinition.from_model(definition) for definition in METRIC_DEFINITIONS]

    @strawberry.field(description="Conversations, a page at a time (first ≤ 100).")
    async def conversations(
        self,
        info: Info[Context, None],
        first: int | None = 20,
        after: str | None = None,
        filter: ConversationFilter | None = None,
        order_by: ConversationOrder | None = ConversationOrderDefault,
    ) -> ConversationConnection:
        selection = to_filter(filter)
        page = await info.context.services.conversations.page(
            info.context.tenant_id,
            selection,
            order=order_by or ConversationOrderDefault,
            first=DEFAULT_PAGE_SIZE if first is None else first,
            after=after,
        )
        agents: dict[int, list[str]] = {}
        if page.rows and selects(
            info.selected_fields, ("conversations", "edges", "node", "agents")
        ):
            agents = await info.context.services.conversations.agents(
                info.context.tenant_id, [row["id"] for row in page.rows]
            )
        return ConversationConnection(
            edges=[
                ConversationEdge(
                    cursor=cursor, node=Conversation.from_row(row, agents.get(row["id"]))
                )
                for row, cursor in zip(page.rows, page.cursors, strict=True)
            ],
            page_info=page_info(page, after),
            selection=selection,
        )

    @strawberry.field(description="One conversation by its chat id; null when there is none.")
    async def conversation(self, info: Info[Context, None], chat_id: str) -> Conversation | None:
        row = await info.context.services.conversations.get(info.context.tenant_id, chat_id)
        if row is None:
            return None
        agents = None
        if selects(info.selected_fields, ("conversation", "agents")):
            found = await info.context.services.conversations.agents(
                info.context.tenant_id, [row["id"]]
            )
            agents = found[row["id"]]
        return Conversation.from_row(row, agents)

    @strawberry.field(description="One analysis job; null when there is none.")
    async def job(self, info: Info[Context, None], id: strawberry.ID) -> AnalysisJob | None:
        job_id = parse_id(id)
        if job_id is None:
            return None
        row = await info.context.services.jobs.get(info.context.tenant_id, job_id)
        return AnalysisJob.from_row(row) if row is not None else None

    @strawberry.field(description="Analysis jobs, newest first (first ≤ 100).")
    async def jobs(
        self, info: Info[Context, None], first: int | None = 20, after: str | None = None
    ) -> AnalysisJobConnection:
        page = await info.context.services.jobs.page(
            info.context.tenant_id,
            first=DEFAULT_PAGE_SIZE if first is None else first,
            after=after,
        )
        return AnalysisJobConnection(
            edges=[
                AnalysisJobEdge(cursor=cursor, node=AnalysisJob.from_row(row))
                for row, cursor in zip(page.rows, page.cursors, strict=True)
            ],
            page_info=page_info(page, after),
        )


@strawberry.type
class Mutation:
    @strawberry.mutation(
        description="Upload a grouped_chats JSON export (GraphQL multipart request)."
    )
    async def upload_chats(
        self, info: Info[Context, None], file: Upload, force_reprocess: bool = False
    ) -> UploadChatsPayload:
        # The Upload scalar passes any variable value through: only a multipart file part
        # is a file, a string or number sent as `file` is the client's mistake.
        is_file = hasattr(file, "file") and hasattr(file, "close")
        if info.context.read_only:
            if is_file:
                await file.close()
            raise Forbidden("this API key is read-only; uploads need a read-write key")
        if not is_file:
            raise BadUserInput(
                "`file` must be a file part of a GraphQL multipart request "
                "(https://github.com/jaydenseric/graphql-multipart-request-spec)"
            )
        try:
            report = await info.context.services.ingest.ingest(
                info.context.tenant_id, file.file, force_reprocess=force_reprocess
            )
        finally:
            await file.close()
        return UploadChatsPayload.from_report(report)


class PowerPulseSchema(strawberry.Schema):
    documents: DocumentCache  # the parsed and validated documents it reuses

    def process_errors(
        self,
        errors: list[GraphQLError],
        execution_context: ExecutionContext | None = None,
    ) -> None:
        classify_errors(errors, execution_context)


# Distinct query texts whose parsed (and validated) document a schema keeps.
DOCUMENT_CACHE_ENTRIES = 256


def build_schema(settings: Settings | None = None) -> PowerPulseSchema:
    """The schema with the limits of `settings` (their defaults when None).

    An operation is refused before it runs when its document has more tokens than
    POWERPULSE_GRAPHQL_MAX_TOKENS, or exceeds POWERPULSE_GRAPHQL_MAX_DEPTH, _MAX_ALIASES,
    _MAX_FIELD_REPEATS or _MAX_COST (graphql/limits.py). Batching is not configured, so a
    JSON array of operations is refused. Introspection and "Did you mean ...?" suggestions
    follow POWERPULSE_INTROSPECTION (off in production by default).
    """
    settings = settings or Settings.model_construct()
    limits = DocumentLimits(
        max_depth=settings.graphql_max_depth,
        max_aliases=settings.graphql_max_aliases,
        max_repeats=settings.graphql_max_field_repeats,
        max_cost=settings.graphql_max_cost,
        max_page_size=settings.max_page_size,
    )
    max_tokens = settings.graphql_max_tokens
    documents = DocumentCache(DOCUMENT_CACHE_ENTRIES)
    extensions: list[Any] = [
        lambda: MaxTokensLimiter(max_token_count=max_tokens),
        document_limits_extension(limits),
        # After the limits: a document over them is refused before the cache is consulted.
        document_cache_extension(documents),
        ResponseCacheExtension,
    ]
    if not settings.introspection_enabled:
        extensions.append(DisableIntrospection)
    schema = PowerPulseSchema(
        query=Query,
        mutation=Mutation,
        extensions=extensions,
        config=StrawberryConfig(
            auto_camel_case=True,
            disable_field_suggestions=not settings.introspection_enabled,
        ),
    )
    schema.documents = documents
    return schema

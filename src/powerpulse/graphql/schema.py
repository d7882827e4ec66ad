"""The schema: queries and the upload mutation, each resolver a thin call into a service."""

from __future__ import annotations

from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.file_uploads import Upload
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext, Info

from .context import Context
from .errors import classify_errors
from .types import (
    Conversation,
    ConversationConnection,
    ConversationEdge,
    ConversationFilter,
    ConversationOrder,
    Metrics,
    PageInfo,
    UploadChatsPayload,
    to_filter,
)

DEFAULT_PAGE_SIZE = 20
ConversationOrderDefault: Any = ConversationOrder.LAST_MESSAGE_DESC  # type: ignore[attr-defined]


@strawberry.type
class Query:
    @strawberry.field(description="Aggregate metrics over the selected conversations.")
    async def metrics(
        self, info: Info[Context, None], filter: ConversationFilter | None = None
    ) -> Metrics:
        totals = await info.context.services.conversations.metrics(
            info.context.tenant_id, to_filter(filter)
        )
        return Metrics.from_totals(totals)

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
        return ConversationConnection(
            edges=[
                ConversationEdge(cursor=cursor, node=Conversation.from_row(row))
                for row, cursor in zip(page.rows, page.cursors, strict=True)
            ],
            page_info=PageInfo(
                has_next_page=page.has_next_page,
                has_previous_page=after is not None,
                start_cursor=page.cursors[0] if page.cursors else None,
                end_cursor=page.end_cursor,
            ),
            selection=selection,
        )

    @strawberry.field(description="One conversation by its chat id; null when there is none.")
    async def conversation(self, info: Info[Context, None], chat_id: str) -> Conversation | None:
        row = await info.context.services.conversations.get(info.context.tenant_id, chat_id)
        return Conversation.from_row(row) if row is not None else None


@strawberry.type
class Mutation:
    @strawberry.mutation(
        description="Upload a grouped_chats JSON export (GraphQL multipart request)."
    )
    async def upload_chats(
        self, info: Info[Context, None], file: Upload, force_reprocess: bool = False
    ) -> UploadChatsPayload:
        try:
            report = await info.context.services.ingest.ingest(info.context.tenant_id, file.file)
        finally:
            await file.close()
        return UploadChatsPayload.from_report(report)


class PowerPulseSchema(strawberry.Schema):
    def process_errors(
        self,
        errors: list[GraphQLError],
        execution_context: ExecutionContext | None = None,
    ) -> None:
        classify_errors(errors, execution_context)


def build_schema() -> PowerPulseSchema:
    return PowerPulseSchema(
        query=Query,
        mutation=Mutation,
        config=StrawberryConfig(auto_camel_case=True),
    )

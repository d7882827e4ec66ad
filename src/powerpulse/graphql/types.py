"""GraphQL object types, inputs and enums, and how domain values become them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import strawberry
from strawberry.types import Info

from ..models import SenderKind as SenderKindModel
from ..repositories.conversations import ConversationTotals
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

    def to_domain(self) -> ConversationFilterModel:
        return ConversationFilterModel(
            start_date=self.start_date,
            end_date=self.end_date,
            agent=self.agent,
            search=self.search,
            chat_ids=tuple(self.chat_ids) if self.chat_ids is not None else None,
        )


def to_filter(selection: ConversationFilter | None) -> ConversationFilterModel | None:
    return selection.to_domain() if selection is not None else None


@strawberry.type(description="Relay page information.")
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


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
    duration_minutes: float = strawberry.field(description="Last message time − first.")
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
    conversation_id: strawberry.Private[int]

    @strawberry.field(description="Distinct agents (username, else email) who wrote.")
    async def agents(self, info: Info[Context, None]) -> list[str]:
        return await info.context.agents_loader.load(self.conversation_id)

    @strawberry.field(description="The conversation's messages in time order.")
    async def messages(
        self, info: Info[Context, None], first: int | None = 50, after: str | None = None
    ) -> MessageConnection:
        service = info.context.services.conversations
        page = await service.messages(
            info.context.tenant_id,
            self.conversation_id,
            first=50 if first is None else first,
            after=after,
        )
        return MessageConnection(
            edges=[
                MessageEdge(cursor=cursor, node=Message.from_row(row))
                for row, cursor in zip(page.rows, page.cursors, strict=True)
            ],
            page_info=PageInfo(
                has_next_page=page.has_next_page,
                has_previous_page=after is not None,
                start_cursor=page.cursors[0] if page.cursors else None,
                end_cursor=page.end_cursor,
            ),
            total_count=self.message_count,
        )

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Conversation:
        return cls(
            conversation_id=row["id"],
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
        )


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

    @classmethod
    def from_totals(cls, totals: ConversationTotals) -> Metrics:
        return cls(
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


@strawberry.type(description="A record of the upload that was skipped, and why.")
class RecordError:
    chat_id: str | None
    index: int | None = strawberry.field(description="Position of the record in its chat.")
    message: str


@strawberry.type(description="What an upload did. Received = stored + duplicates + "
                 "autoresponses + invalid.")
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
            errors=[RecordError(chat_id=e.chat_id, index=e.index, message=e.message)
                    for e in report.errors],
            errors_truncated=report.errors_truncated,
        )

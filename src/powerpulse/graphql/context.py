"""What every resolver can reach during one request."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from strawberry.dataloader import DataLoader

from ..errors import BadUserInput
from ..services.analytics import AnalyticsService
from ..services.conversations import ConversationService, MessagePageRequest, Page
from ..services.exports import ExportService
from ..services.ingest import IngestService
from ..services.jobs import JobService
from ..services.tenants import TenantDirectory
from .responses import ResponseCache

# SQLite accepts at most 500 selects in one compound statement.
MESSAGE_PAGES_PER_STATEMENT = 100


@dataclass
class Services:
    conversations: ConversationService
    analytics: AnalyticsService
    ingest: IngestService
    jobs: JobService
    exports: ExportService
    tenants: TenantDirectory


@dataclass
class Context:
    request: Any
    response: Any
    services: Services
    tenant_id: int
    request_id: str
    read_only: bool = False
    # Set by the GraphQL-over-WebSocket handshake (connection_init payload).
    connection_params: Any = None
    # The process's kept responses to conversation reads (graphql/responses.py); None: off.
    responses: ResponseCache | None = None
    topics_loader: DataLoader[int, list[str]] = field(init=False)
    # (conversation id, first, after): the messages of every conversation a response
    # holds are read in one statement per MESSAGE_PAGES_PER_STATEMENT conversations.
    messages_loader: DataLoader[MessagePageRequest, Page] = field(init=False)

    def __post_init__(self) -> None:
        conversations = self.services.conversations
        context = self

        async def load_topics(keys: list[int]) -> list[list[str]]:
            found = await conversations.topics(context.tenant_id, list(keys))
            return [found.get(key, []) for key in keys]

        async def load_messages(keys: list[MessagePageRequest]) -> list[Page | BadUserInput]:
            return await conversations.message_pages(context.tenant_id, keys)

        self.topics_loader = DataLoader(load_fn=load_topics)
        self.messages_loader = DataLoader(
            load_fn=load_messages, max_batch_size=MESSAGE_PAGES_PER_STATEMENT
        )

"""CSV exports of conversations and messages, streamed as rows are read.

Text cells that a spreadsheet would run as a formula are neutralised with a leading quote.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from ..repositories.analyses import AnalysisRepository
from ..repositories.conversations import ConversationRepository
from ..repositories.messages import MessageRepository
from .base import ReadService
from .filters import ConversationFilter, resolve_filter

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
UTF8_BOM = "\ufeff"

CONVERSATION_COLUMNS: tuple[tuple[str, str], ...] = (
    ("chat_id", "chat_id"),
    ("platform", "platform"),
    ("first_message_at", "first_message_at"),
    ("last_message_at", "last_message_at"),
    ("duration_minutes", "duration_minutes"),
    ("message_count", "message_count"),
    ("customer_message_count", "customer_message_count"),
    ("agent_message_count", "agent_message_count"),
    ("bot_message_count", "bot_message_count"),
    ("first_response_time_minutes", "first_response_time_minutes"),
    ("first_response_agent", "first_response_agent"),
    ("avg_response_time_minutes", "avg_response_time_minutes"),
    ("reply_count", "reply_count"),
    ("contact_count", "contact_count"),
    ("agents", "agents"),
    ("analysis_status", "status"),
    ("analysis_failure_reason", "failure_reason"),
    ("satisfaction_score", "satisfaction_score"),
    ("is_satisfied", "is_satisfied"),
    ("sentiment_score", "sentiment_score"),
    ("initial_sentiment", "initial_sentiment"),
    ("final_sentiment", "final_sentiment"),
    ("sentiment_label", "sentiment_label"),
    ("resolved", "resolved"),
    ("first_contact_resolution", "first_contact_resolution"),
    ("effort_score", "effort_score"),
    ("topics", "topics"),
    ("language", "language"),
    ("summary", "summary"),
    ("csi", "csi"),
    ("csi_effectiveness", "csi_effectiveness"),
    ("csi_effort", "csi_effort"),
    ("csi_efficiency", "csi_efficiency"),
    ("csi_empathy", "csi_empathy"),
    ("analyzer", "analyzer"),
    ("model", "model"),
    ("prompt_version", "prompt_version"),
    ("input_tokens", "input_tokens"),
    ("output_tokens", "output_tokens"),
    ("cost_usd", "cost_usd"),
    ("analyzed_at", "analyzed_at"),
)

MESSAGE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("chat_id", "chat_id"),
    ("message_id", "id"),
    ("external_id", "external_id"),
    ("sender", "sender"),
    ("sent_at", "sent_at"),
    ("agent_username", "agent_username"),
    ("agent_email", "agent_email"),
    ("message_type", "message_type"),
    ("via", "via"),
    ("content", "content"),
)


def cell(value: Any) -> Any:
    """One CSV cell: timestamps in ISO 8601, booleans as true/false, formulas defused."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def _render(rows: Iterable[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerows(rows)
    return buffer.getvalue()


class ExportService(ReadService):
    async def check(self, tenant_id: int, selection: ConversationFilter | None) -> None:
        """Refuse a bad filter before the first byte of a response is sent."""
        resolve_filter(selection, await self._zone(tenant_id))

    async def conversations_csv(
        self, tenant_id: int, selection: ConversationFilter | None, *, excel: bool = False
    ) -> AsyncIterator[str]:
        criteria = resolve_filter(selection, await self._zone(tenant_id))
        header = [name for name, _ in CONVERSATION_COLUMNS]
        # Connections first: when none is free, the header is not sent and the caller can
        # still answer with a status (ServiceBusy).
        async with self._database.read() as connection, self._database.read() as lookups:
            yield (UTF8_BOM if excel else "") + _render([header])
            conversations = ConversationRepository(connection, csi=self._csi)
            async for batch in conversations.stream(tenant_id, criteria):
                ids = [row["id"] for row in batch]
                agents = await ConversationRepository(lookups).agents_for(tenant_id, ids)
                topics = await AnalysisRepository(lookups).topics_for(tenant_id, ids)
                yield _render(
                    [
                        cell(_conversation_value(row, key, agents, topics))
                        for _, key in CONVERSATION_COLUMNS
                    ]
                    for row in batch
                )

    async def messages_csv(
        self, tenant_id: int, selection: ConversationFilter | None, *, excel: bool = False
    ) -> AsyncIterator[str]:
        criteria = resolve_filter(selection, await self._zone(tenant_id))
        header = [name for name, _ in MESSAGE_COLUMNS]
        async with self._database.read() as connection:
            yield (UTF8_BOM if excel else "") + _render([header])
            chosen = ConversationRepository(connection, csi=self._csi).selection(
                tenant_id, criteria
            )
            async for batch in MessageRepository(connection).stream_for_selection(chosen):
                yield _render([cell(row[key]) for _, key in MESSAGE_COLUMNS] for row in batch)


def _conversation_value(
    row: Mapping[str, Any],
    key: str,
    agents: dict[int, list[str]],
    topics: dict[int, list[str]],
) -> Any:
    if key == "agents":
        return ";".join(agents.get(row["id"], []))
    if key == "topics":
        return ";".join(topics.get(row["id"], [])) if row.get("analyzed_at") else None
    if key == "status":
        return row.get("status") or "PENDING"
    return row.get(key)

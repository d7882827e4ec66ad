"""CSV exports of conversations and messages, streamed as rows are read.

Text cells that a spreadsheet would run as a formula are neutralised with a leading quote.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from ..repositories.conversations import ConversationRepository
from ..repositories.messages import MessageRepository
from ..repositories.messages import export_kinds as message_export_kinds
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


# Rows per chunk. A chunk is rendered on the event loop, and the other requests of the
# process wait meanwhile: 2,000 conversations held it for up to 100 ms, 250 for about 25.
CONVERSATIONS_PER_CHUNK = 250
MESSAGES_PER_CHUNK = 500


def text_cell(text: str) -> str:
    """Text a spreadsheet would run as a formula gets a leading quote."""
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


def time_cell(value: Any) -> str:
    """A timestamp as the driver reads it, in ISO 8601 ("2025-08-01T10:00:00+00:00").

    PostgreSQL's driver gives an aware UTC datetime; SQLite gives the stored naive UTC text
    ("2025-08-01 10:00:00.000000"), rewritten the way datetime.isoformat() writes it.
    """
    if isinstance(value, datetime):
        return value.isoformat()
    fraction = value[20:26]
    if fraction and fraction != "000000":
        return f"{value[:10]}T{value[11:19]}.{fraction}+00:00"
    return f"{value[:10]}T{value[11:19]}+00:00"


def flag_cell(flag: Any) -> str:
    return "true" if flag else "false"


CELLS: dict[str, Callable[[Any], Any]] = {"text": text_cell, "time": time_cell, "flag": flag_cell}


def renderer(kinds: Sequence[str]) -> Callable[[Iterable[Sequence[Any]]], str]:
    """CSV text of rows read for an export (repositories' export_rows and export_kinds).

    `kinds` says what each column holds ("text", "time", "flag" or "value"): text is
    checked for formulas, times are written in ISO 8601, flags as true/false; numbers go to
    the csv module as they are, and an empty value (None) is an empty cell.
    """
    converted = [(index, CELLS[kind]) for index, kind in enumerate(kinds) if kind in CELLS]

    def cells(row: Sequence[Any]) -> list[Any]:
        values = list(row)
        for index, convert in converted:
            value = values[index]
            if value is not None:
                values[index] = convert(value)
        return values

    def render(rows: Iterable[Sequence[Any]]) -> str:
        return _render(map(cells, rows))

    return render


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
        keys = [key for _, key in CONVERSATION_COLUMNS]
        # The connection first: when none is free, the header is not sent and the caller
        # can still answer with a status (ServiceBusy).
        async with self._database.read(consistent=True) as connection:
            yield (UTF8_BOM if excel else "") + _render([header])
            conversations = ConversationRepository(connection, csi=self._csi)
            render = renderer(conversations.export_kinds(keys))
            async for batch in conversations.export_rows(
                tenant_id, criteria, keys, batch_size=CONVERSATIONS_PER_CHUNK
            ):
                yield render(batch)

    async def messages_csv(
        self, tenant_id: int, selection: ConversationFilter | None, *, excel: bool = False
    ) -> AsyncIterator[str]:
        criteria = resolve_filter(selection, await self._zone(tenant_id))
        header = [name for name, _ in MESSAGE_COLUMNS]
        keys = [key for _, key in MESSAGE_COLUMNS]
        render = renderer(message_export_kinds(keys))
        async with self._database.read(consistent=True) as connection:
            yield (UTF8_BOM if excel else "") + _render([header])
            chosen = ConversationRepository(connection, csi=self._csi).selection(
                tenant_id, criteria
            )
            async for batch in MessageRepository(connection).export_rows(
                chosen, keys, batch_size=MESSAGES_PER_CHUNK
            ):
                yield render(batch)

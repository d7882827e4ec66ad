"""From an export stream to validated, measured chats, batch by batch.

Everything here is pure computation on the file, no database: it runs in a worker thread
while the previous batch is being stored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from operator import attrgetter
from typing import IO, Any, NamedTuple

from ..kinds import SenderKind
from ..services.conversation_metrics import ConversationMeasurements, measure_conversation
from .records import (
    MAX_CHAT_ID_LENGTH,
    InvalidRecord,
    NormalisedMessage,
    clean_text,
    is_autoresponse,
    normalise_record,
)
from .stream import iter_chats


@dataclass(slots=True)
class RecordError:
    chat_id: str | None
    index: int | None
    message: str


@dataclass(slots=True)
class UploadReport:
    conversations_received: int = 0
    messages_received: int = 0
    messages_stored: int = 0
    duplicates_skipped: int = 0
    autoresponses_filtered: int = 0
    invalid_records: int = 0
    conversations_created: int = 0
    conversations_updated: int = 0
    errors: list[RecordError] = field(default_factory=list)
    errors_truncated: bool = False
    job_id: int | None = None
    analysis_queued: int = 0
    analysis_cached: int = 0
    analysis_forced: int = 0


class ParsedChat(NamedTuple):
    """One chat array of the file: its valid messages, without repeats, in file order.

    `measured` is the chat measured from these messages alone, in time order. It is the
    chat's measurement when nothing else is known of it (a new chat, once in its batch);
    otherwise storage re-measures it together with what is already stored.
    """

    chat_id: str
    messages: list[NormalisedMessage]
    measured: ConversationMeasurements | None


def measure_in_time_order(
    messages: list[NormalisedMessage], session_gap: timedelta
) -> ConversationMeasurements:
    """Measure messages given in file order: sorted by time, ties keep file order."""
    ordered = sorted(messages, key=_SENT_AT)  # a stable sort: ties stay in file order
    return measure_conversation(ordered, session_gap=session_gap)


_SENT_AT = attrgetter("sent_at")
_BOT = SenderKind.BOT


@dataclass(frozen=True, slots=True)
class ReadOptions:
    """How an upload is read and packed; plain values, so it can cross to another process."""

    max_message_chars: int
    max_reported_errors: int
    autoresponse_patterns: tuple[str, ...]
    session_gap: timedelta
    batch_chats: int
    # A UTC datetime in the database's storage form (powerpulse.kinds.storage_timestamps).
    timestamp: Callable[[datetime], Any] | None
    # Messages packed in PostgreSQL's binary COPY form (ingest.pgcopy; needs timestamp None).
    copy_rows: bool = False

    def reader(self, stream: IO[bytes], report: UploadReport) -> ChatReader:
        return ChatReader(
            stream,
            max_message_chars=self.max_message_chars,
            max_reported_errors=self.max_reported_errors,
            autoresponse_patterns=self.autoresponse_patterns,
            session_gap=self.session_gap,
            report=report,
        )


class ChatReader:
    """Pulls validated chats off the stream in batches of chats."""

    def __init__(
        self,
        stream: IO[bytes],
        *,
        max_message_chars: int,
        max_reported_errors: int,
        autoresponse_patterns: Iterable[str],
        session_gap: timedelta,
        report: UploadReport | None = None,
    ) -> None:
        self._chats: Iterator[tuple[str, list[Any]]] = iter_chats(stream)
        self._max_message_chars = max_message_chars
        self._max_reported_errors = max_reported_errors
        self._patterns = [pattern.casefold() for pattern in autoresponse_patterns]
        self._session_gap = session_gap
        self.report = report if report is not None else UploadReport()

    def _reject(self, chat_id: str | None, index: int | None, reason: str) -> None:
        report = self.report
        report.invalid_records += 1
        if len(report.errors) < self._max_reported_errors:
            report.errors.append(RecordError(chat_id, index, reason))
        else:
            report.errors_truncated = True

    def next_batch(self, size: int) -> list[ParsedChat]:
        """Up to `size` chats; an empty list at the end of the file.

        Raises InvalidUpload when the file itself is broken.
        """
        batch: list[ParsedChat] = []
        report = self.report
        max_chars = self._max_message_chars
        patterns = self._patterns
        for raw_chat_id, records in self._chats:
            report.conversations_received += 1
            report.messages_received += len(records)
            chat_id = clean_text(raw_chat_id).strip()
            if not chat_id or len(chat_id) > MAX_CHAT_ID_LENGTH:
                reason = (
                    "chat id is empty"
                    if not chat_id
                    else f"chat id is longer than {MAX_CHAT_ID_LENGTH} characters"
                )
                shown = chat_id[:60] or None
                for index in range(len(records)):
                    self._reject(shown, index, reason)
                continue
            kept: list[NormalisedMessage] = []
            keys: set[str] = set()
            for index, record in enumerate(records):
                try:
                    message = normalise_record(chat_id, index, record, max_message_chars=max_chars)
                except InvalidRecord as exc:
                    self._reject(chat_id, index, str(exc))
                    continue
                # Only bot messages can be autoresponses: the test is skipped for the rest.
                if message.sender is _BOT and is_autoresponse(message, patterns):
                    report.autoresponses_filtered += 1
                    continue
                key = message.message_key
                if key in keys:
                    report.duplicates_skipped += 1
                    continue
                keys.add(key)
                kept.append(message)
            measured = measure_in_time_order(kept, self._session_gap) if kept else None
            batch.append(ParsedChat(chat_id, kept, measured))
            if len(batch) >= size:
                break
        return batch

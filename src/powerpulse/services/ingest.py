"""Ingest: stream an export, drop what must be dropped, store what is new, re-measure chats.

One upload is one transaction: a file that turns out to be broken halfway stores nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import IO, Any

from ..db import Database
from ..ingest.records import (
    MAX_CHAT_ID_LENGTH,
    InvalidRecord,
    NormalisedMessage,
    clean_text,
    is_autoresponse,
    normalise_record,
)
from ..ingest.stream import iter_chats
from ..models import AnalysisStatus, SenderKind, utcnow
from ..repositories.analyses import AnalysisRepository
from ..repositories.conversations import ConversationRepository
from ..repositories.jobs import JobRepository
from ..repositories.messages import MessageRepository
from ..repositories.tenants import TenantRepository
from ..settings import Settings
from .conversation_metrics import measure_conversation
from .tenants import TenantConfig, TenantDirectory


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


@dataclass(slots=True)
class ParsedChat:
    chat_id: str
    messages: list[NormalisedMessage]


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message already in the database, as metric computation sees it."""

    sender: SenderKind
    sent_at: datetime
    agent: str | None


ProgressCallback = Callable[[UploadReport], None]


class ChatReader:
    """Pulls validated chats off the stream in batches; runs in a worker thread."""

    def __init__(
        self,
        stream: IO[bytes],
        settings: Settings,
        report: UploadReport,
        *,
        autoresponse_patterns: Iterable[str] | None = None,
    ) -> None:
        self._chats: Iterator[tuple[str, list[Any]]] = iter_chats(stream)
        self._settings = settings
        self._report = report
        self._patterns = list(
            settings.autoresponse_patterns
            if autoresponse_patterns is None
            else autoresponse_patterns
        )

    def _reject(self, chat_id: str | None, index: int | None, reason: str) -> None:
        report = self._report
        report.invalid_records += 1
        if len(report.errors) < self._settings.max_reported_errors:
            report.errors.append(RecordError(chat_id, index, reason))
        else:
            report.errors_truncated = True

    def next_batch(self, size: int) -> list[ParsedChat]:
        batch: list[ParsedChat] = []
        report = self._report
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
            for index, record in enumerate(records):
                try:
                    message = normalise_record(
                        chat_id, index, record, max_message_chars=self._settings.max_message_chars
                    )
                except InvalidRecord as exc:
                    self._reject(chat_id, index, str(exc))
                    continue
                if is_autoresponse(message, self._patterns):
                    report.autoresponses_filtered += 1
                    continue
                kept.append(message)
            batch.append(ParsedChat(chat_id, kept))
            if len(batch) >= size:
                break
        return batch


class IngestService:
    def __init__(
        self,
        database: Database,
        settings: Settings,
        *,
        analyzer_fingerprint: str | Callable[[TenantConfig], str],
        on_work_queued: Callable[[], None] | None = None,
        tenants: TenantDirectory | None = None,
    ) -> None:
        self._database = database
        self._settings = settings
        # The fingerprint can depend on the tenant (its own topic taxonomy, say).
        self._fingerprint = analyzer_fingerprint
        self._on_work_queued = on_work_queued
        self._tenants = tenants or TenantDirectory(database, settings)

    def _fingerprint_for(self, tenant: TenantConfig) -> str:
        if isinstance(self._fingerprint, str):
            return self._fingerprint
        return self._fingerprint(tenant)

    async def ingest(
        self,
        tenant_id: int,
        stream: IO[bytes],
        *,
        force_reprocess: bool = False,
        progress: ProgressCallback | None = None,
    ) -> UploadReport:
        """Store an export and queue its analysis job, all in one transaction.

        Raises InvalidUpload (and stores nothing) for a broken file.
        """
        report = UploadReport()
        tenant = await self._tenants.get(tenant_id)
        fingerprint = self._fingerprint_for(tenant)
        reader = ChatReader(
            stream,
            self._settings,
            report,
            autoresponse_patterns=tenant.autoresponse_patterns,
        )
        batch_size = self._settings.ingest_batch_chats
        async with self._database.write() as connection:
            await TenantRepository(connection).lock_for_ingest(tenant_id)
            jobs = JobRepository(connection)
            job_id = await jobs.create(tenant_id, analyzer=fingerprint)
            report.job_id = job_id
            store = _BatchStore(
                tenant_id=tenant_id,
                job_id=job_id,
                force=force_reprocess,
                fingerprint=fingerprint,
                session_gap=timedelta(hours=tenant.session_gap_hours),
                conversations=ConversationRepository(connection),
                messages=MessageRepository(connection),
                analyses=AnalysisRepository(connection),
                jobs=jobs,
                report=report,
            )
            while True:
                batch = await asyncio.to_thread(reader.next_batch, batch_size)
                if not batch:
                    break
                await store.store(batch)
                if progress is not None:
                    progress(report)
            await jobs.set_totals(
                tenant_id,
                job_id,
                total=report.analysis_queued + report.analysis_cached,
                cached=report.analysis_cached,
                forced=report.analysis_forced,
            )
        if report.analysis_queued and self._on_work_queued is not None:
            self._on_work_queued()
        return report


@dataclass(slots=True)
class _BatchStore:
    """Stores one upload's batches inside the upload's transaction."""

    tenant_id: int
    job_id: int
    force: bool
    fingerprint: str
    session_gap: timedelta
    conversations: ConversationRepository
    messages: MessageRepository
    analyses: AnalysisRepository
    jobs: JobRepository
    report: UploadReport

    async def store(self, batch: list[ParsedChat]) -> None:
        changed = await self._store_messages(batch)
        await self._queue_analysis(changed)

    async def _queue_analysis(self, touched: dict[int, bool]) -> None:
        """Queue changed conversations; unchanged ones are cached unless forced or unjudged.

        `touched` maps every conversation of the batch to whether it got new messages.
        """
        report = self.report
        unchanged = [cid for cid, changed in touched.items() if not changed]
        states = (
            await self.analyses.state_of(self.tenant_id, unchanged)
            if unchanged and not self.force
            else {}
        )
        queue: list[tuple[int, bool]] = []
        pending: list[int] = []
        for conversation_id, changed in touched.items():
            if self.force:
                queue.append((conversation_id, True))
                report.analysis_forced += 1
            elif changed:
                queue.append((conversation_id, False))
            else:
                state = states.get(conversation_id)
                if (
                    state is not None
                    and state["status"] == AnalysisStatus.DONE.value
                    and state["fingerprint"] == self.fingerprint
                ):
                    report.analysis_cached += 1
                    continue
                queue.append((conversation_id, False))
            if changed or conversation_id not in states:
                pending.append(conversation_id)
        report.analysis_queued += len(queue)
        await self.analyses.mark_pending(self.tenant_id, pending)
        await self.jobs.add_tasks(self.tenant_id, self.job_id, queue)

    async def _store_messages(self, batch: list[ParsedChat]) -> dict[int, bool]:
        """Store new messages and re-measure their chats; returns conversation -> changed."""
        tenant_id = self.tenant_id
        conversations = self.conversations
        messages = self.messages
        report = self.report
        # A chat id can repeat within a file; its arrays are one chat.
        chats: dict[str, list[NormalisedMessage]] = {}
        for chat in batch:
            chats.setdefault(chat.chat_id, []).extend(chat.messages)

        existing_ids = await conversations.ids_by_chat_id(tenant_id, chats)
        stored: dict[int, list[tuple[tuple[Any, ...], StoredMessage]]] = {}
        known_keys: dict[int, set[str]] = {}
        for row in await messages.facts_for(tenant_id, list(existing_ids.values())):
            conversation_id = row["conversation_id"]
            stored.setdefault(conversation_id, []).append(
                (
                    (row["sent_at"], 0, row["id"]),
                    StoredMessage(
                        SenderKind(row["sender"]),
                        row["sent_at"],
                        row["agent_username"] or row["agent_email"],
                    ),
                )
            )
            known_keys.setdefault(conversation_id, set()).add(row["message_key"])

        session_gap = self.session_gap
        now = utcnow()
        new_rows: list[dict[str, Any]] = []
        changed_rows: list[dict[str, Any]] = []
        new_messages: dict[str, list[NormalisedMessage]] = {}
        details: dict[str, Any] = {}
        for chat_id, incoming in chats.items():
            conversation_id = existing_ids.get(chat_id)
            seen = known_keys.get(conversation_id, set()) if conversation_id else set()
            fresh: list[NormalisedMessage] = []
            for message in incoming:
                if message.message_key in seen:
                    report.duplicates_skipped += 1
                    continue
                seen.add(message.message_key)
                fresh.append(message)
            if not fresh:
                continue
            timeline: list[tuple[tuple[Any, ...], Any]] = list(
                stored.get(conversation_id, []) if conversation_id else []
            )
            # `fresh` is in file order (a repeated chat key's arrays one after the other), so
            # its position, not the index within one array, breaks ties between equal times.
            timeline.extend(((m.sent_at, 1, position), m) for position, m in enumerate(fresh))
            timeline.sort(key=lambda item: item[0])
            measured = measure_conversation(
                [message for _, message in timeline], session_gap=session_gap
            )
            row = {
                "platform": next((m.platform for m in fresh if m.platform), None),
                "message_count": measured.message_count,
                "customer_message_count": measured.customer_message_count,
                "agent_message_count": measured.agent_message_count,
                "bot_message_count": measured.bot_message_count,
                "first_message_at": measured.first_message_at,
                "last_message_at": measured.last_message_at,
                "duration_minutes": measured.duration_minutes,
                "first_response_time_minutes": measured.first_response_time_minutes,
                "first_response_agent": measured.first_response_agent,
                "avg_response_time_minutes": measured.avg_response_time_minutes,
                "reply_count": measured.reply_count,
                "contact_count": measured.contact_count,
                "updated_at": now,
            }
            if conversation_id is None:
                new_rows.append({"chat_id": chat_id, **row})
            else:
                changed_rows.append({"id": conversation_id, **row})
            # Stored in file order: ids break ties when the chat is re-measured later.
            new_messages[chat_id] = fresh
            details[chat_id] = measured

        created = await conversations.insert_many(tenant_id, new_rows)
        await conversations.update_measurements(tenant_id, changed_rows)
        ids = {**existing_ids, **created}

        message_rows: list[dict[str, Any]] = []
        agent_rows: list[dict[str, Any]] = []
        reply_rows: list[dict[str, Any]] = []
        for chat_id, fresh in new_messages.items():
            conversation_id = ids[chat_id]
            message_rows.extend(
                {
                    "conversation_id": conversation_id,
                    "message_key": m.message_key,
                    "external_id": m.external_id,
                    "sender": m.sender.value,
                    "content": m.content,
                    "sent_at": m.sent_at,
                    "agent_username": m.agent_username,
                    "agent_email": m.agent_email,
                    "message_type": m.message_type,
                    "via": m.via,
                }
                for m in fresh
            )
            measured = details[chat_id]
            agent_rows.extend(
                {"conversation_id": conversation_id, "agent": agent, "message_count": count}
                for agent, count in measured.agent_message_counts.items()
            )
            reply_rows.extend(
                {
                    "conversation_id": conversation_id,
                    "agent": event.agent,
                    "waiting_since": event.waiting_since,
                    "replied_at": event.replied_at,
                    "response_minutes": event.response_minutes,
                }
                for event in measured.reply_events
            )
        await messages.insert_many(tenant_id, message_rows)
        await conversations.replace_details(
            tenant_id, [row["id"] for row in changed_rows], agent_rows, reply_rows
        )
        report.messages_stored += len(message_rows)
        report.conversations_created += len(created)
        report.conversations_updated += len(changed_rows)
        return {ids[chat_id]: chat_id in new_messages for chat_id in chats if chat_id in ids}

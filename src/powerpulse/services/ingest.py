"""Ingest: stream an export, drop what must be dropped, store what is new, re-measure chats.

One upload is one transaction: a file that turns out to be broken halfway stores nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import IO, Any

from ..db import Database
from ..ingest.reader import ChatReader, ParsedChat, UploadReport
from ..ingest.records import STORED_FIELDS_START, NormalisedMessage
from ..models import AnalysisStatus, SenderKind, utcnow
from ..repositories.analyses import AnalysisRepository
from ..repositories.conversations import ConversationRepository
from ..repositories.jobs import JobRepository
from ..repositories.messages import MessageRepository
from ..repositories.tenants import TenantRepository
from ..settings import Settings
from .conversation_metrics import ConversationMeasurements, measure_conversation
from .tenants import TenantConfig, TenantDirectory


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message already in the database, as metric computation sees it."""

    sender: SenderKind
    sent_at: datetime
    agent: str | None


ProgressCallback = Callable[[UploadReport], None]


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
        session_gap = timedelta(hours=tenant.session_gap_hours)
        reader = ChatReader(
            stream,
            max_message_chars=self._settings.max_message_chars,
            max_reported_errors=self._settings.max_reported_errors,
            autoresponse_patterns=tenant.autoresponse_patterns,
            session_gap=session_gap,
            report=report,
        )
        batch_size = self._settings.ingest_batch_chats
        # The next batch is read while the current one is stored.
        pending = asyncio.ensure_future(asyncio.to_thread(reader.next_batch, batch_size))
        try:
            async with self._database.write(bulk=True) as connection:
                tenants = TenantRepository(connection)
                await tenants.lock_for_ingest(tenant_id)
                # Every conversation and analysis row this upload writes carries it.
                version = await tenants.begin_change(tenant_id)
                jobs = JobRepository(connection)
                job_id = await jobs.create(tenant_id, analyzer=fingerprint)
                report.job_id = job_id
                store = _BatchStore(
                    tenant_id=tenant_id,
                    job_id=job_id,
                    version=version,
                    force=force_reprocess,
                    fingerprint=fingerprint,
                    session_gap=session_gap,
                    conversations=ConversationRepository(connection),
                    messages=MessageRepository(connection),
                    analyses=AnalysisRepository(connection),
                    jobs=jobs,
                    report=report,
                )
                while batch := await pending:
                    pending = asyncio.ensure_future(
                        asyncio.to_thread(reader.next_batch, batch_size)
                    )
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
        finally:
            # A read still running finishes before the caller closes the stream.
            await asyncio.gather(pending, return_exceptions=True)
        if report.analysis_queued and self._on_work_queued is not None:
            self._on_work_queued()
        return report


@dataclass(slots=True)
class _BatchStore:
    """Stores one upload's batches inside the upload's transaction."""

    tenant_id: int
    job_id: int
    version: int
    force: bool
    fingerprint: str
    session_gap: timedelta
    conversations: ConversationRepository
    messages: MessageRepository
    analyses: AnalysisRepository
    jobs: JobRepository
    report: UploadReport

    async def store(self, batch: list[ParsedChat]) -> None:
        changed, created = await self._store_messages(batch)
        await self._queue_analysis(changed, created)

    async def _queue_analysis(self, touched: dict[int, bool], created: set[int]) -> None:
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
        await self.analyses.mark_pending(
            self.tenant_id, pending, created=created, version=self.version
        )
        await self.jobs.add_tasks(self.tenant_id, self.job_id, queue)

    async def _store_messages(self, batch: list[ParsedChat]) -> tuple[dict[int, bool], set[int]]:
        """Store new messages and re-measure their chats.

        Returns conversation -> whether it got new messages, and the conversations created.
        """
        tenant_id = self.tenant_id
        conversations = self.conversations
        report = self.report
        # A chat id can repeat within a file; its arrays are one chat.
        chats: dict[str, list[ParsedChat]] = {}
        for chat in batch:
            chats.setdefault(chat.chat_id, []).append(chat)

        existing_ids = await conversations.ids_by_chat_id(tenant_id, chats)
        stored = await self._stored_facts(list(existing_ids.values()))

        now = utcnow()
        new_rows: list[dict[str, Any]] = []
        changed_rows: list[dict[str, Any]] = []
        new_messages: dict[str, list[NormalisedMessage]] = {}
        details: dict[str, ConversationMeasurements] = {}
        for chat_id, parts in chats.items():
            conversation_id = existing_ids.get(chat_id)
            if conversation_id is None and len(parts) == 1:
                # The common case: a chat seen for the first time, measured while read.
                fresh = parts[0].messages
                measured = parts[0].measured
            else:
                fresh, measured = self._remeasure(parts, stored.get(conversation_id))
            if not fresh or measured is None:
                continue
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

        created = await conversations.insert_many(tenant_id, new_rows, version=self.version)
        await conversations.update_measurements(tenant_id, changed_rows, version=self.version)
        ids = {**existing_ids, **created}

        message_rows: list[tuple[Any, ...]] = []
        agent_rows: list[tuple[Any, ...]] = []
        reply_rows: list[tuple[Any, ...]] = []
        for chat_id, fresh in new_messages.items():
            conversation_id = ids[chat_id]
            # A message's stored fields come last, in MessageRepository.INSERT_COLUMNS order.
            message_rows.extend((conversation_id, *m[STORED_FIELDS_START:]) for m in fresh)
            measured = details[chat_id]
            agent_rows.extend(
                (conversation_id, agent, count)
                for agent, count in measured.agent_message_counts.items()
            )
            # Reply events are in reply_events' column order (ReplyEventFacts).
            reply_rows.extend((conversation_id, *event) for event in measured.reply_events)
        await self.messages.insert_many(tenant_id, message_rows)
        await conversations.replace_details(
            tenant_id, [row["id"] for row in changed_rows], agent_rows, reply_rows
        )
        report.messages_stored += len(message_rows)
        report.conversations_created += len(created)
        report.conversations_updated += len(changed_rows)
        touched = {ids[chat_id]: chat_id in new_messages for chat_id in chats if chat_id in ids}
        return touched, set(created.values())

    async def _stored_facts(self, conversation_ids: list[int]) -> dict[int, _StoredChat]:
        """What is already stored of these conversations: messages in time order, keys."""
        stored: dict[int, _StoredChat] = {}
        if not conversation_ids:
            return stored
        for row in await self.messages.facts_for(self.tenant_id, conversation_ids):
            chat = stored.get(row["conversation_id"])
            if chat is None:
                chat = stored[row["conversation_id"]] = _StoredChat([], set())
            chat.timeline.append(
                (
                    (row["sent_at"], 0, row["id"]),
                    StoredMessage(
                        SenderKind(row["sender"]),
                        row["sent_at"],
                        row["agent_username"] or row["agent_email"],
                    ),
                )
            )
            chat.keys.add(row["message_key"])
        return stored

    def _remeasure(
        self, parts: list[ParsedChat], stored: _StoredChat | None
    ) -> tuple[list[NormalisedMessage], ConversationMeasurements | None]:
        """New messages of a chat already stored, or repeated in the batch, and its measure.

        Stored messages come first in time ties (they were stored earlier); new ones follow
        in file order (a repeated chat key's arrays one after the other).
        """
        seen = set(stored.keys) if stored else set()
        fresh: list[NormalisedMessage] = []
        for part in parts:
            for message in part.messages:
                if message.message_key in seen:
                    self.report.duplicates_skipped += 1
                    continue
                seen.add(message.message_key)
                fresh.append(message)
        if not fresh:
            return fresh, None
        timeline: list[tuple[tuple[Any, ...], Any]] = list(stored.timeline if stored else [])
        timeline.extend(((m.sent_at, 1, position), m) for position, m in enumerate(fresh))
        timeline.sort(key=_time_key)
        measured = measure_conversation(
            [message for _, message in timeline], session_gap=self.session_gap
        )
        return fresh, measured


@dataclass(slots=True)
class _StoredChat:
    timeline: list[tuple[tuple[Any, ...], StoredMessage]]
    keys: set[str]


def _time_key(item: tuple[tuple[Any, ...], Any]) -> tuple[Any, ...]:
    return item[0]

"""Ingest: stream an export, drop what must be dropped, store what is new, re-measure chats.

One upload is one transaction: a file that turns out to be broken halfway stores nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import IO, Any, NamedTuple

from ..db import Database
from ..ingest.batches import open_source
from ..ingest.packing import (
    ROW_AGENT_EMAIL,
    ROW_AGENT_USERNAME,
    ROW_SENDER,
    ROW_SENT_AT,
    PackedChat,
    TimestampForm,
    pack_measured,
    platform_of,
    row_key,
    row_values,
)
from ..ingest.reader import ReadOptions, UploadReport
from ..kinds import from_storage_timestamp, storage_timestamps
from ..models import AnalysisStatus, SenderKind, utcnow
from ..repositories.analyses import AnalysisRepository
from ..repositories.conversations import ConversationRepository
from ..repositories.jobs import JobRepository
from ..repositories.messages import MessageRepository
from ..repositories.tenants import TenantRepository
from ..settings import Settings
from .conversation_metrics import ConversationMeasurements, measure_conversation
from .tenants import TenantConfig, TenantDirectory


class StoredMessage(NamedTuple):
    """A message already in the database, as metric computation sees it (a tuple: a chat
    that continues in the next export has all its stored messages made into these)."""

    sender: SenderKind
    sent_at: datetime
    agent: str | None


# A chat's messages as metrics see them, each after its place in time order.
_Timeline = list[tuple[tuple[Any, ...], StoredMessage]]

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
        settings = self._settings
        dialect = self._database.engine.dialect.name
        timestamp = storage_timestamps(dialect)
        options = ReadOptions(
            max_message_chars=settings.max_message_chars,
            max_reported_errors=settings.max_reported_errors,
            autoresponse_patterns=tuple(tenant.autoresponse_patterns),
            session_gap=session_gap,
            batch_chats=settings.ingest_batch_chats,
            timestamp=timestamp,
            # PostgreSQL stores messages by binary COPY: the reader packs them that way.
            copy_rows=dialect == "postgresql",
        )
        # The next batch is read while the current one is stored.
        source = await open_source(
            stream,
            options,
            report,
            process_min_bytes=(
                settings.ingest_process_min_mib << 20 if settings.ingest_parse_process else None
            ),
        )
        try:
            async with self._database.write(bulk=True) as connection:
                tenants = TenantRepository(connection)
                await tenants.lock_for_ingest(tenant_id)
                # Every conversation and analysis row this upload writes carries it.
                version = await tenants.begin_change(tenant_id)
                jobs = JobRepository(connection)
                job_id = await jobs.create(tenant_id, analyzer=fingerprint)
                report.job_id = job_id
                conversations = ConversationRepository(connection)
                # Only uploads create conversations, and a tenant's uploads take turns: in
                # a tenant that has none, a chat is stored already only if this upload
                # created it, and the others need not be looked up.
                created_here = None if await conversations.any_for(tenant_id) else _ChatSet()
                store = _BatchStore(
                    tenant_id=tenant_id,
                    job_id=job_id,
                    version=version,
                    force=force_reprocess,
                    fingerprint=fingerprint,
                    session_gap=session_gap,
                    timestamp=timestamp,
                    copy=options.copy_rows,
                    created_here=created_here,
                    conversations=conversations,
                    messages=MessageRepository(connection),
                    analyses=AnalysisRepository(connection),
                    jobs=jobs,
                    report=report,
                )
                async for batch in source:
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
            await source.aclose()
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
    timestamp: TimestampForm
    # Agents and reply events packed for PostgreSQL's COPY, as the reader packs them.
    copy: bool
    # The chats this upload created, when the tenant had none before it (None otherwise).
    created_here: _ChatSet | None
    conversations: ConversationRepository
    messages: MessageRepository
    analyses: AnalysisRepository
    jobs: JobRepository
    report: UploadReport

    async def store(self, batch: list[PackedChat]) -> None:
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

    async def _store_messages(self, batch: list[PackedChat]) -> tuple[dict[int, bool], set[int]]:
        """Store new messages and re-measure their chats.

        Returns conversation -> whether it got new messages, and the conversations created.
        """
        tenant_id = self.tenant_id
        conversations = self.conversations
        report = self.report
        # A chat id can repeat within a file; its arrays are one chat.
        chats: dict[str, list[PackedChat]] = {}
        for chat in batch:
            chats.setdefault(chat.chat_id, []).append(chat)

        created_here = self.created_here
        existing_ids = await conversations.ids_by_chat_id(
            tenant_id,
            chats if created_here is None else [c for c in chats if c in created_here],
        )
        # The new messages of each chat stored already or repeated in the batch. Only the
        # keys of what is stored are read for that: a file sent again, whole or as the
        # overlap of consecutive exports, has nothing new in most chats.
        stored_keys = await self.messages.keys_for(tenant_id, list(existing_ids.values()))
        fresh: dict[str, tuple[list[Any], str | None]] = {}
        for chat_id, parts in chats.items():
            conversation_id = existing_ids.get(chat_id)
            if conversation_id is None and len(parts) == 1:
                continue  # the common case, below
            seen = set() if conversation_id is None else stored_keys.get(conversation_id, set())
            rows, platform = self._new_rows(parts, seen)
            if rows:
                fresh[chat_id] = (rows, platform)
        # What metric computation needs of the stored messages, for the chats that changed.
        timelines = await self._stored_timelines(
            [existing_ids[chat_id] for chat_id in fresh if chat_id in existing_ids]
        )

        now = utcnow()
        stamp = now if self.timestamp is None else self.timestamp(now)
        # In batch order, each with its conversation id (None: created below).
        written: list[tuple[int | None, PackedChat]] = []
        new_chats: list[PackedChat] = []
        changed_ids: list[int] = []
        changed_rows: list[dict[str, Any]] = []
        for chat_id, parts in chats.items():
            conversation_id = existing_ids.get(chat_id)
            if conversation_id is None and len(parts) == 1:
                # The common case: a chat seen for the first time, measured while read.
                chat = parts[0]
                if chat.measurement is not None:
                    new_chats.append(chat)
                    written.append((None, chat))
                continue
            if chat_id not in fresh:
                continue  # nothing new
            rows, platform = fresh[chat_id]
            chat, measured = self._remeasure(
                chat_id, rows, platform, timelines.get(conversation_id, [])
            )
            written.append((conversation_id, chat))
            if conversation_id is None:
                new_chats.append(chat)
                continue
            changed_ids.append(conversation_id)
            changed_rows.append(
                {
                    "id": conversation_id,
                    "platform": platform_of(chat.measurement),
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
            )

        created = await conversations.insert_many(
            tenant_id,
            [(chat.chat_id, chat.measurement) for chat in new_chats if chat.measurement],
            version=self.version,
            updated_at=stamp,
        )
        await conversations.update_measurements(tenant_id, changed_rows, version=self.version)

        stored_chats = [
            (created[chat.chat_id] if conversation_id is None else conversation_id, chat)
            for conversation_id, chat in written
        ]
        # Stored in file order: ids break ties when the chat is re-measured later.
        await self.messages.insert_chats(
            tenant_id, [(conversation_id, chat.rows) for conversation_id, chat in stored_chats]
        )
        await conversations.replace_details(
            tenant_id,
            changed_ids,
            [(conversation_id, chat.agents) for conversation_id, chat in stored_chats],
            # Reply events are in reply_events' column order (ReplyEventFacts).
            [(conversation_id, chat.replies) for conversation_id, chat in stored_chats],
        )
        if created_here is not None:
            created_here.update(created)
        report.messages_stored += sum(len(chat.rows) for _, chat in stored_chats)
        report.conversations_created += len(created)
        report.conversations_updated += len(changed_rows)
        ids = {**existing_ids, **created}
        grown = {chat.chat_id for _, chat in stored_chats}
        touched = {ids[chat_id]: chat_id in grown for chat_id in chats if chat_id in ids}
        return touched, set(created.values())

    async def _stored_timelines(self, conversation_ids: list[int]) -> dict[int, _Timeline]:
        """The stored messages of these conversations, in time order, as metrics see them."""
        stored: dict[int, _Timeline] = {}
        if not conversation_ids:
            return stored
        senders = _SENDERS
        for (
            message_id,
            conversation_id,
            sender,
            stored_at,
            username,
            email,
        ) in await self.messages.facts_for(self.tenant_id, conversation_ids):
            sent_at = from_storage_timestamp(stored_at)
            timeline = stored.get(conversation_id)
            if timeline is None:
                timeline = stored[conversation_id] = []
            timeline.append(
                (
                    (sent_at, 0, message_id),
                    StoredMessage(senders[sender], sent_at, username or email),
                )
            )
        return stored

    def _new_rows(self, parts: list[PackedChat], seen: set[str]) -> tuple[list[Any], str | None]:
        """The rows (as packed) of a chat's arrays whose keys are not in `seen` (the stored
        ones; a key repeated in the arrays counts once), and the chat's platform: the first
        array's that has one. Adds the keys to `seen`, and counts the duplicates skipped."""
        fresh: list[Any] = []
        platform: str | None = None
        for part in parts:
            if platform is None:
                platform = platform_of(part.measurement)
            for packed in part.rows:
                key = row_key(packed)
                if key in seen:
                    self.report.duplicates_skipped += 1
                    continue
                seen.add(key)
                fresh.append(packed)
        return fresh, platform

    def _remeasure(
        self, chat_id: str, fresh: list[Any], platform: str | None, stored: _Timeline
    ) -> tuple[PackedChat, ConversationMeasurements]:
        """The new messages of a chat already stored, or repeated in the batch, measured
        together with what is stored.

        Stored messages come first in time ties (they were stored earlier); new ones follow
        in file order (a repeated chat key's arrays one after the other).
        """
        timeline: _Timeline = list(stored)
        for position, packed in enumerate(fresh):
            row = row_values(packed)
            sent_at = from_storage_timestamp(row[ROW_SENT_AT])
            message = StoredMessage(
                row[ROW_SENDER], sent_at, row[ROW_AGENT_USERNAME] or row[ROW_AGENT_EMAIL]
            )
            timeline.append(((sent_at, 1, position), message))
        timeline.sort(key=_time_key)
        measured = measure_conversation(
            [message for _, message in timeline], session_gap=self.session_gap
        )
        return (
            pack_measured(chat_id, fresh, platform, measured, self.timestamp, copy=self.copy),
            measured,
        )


class _ChatSet:
    """A set of chat ids that may answer yes for one it does not hold, never no for one
    it does: one bit per hash value, in a fixed 4 MiB whatever the upload's size.

    It holds the chats an upload created; a chat it seems to hold is looked up. With the
    122k chats of an upload of 1M messages, about one chat in 270 is looked up needlessly.
    """

    _BITS = 1 << 25

    __slots__ = ("_bits",)

    def __init__(self) -> None:
        self._bits = bytearray(self._BITS >> 3)

    def update(self, chat_ids: Iterable[str]) -> None:
        bits = self._bits
        mask = self._BITS - 1
        for chat_id in chat_ids:
            place = hash(chat_id) & mask
            bits[place >> 3] |= 1 << (place & 7)

    def __contains__(self, chat_id: str) -> bool:
        place = hash(chat_id) & (self._BITS - 1)
        return bool(self._bits[place >> 3] & (1 << (place & 7)))


_SENDERS = {kind.value: kind for kind in SenderKind}


def _time_key(item: tuple[tuple[Any, ...], Any]) -> tuple[Any, ...]:
    return item[0]

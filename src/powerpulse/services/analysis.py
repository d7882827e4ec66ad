"""Analysis orchestration: the processed-chat cache, analyzer calls, results and job progress.

A worker claims queued tasks, renders each conversation, skips the ones whose rendered
transcript and analyzer fingerprint match the stored analysis (the processed-chat cache),
asks the analyzer about the rest, and stores results and job counters in one transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from ..analysis.base import (
    AnalysisOutcome,
    AnalysisUnavailable,
    Analyzer,
    AnalyzerFingerprint,
    ConversationInput,
)
from ..analysis.schema import sentiment_label
from ..analysis.transcript import build_input, content_hash
from ..db import Database
from ..errors import ConfigurationError
from ..models import AnalysisStatus, utcnow
from ..repositories.analyses import AnalysisRepository
from ..repositories.conversations import ConversationRepository
from ..repositories.jobs import ClaimedTask, JobProgress, JobRepository
from ..repositories.messages import MessageRepository
from ..repositories.tenants import TenantRepository
from ..settings import Settings
from .tenants import TenantConfig, TenantDirectory

logger = logging.getLogger("powerpulse.analysis")


def build_analyzer(settings: Settings) -> Analyzer:
    """The analyzer the settings ask for: openai with a key (or when forced), else lexicon."""
    if settings.use_openai:
        if settings.openai_api_key is None:
            raise ConfigurationError("POWERPULSE_ANALYZER=openai needs OPENAI_API_KEY")
        from ..analysis.openai_analyzer import OpenAIAnalyzer, OpenAIOptions

        input_price, output_price = settings.prices_for(settings.model)
        if (input_price, output_price) == (0.0, 0.0):
            logger.warning(
                "no price for model %s in POWERPULSE_MODEL_PRICES; costs will read 0",
                settings.model,
            )
        return OpenAIAnalyzer(
            OpenAIOptions(
                api_key=settings.openai_api_key.get_secret_value(),
                base_url=settings.openai_base_url,
                model=settings.model,
                timeout_seconds=settings.analysis_timeout_seconds,
                concurrency=settings.analysis_concurrency,
                requests_per_minute=settings.analysis_requests_per_minute,
                tokens_per_minute=settings.analysis_tokens_per_minute,
                batch_size=settings.analysis_batch_size,
                batch_max_tokens=settings.analysis_batch_max_tokens,
                input_price_per_million=input_price,
                output_price_per_million=output_price,
            )
        )
    from ..analysis.lexicon import LexiconAnalyzer

    return LexiconAnalyzer(settings.topics_file)


@dataclass(frozen=True, slots=True)
class WorkPlan:
    """How a worker drives an analyzer: parallel lanes, and tasks claimed per lane."""

    lanes: int
    claim_size: int


def plan_for(analyzer: Analyzer, settings: Settings) -> WorkPlan:
    if analyzer.fingerprint.analyzer == "openai":
        # One lane per request slot, each claiming one packed request's worth of chats.
        return WorkPlan(
            lanes=settings.analysis_concurrency, claim_size=settings.analysis_batch_size
        )
    # The lexicon analyzer is CPU-bound: one lane, big claims.
    return WorkPlan(lanes=1, claim_size=200)


class AnalyzerRegistry:
    """The analyzer for each tenant: one shared model client, per-tenant topic taxonomies."""

    def __init__(self, settings: Settings, default: Analyzer) -> None:
        self.default = default
        self._settings = settings
        self._by_topics_file: dict[str, Analyzer] = {}

    def for_tenant(self, tenant: TenantConfig) -> Analyzer:
        own_file = tenant.topics_file
        if (
            self.default.fingerprint.analyzer != "lexicon"
            or own_file is None
            or own_file == self._settings.topics_file
        ):
            return self.default
        analyzer = self._by_topics_file.get(own_file)
        if analyzer is None:
            from ..analysis.lexicon import LexiconAnalyzer

            analyzer = LexiconAnalyzer(own_file)
            self._by_topics_file[own_file] = analyzer
        return analyzer

    def fingerprint_for(self, tenant: TenantConfig) -> str:
        return self.for_tenant(tenant).fingerprint.key()

    async def aclose(self) -> None:
        for analyzer in [self.default, *self._by_topics_file.values()]:
            await analyzer.aclose()


class AnalysisService:
    """Processes claimed tasks for any tenant; each task carries its own tenant."""

    def __init__(
        self,
        database: Database,
        settings: Settings,
        analyzer: Analyzer | AnalyzerRegistry,
        *,
        worker_id: str,
        tenants: TenantDirectory | None = None,
    ) -> None:
        self._database = database
        self._settings = settings
        self.analyzers = (
            analyzer
            if isinstance(analyzer, AnalyzerRegistry)
            else AnalyzerRegistry(settings, analyzer)
        )
        self.worker_id = worker_id
        self._tenants = tenants or TenantDirectory(database, settings)

    def _lease_until(self) -> Any:
        return utcnow() + timedelta(seconds=self._settings.analysis_lease_seconds)

    async def claim(self, limit: int) -> list[ClaimedTask]:
        async with self._database.write() as connection:
            repository = JobRepository(connection)
            claimed = await repository.claim(
                worker=self.worker_id, limit=limit, lease_until=self._lease_until(), now=utcnow()
            )
            await repository.mark_running(sorted({task.job_id for task in claimed}))
        return claimed

    async def release(self, task_ids: Sequence[int] | None = None) -> int:
        async with self._database.write() as connection:
            return await JobRepository(connection).release(worker=self.worker_id, task_ids=task_ids)

    async def release_abandoned_leases(self) -> int:
        """Requeue every leased task: only safe where this is the only worker (SQLite)."""
        async with self._database.write() as connection:
            return await JobRepository(connection).release(worker="")

    async def _renew_leases(self, task_ids: list[int]) -> None:
        interval = max(0.05, self._settings.analysis_lease_seconds / 3)
        while True:
            await asyncio.sleep(interval)
            async with self._database.write() as connection:
                await JobRepository(connection).renew(
                    worker=self.worker_id, task_ids=task_ids, lease_until=self._lease_until()
                )

    async def process(self, claimed: Sequence[ClaimedTask]) -> None:
        """Analyse claimed tasks, keeping their leases fresh while the analyzer works."""
        by_tenant: dict[int, list[ClaimedTask]] = defaultdict(list)
        for task in claimed:
            by_tenant[task.tenant_id].append(task)
        renewer = asyncio.create_task(self._renew_leases([task.id for task in claimed]))
        try:
            for tenant_id, tenant_tasks in by_tenant.items():
                await self._process_tenant(tenant_id, tenant_tasks)
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer

    async def _process_tenant(self, tenant_id: int, tasks: list[ClaimedTask]) -> None:
        analyzer = self.analyzers.for_tenant(await self._tenants.get(tenant_id))
        fingerprint = analyzer.fingerprint
        conversation_ids = sorted({task.conversation_id for task in tasks})
        async with self._database.read() as connection:
            conversations = await ConversationRepository(connection).by_ids(
                tenant_id, conversation_ids
            )
            transcripts = await MessageRepository(connection).transcripts_for(
                tenant_id, conversation_ids
            )
            states = await AnalysisRepository(connection).state_of(tenant_id, conversation_ids)

        forced = {task.conversation_id for task in tasks if task.force}
        inputs: dict[int, ConversationInput] = {}
        hashes: dict[int, str] = {}
        cached: set[int] = set()
        for conversation_id in conversation_ids:
            conversation = conversations.get(conversation_id)
            if conversation is None or not transcripts.get(conversation_id):
                continue
            rendered = build_input(
                conversation["chat_id"],
                transcripts[conversation_id],
                contact_count=conversation["contact_count"],
                token_budget=self._settings.analysis_max_input_tokens,
            )
            digest = content_hash(rendered, fingerprint)
            hashes[conversation_id] = digest
            state = states.get(conversation_id)
            if (
                conversation_id not in forced
                and state is not None
                and state["content_hash"] == digest
                and state["fingerprint"] == fingerprint.key()
            ):
                cached.add(conversation_id)
            else:
                inputs[conversation_id] = rendered

        outcomes: dict[int, AnalysisOutcome] = {}
        unavailable: str | None = None
        if inputs:
            ids = list(inputs)
            try:
                results = await analyzer.analyze([inputs[cid] for cid in ids])
            except AnalysisUnavailable as exc:
                unavailable = str(exc)
                logger.error("analysis unavailable: %s", unavailable)
            else:
                outcomes = dict(zip(ids, results, strict=True))

        async with self._database.write() as connection:
            # First: the analysis rows written below carry this version.
            version = await TenantRepository(connection).begin_change(tenant_id)
            jobs = JobRepository(connection)
            analyses = AnalysisRepository(connection)
            if unavailable is not None:
                await self._stop_jobs(tenant_id, tasks, unavailable, jobs, analyses, version)
                return
            owned = await jobs.complete(worker=self.worker_id, task_ids=[t.id for t in tasks])
            mine = [task for task in tasks if task.id in owned]
            if len(mine) < len(tasks):
                logger.warning(
                    "%d analysis tasks were re-leased to another worker; their results are "
                    "left to it",
                    len(tasks) - len(mine),
                )
            conversations_done = {task.conversation_id for task in mine}
            await self._store(
                tenant_id,
                version,
                fingerprint,
                conversations_done,
                conversations,
                outcomes,
                hashes,
                cached,
                analyses,
            )
            progress: dict[int, JobProgress] = defaultdict(JobProgress)
            for task in mine:
                job = progress[task.job_id]
                outcome = outcomes.get(task.conversation_id)
                if task.conversation_id in cached:
                    job.cached += 1
                elif outcome is not None:
                    if outcome.judgement is not None:
                        job.analyzed += 1
                    else:
                        job.failed += 1
                    # A failed conversation's tokens were billed all the same.
                    job.input_tokens += outcome.input_tokens
                    job.output_tokens += outcome.output_tokens
                    job.cost_usd += outcome.cost_usd
                else:
                    # The conversation vanished or has no messages: nothing to judge.
                    job.cached += 1
            for job_id, job_progress in sorted(progress.items()):
                await jobs.add_progress(tenant_id, job_id, job_progress)

    async def _store(
        self,
        tenant_id: int,
        version: int,
        fingerprint: AnalyzerFingerprint,
        conversation_ids: set[int],
        conversations: dict[int, Any],
        outcomes: dict[int, AnalysisOutcome],
        hashes: dict[int, str],
        cached: set[int],
        analyses: AnalysisRepository,
    ) -> None:
        now = utcnow()
        rows: list[dict[str, Any]] = []
        topic_rows: list[tuple[int, str, int]] = []
        failures: dict[str, list[int]] = defaultdict(list)
        for conversation_id in sorted(conversation_ids):
            if conversation_id in cached:
                continue
            outcome = outcomes.get(conversation_id)
            if outcome is None:
                continue
            judgement = outcome.judgement
            if judgement is None:
                failures[outcome.error or "analysis failed"].append(conversation_id)
                continue
            contact_count = conversations[conversation_id]["contact_count"]
            rows.append(
                {
                    "conversation_id": conversation_id,
                    "status": AnalysisStatus.DONE.value,
                    "failure_reason": None,
                    "content_hash": hashes[conversation_id],
                    "fingerprint": fingerprint.key(),
                    "satisfaction_score": judgement.satisfaction_score,
                    "is_satisfied": judgement.satisfaction_score >= 4,
                    "sentiment_score": judgement.sentiment_score,
                    "initial_sentiment": judgement.initial_sentiment,
                    "final_sentiment": judgement.final_sentiment,
                    "sentiment_label": sentiment_label(judgement.sentiment_score).value,
                    "resolved": judgement.resolved,
                    "first_contact_resolution": judgement.resolved and contact_count == 1,
                    "effort_score": judgement.effort_score,
                    "summary": judgement.summary,
                    "language": judgement.language,
                    "analyzer": fingerprint.analyzer,
                    "model": fingerprint.model,
                    "prompt_version": fingerprint.prompt_version,
                    "input_tokens": outcome.input_tokens,
                    "output_tokens": outcome.output_tokens,
                    "cost_usd": outcome.cost_usd,
                    "analyzed_at": now,
                    "updated_at": now,
                }
            )
            topic_rows.extend(
                (conversation_id, topic, position)
                for position, topic in enumerate(judgement.topics)
            )
        await analyses.store(tenant_id, rows, topic_rows, version=version)
        await analyses.set_status(
            tenant_id, sorted(conversation_ids & cached), AnalysisStatus.DONE, version=version
        )
        for reason, failed_ids in failures.items():
            await analyses.set_status(
                tenant_id,
                failed_ids,
                AnalysisStatus.FAILED,
                failure_reason=reason[:1000],
                version=version,
            )

    async def _stop_jobs(
        self,
        tenant_id: int,
        tasks: list[ClaimedTask],
        reason: str,
        jobs: JobRepository,
        analyses: AnalysisRepository,
        version: int,
    ) -> None:
        for job_id in sorted({task.job_id for task in tasks}):
            abandoned = await jobs.fail(tenant_id, job_id, reason)
            await analyses.set_status(
                tenant_id,
                sorted(set(abandoned)),
                AnalysisStatus.FAILED,
                failure_reason=reason,
                version=version,
            )


class WorkerBusy(Exception):
    """Another process already runs the analysis worker on this SQLite database."""


class SQLiteWorkerLock:
    """One analysis worker per SQLite file, across processes (an advisory file lock).

    SQLite has a single writer and no SKIP LOCKED; several workers would only contend.
    PostgreSQL needs no such lock: workers there claim with FOR UPDATE SKIP LOCKED.
    """

    def __init__(self, database_url: str) -> None:
        from sqlalchemy.engine import make_url

        database = make_url(database_url).database
        self.path = (
            None
            if not database or database == ":memory:"
            else Path(database)
            .expanduser()
            .resolve()
            .with_name(Path(database).name + ".worker.lock")
        )
        self._handle: Any = None

    def acquire(self) -> bool:
        if self.path is None:
            return True
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self._handle = handle
        return True

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


class AnalysisWorker:
    """The background loop: lanes that claim, analyse and store until told to stop."""

    def __init__(
        self,
        database: Database,
        settings: Settings,
        analyzer: Analyzer | AnalyzerRegistry,
        *,
        worker_id: str | None = None,
        tenants: TenantDirectory | None = None,
    ) -> None:
        self.service = AnalysisService(
            database,
            settings,
            analyzer,
            worker_id=worker_id or f"worker-{uuid.uuid4().hex[:12]}",
            tenants=tenants,
        )
        self._database = database
        self._settings = settings
        self._plan = plan_for(self.service.analyzers.default, settings)
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._lanes: list[asyncio.Task[None]] = []
        self._lock = SQLiteWorkerLock(settings.database_url) if database.is_sqlite else None

    @property
    def running(self) -> bool:
        return bool(self._lanes)

    def notify(self) -> None:
        """New work was queued: stop waiting for the next poll."""
        self._wake.set()

    async def start(self) -> None:
        """Start the lanes; raises WorkerBusy if another process works this SQLite file."""
        if self._lock is not None:
            if not await asyncio.to_thread(self._lock.acquire):
                raise WorkerBusy(
                    "another PowerPulse process is already analysing this SQLite database "
                    "(one worker per SQLite file; use PostgreSQL for several)"
                )
            # Holding the lock proves no other worker is alive: its leases are stale.
            released = await self.service.release_abandoned_leases()
            if released:
                logger.info("resuming %d analyses left unfinished by a stopped worker", released)
        self._lanes = [
            asyncio.create_task(self._lane(), name=f"analysis-lane-{index}")
            for index in range(self._plan.lanes)
        ]

    async def stop(self) -> None:
        """Stop claiming, let in-flight analyses finish briefly, hand back the rest."""
        self._stopping.set()
        self._wake.set()
        if not self._lanes:
            if self._lock is not None:
                self._lock.release()
            return
        _, pending = await asyncio.wait(self._lanes, timeout=self._settings.shutdown_grace_seconds)
        for lane in pending:
            lane.cancel()
        await asyncio.gather(*self._lanes, return_exceptions=True)
        self._lanes = []
        await self.service.release()
        if self._lock is not None:
            self._lock.release()

    async def _lane(self) -> None:
        while not self._stopping.is_set():
            try:
                claimed = await self.service.claim(self._plan.claim_size)
                if not claimed:
                    await self._idle()
                    continue
                await self.service.process(claimed)
            except asyncio.CancelledError:
                raise
            except Exception:
                # A broken batch must not stop the worker; its leases expire and it is retried.
                logger.exception("analysis lane failed; retrying after a pause")
                await self._idle()

    async def _idle(self) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=self._settings.worker_poll_seconds)

    async def run_until_idle(self) -> None:
        """Process queued work in this task until the queue is empty (CLI and tests)."""
        while True:
            claimed = await self.service.claim(self._plan.claim_size * self._plan.lanes)
            if not claimed:
                return
            chunks = [
                claimed[index : index + self._plan.claim_size]
                for index in range(0, len(claimed), self._plan.claim_size)
            ]
            await asyncio.gather(*(self.service.process(chunk) for chunk in chunks))

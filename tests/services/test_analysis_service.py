"""AnalysisService and AnalysisWorker on real SQLite and PostgreSQL, with the real openai
client talking to FakeOpenAI: concurrent workers, leases that expire, late completions."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import select

from fakes.openai_server import FakeOpenAI
from powerpulse.analysis.base import Analyzer
from powerpulse.db import Database, create_engine, create_schema
from powerpulse.models import AnalysisTask, ConversationAnalysis
from powerpulse.repositories.jobs import JobRepository
from powerpulse.repositories.tenants import TenantRepository
from powerpulse.services.analysis import AnalysisService, AnalysisWorker, build_analyzer
from powerpulse.services.ingest import IngestService, UploadReport
from powerpulse.settings import Settings

tasks = AnalysisTask.__table__
analyses = ConversationAnalysis.__table__


def chats(count: int, prefix: str = "chat") -> dict[str, list[dict[str, Any]]]:
    """`count` small chats; every third customer says thanks, the others are stuck."""
    exported = {}
    for index in range(count):
        ending = "thank you" if index % 3 == 0 else "it is still not working"
        exported[f"{prefix}-{index:02d}"] = [
            {
                "DIRECTION": "to_company",
                "SOCIAL_CREATE_TIME": f"2025-06-01T{index % 24:02d}:00:00Z",
                "MESSAGE_CONTENT": f"my token number {index} did not arrive",
            },
            {
                "DIRECTION": "to_client",
                "SOCIAL_CREATE_TIME": f"2025-06-01T{index % 24:02d}:05:00Z",
                "MESSAGE_CONTENT": "Let me check",
                "AGENT_USERNAME": "jane",
            },
            {
                "DIRECTION": "to_company",
                "SOCIAL_CREATE_TIME": f"2025-06-01T{index % 24:02d}:09:00Z",
                "MESSAGE_CONTENT": ending,
            },
        ]
    return exported


@dataclass
class Env:
    database: Database
    settings: Settings
    tenant_id: int
    analyzers: list[Analyzer] = field(default_factory=list)

    def analyzer(self) -> Analyzer:
        """A fresh analyzer (its own HTTP client), closed with the environment."""
        analyzer = build_analyzer(self.settings)
        self.analyzers.append(analyzer)
        return analyzer

    async def ingest(self, exported: dict[str, Any], *, force: bool = False) -> UploadReport:
        fingerprint = (self.analyzers[0] if self.analyzers else self.analyzer()).fingerprint
        service = IngestService(
            self.database, self.settings, analyzer_fingerprint=fingerprint.key()
        )
        stream = io.BytesIO(json.dumps(exported).encode())
        return await service.ingest(self.tenant_id, stream, force_reprocess=force)

    def service(self, worker_id: str) -> AnalysisService:
        return AnalysisService(self.database, self.settings, self.analyzer(), worker_id=worker_id)

    async def job(self, job_id: int | None) -> dict[str, Any]:
        assert job_id is not None
        async with self.database.read() as connection:
            row = await JobRepository(connection).get(self.tenant_id, job_id)
        assert row is not None
        return dict(row)

    async def tasks(self) -> list[dict[str, Any]]:
        async with self.database.read() as connection:
            rows = await connection.execute(select(tasks).order_by(tasks.c.id))
            return [dict(row) for row in rows.mappings()]

    async def analyses(self) -> list[dict[str, Any]]:
        async with self.database.read() as connection:
            rows = await connection.execute(select(analyses).order_by(analyses.c.conversation_id))
            return [dict(row) for row in rows.mappings()]

    async def complete(self, worker: str, task_ids: list[int]) -> set[int]:
        async with self.database.write() as connection:
            return await JobRepository(connection).complete(worker=worker, task_ids=task_ids)


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
async def make_env(
    settings_factory: Callable[..., Settings], fake: FakeOpenAI
) -> AsyncIterator[Callable[..., Any]]:
    envs: list[Env] = []

    async def build(**overrides: Any) -> Env:
        options: dict[str, Any] = {
            "analyzer": "openai",
            "openai_api_key": "test-key",
            "openai_base_url": fake.base_url,
            "worker_poll_seconds": 0.05,
            "analysis_batch_size": 1,
            **overrides,
        }
        settings = settings_factory(**options)
        database = Database(create_engine(settings))
        await create_schema(database.engine)
        async with database.write() as connection:
            tenant_id = await TenantRepository(connection).create("acme")
        env = Env(database, settings, tenant_id)
        envs.append(env)
        return env

    yield build
    for env in envs:
        for analyzer in env.analyzers:
            await analyzer.aclose()
        await env.database.dispose()


async def test_three_workers_on_one_job_lose_no_progress_and_analyse_each_chat_once(
    make_env: Callable[..., Any], fake: FakeOpenAI
) -> None:
    env = await make_env(analysis_concurrency=2)
    exported = chats(24)
    report = await env.ingest(exported)
    assert report.analysis_queued == 24
    fake.latency = 0.05
    fake.fail_chat("chat-05", "malformed_json", times=2)
    workers = [
        AnalysisWorker(env.database, env.settings, env.analyzer(), worker_id=f"worker-{index}")
        for index in range(3)
    ]

    await asyncio.wait_for(asyncio.gather(*(w.run_until_idle() for w in workers)), 60)

    job = await env.job(report.job_id)
    assert job["analyzed"] + job["cached"] + job["failed"] == job["total"] == 24
    assert (job["analyzed"], job["cached"], job["failed"]) == (23, 0, 1)
    assert job["status"] == "PARTIAL"
    assert job["finished_at"] is not None
    # Every conversation went to the model once (the failing one once more, as a retry).
    assert fake.requests_by_chat == {**dict.fromkeys(exported, 1), "chat-05": 2}
    assert fake.peak_concurrency >= 3
    queue = await env.tasks()
    assert {task["state"] for task in queue} == {"DONE"}
    assert {task["leased_by"] for task in queue} == {"worker-0", "worker-1", "worker-2"}
    assert all(task["attempts"] == 1 for task in queue)
    stored = await env.analyses()
    assert sorted(row["status"] for row in stored) == ["DONE"] * 23 + ["FAILED"]
    # The job is charged every token the model answered with, the failing conversation's
    # two invalid answers included; each analysis holds what its own judgement cost.
    assert (job["input_tokens"], job["output_tokens"]) == fake.usage_billed
    judged = [row for row in stored if row["status"] == "DONE"]
    assert 0 < sum(row["input_tokens"] for row in judged) < job["input_tokens"]
    assert 0 < sum(row["output_tokens"] for row in judged) < job["output_tokens"]
    assert job["cost_usd"] > sum(row["cost_usd"] for row in judged)


async def test_conversation_queued_again_before_analysis_is_cached_by_the_worker(
    make_env: Callable[..., Any], fake: FakeOpenAI
) -> None:
    env = await make_env(analysis_concurrency=2)
    exported = chats(4)
    first = await env.ingest(exported)
    # Still PENDING, so the same file queues every conversation again.
    second = await env.ingest(exported)
    assert (second.analysis_queued, second.analysis_cached) == (4, 0)
    worker = AnalysisWorker(env.database, env.settings, env.analyzer(), worker_id="solo")

    await asyncio.wait_for(worker.run_until_idle(), 30)

    first_job, second_job = await env.job(first.job_id), await env.job(second.job_id)
    assert (first_job["status"], first_job["analyzed"], first_job["cached"]) == ("SUCCEEDED", 4, 0)
    assert (second_job["status"], second_job["analyzed"], second_job["cached"]) == (
        "SUCCEEDED",
        0,
        4,
    )
    assert second_job["input_tokens"] == second_job["cost_usd"] == 0
    assert fake.requests_by_chat == dict.fromkeys(exported, 1)


async def test_expired_lease_is_taken_over_and_the_late_completion_is_ignored(
    make_env: Callable[..., Any], fake: FakeOpenAI
) -> None:
    # Long enough that the second claim below comes inside it on a busy test machine.
    env = await make_env(analysis_lease_seconds=0.5)
    exported = chats(2)
    # Forced, so that the late worker really asks the model instead of finding a cached result.
    report = await env.ingest(exported, force=True)
    stalled, rescuer = env.service("stalled"), env.service("rescuer")

    claimed_at = time.monotonic()
    abandoned = await stalled.claim(10)
    assert len(abandoned) == 2
    # While the lease holds, nobody else may take the tasks.
    assert await rescuer.claim(10) == []

    deadline = time.monotonic() + 10
    while not (taken := await rescuer.claim(10)):
        assert time.monotonic() < deadline, "the expired lease was never taken over"
        await asyncio.sleep(0.02)

    assert time.monotonic() - claimed_at >= 0.49
    assert [task.id for task in taken] == [task.id for task in abandoned]
    queue = await env.tasks()
    assert [(task["leased_by"], task["attempts"]) for task in queue] == [("rescuer", 2)] * 2
    # The stalled worker no longer owns them: completing them does nothing.
    assert await env.complete("stalled", [task.id for task in abandoned]) == set()

    await rescuer.process(taken)

    job = await env.job(report.job_id)
    assert (job["status"], job["analyzed"], job["failed"]) == ("SUCCEEDED", 2, 0)
    assert fake.requests_by_chat == dict.fromkeys(exported, 1)
    analysed_at = [row["analyzed_at"] for row in await env.analyses()]

    # The stalled worker wakes up and finishes its (old) work: nothing it reports counts.
    await stalled.process(abandoned)

    late = await env.job(report.job_id)
    assert {key: late[key] for key in ("status", "analyzed", "cached", "failed", "total")} == {
        "status": "SUCCEEDED",
        "analyzed": 2,
        "cached": 0,
        "failed": 0,
        "total": 2,
    }
    assert late["input_tokens"] == job["input_tokens"]
    assert fake.requests_by_chat == dict.fromkeys(exported, 2)  # it did ask the model again
    assert {task["state"] for task in await env.tasks()} == {"DONE"}
    stored = await env.analyses()
    assert {row["status"] for row in stored} == {"DONE"}
    assert [row["analyzed_at"] for row in stored] == analysed_at  # the rescuer's results stay


async def test_complete_returns_only_the_tasks_the_worker_still_holds(
    make_env: Callable[..., Any],
) -> None:
    env = await make_env(analysis_lease_seconds=0.1)
    await env.ingest(chats(3))
    first, second = env.service("first"), env.service("second")
    held = await first.claim(1)
    await asyncio.sleep(0.15)
    taken = await second.claim(10)  # the expired task and the two never claimed
    assert len(taken) == 3

    assert await env.complete("first", [task.id for task in held]) == set()
    assert await env.complete("second", [task.id for task in taken]) == {t.id for t in taken}
    assert await env.complete("second", [task.id for task in taken]) == set()


async def test_working_worker_renews_its_lease_so_nobody_takes_over(
    make_env: Callable[..., Any], fake: FakeOpenAI
) -> None:
    # Renewed every third of a lease: a renewal can come 0.67 s late before the lease
    # runs out, a margin a busy test machine keeps (0.13 s of a 0.2 s lease did not).
    env = await make_env(analysis_lease_seconds=1.0)
    report = await env.ingest(chats(1))
    fake.latency = 2.5  # two and a half leases long
    worker, other = env.service("busy"), env.service("other")
    claimed = await worker.claim(10)

    processing = asyncio.create_task(worker.process(claimed))
    try:
        while not processing.done():
            assert await other.claim(10) == []
            await asyncio.sleep(0.05)
    finally:
        await processing

    job = await env.job(report.job_id)
    assert (job["status"], job["analyzed"]) == ("SUCCEEDED", 1)
    assert fake.requests == 1


async def test_late_quota_error_of_a_worker_that_lost_its_lease_leaves_the_job_alone(
    make_env: Callable[..., Any], fake: FakeOpenAI
) -> None:
    env = await make_env(analysis_lease_seconds=0.1)
    exported = chats(2)
    report = await env.ingest(exported, force=True)
    stalled, rescuer = env.service("stalled"), env.service("rescuer")
    abandoned = await stalled.claim(10)
    await asyncio.sleep(0.15)
    taken = await rescuer.claim(10)
    await rescuer.process(taken)
    assert (await env.job(report.job_id))["status"] == "SUCCEEDED"

    fake.fail_next("insufficient_quota", times=5)
    await stalled.process(abandoned)

    assert [entry.status for entry in fake.request_log][-1] == 429  # it did hit the quota

    job = await env.job(report.job_id)
    assert (job["status"], job["analyzed"], job["failed"], job["error"]) == (
        "SUCCEEDED",
        2,
        0,
        None,
    )
    assert {row["status"] for row in await env.analyses()} == {"DONE"}


async def test_quota_error_stops_the_job_and_fails_its_unfinished_conversations(
    make_env: Callable[..., Any], fake: FakeOpenAI
) -> None:
    env = await make_env(analysis_concurrency=1)
    exported = chats(3)
    report = await env.ingest(exported)
    fake.fail_next("insufficient_quota")
    worker = AnalysisWorker(env.database, env.settings, env.analyzer(), worker_id="solo")

    await asyncio.wait_for(worker.run_until_idle(), 30)

    job = await env.job(report.job_id)
    assert (job["status"], job["failed"], job["analyzed"]) == ("FAILED", 3, 0)
    assert "insufficient_quota" in job["error"]
    assert fake.requests == 1
    assert {task["state"] for task in await env.tasks()} == {"DONE"}
    stored = await env.analyses()
    assert {row["status"] for row in stored} == {"FAILED"}
    assert all("quota" in row["failure_reason"] for row in stored)

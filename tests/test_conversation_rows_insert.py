"""Rows queued for an upload's conversations (analysis rows, tasks): the values given are
the values stored, on both engines (PostgreSQL by binary COPY, encoded by column type)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select

from powerpulse.db import Database, create_engine, create_schema
from powerpulse.kinds import storage_timestamps
from powerpulse.models import AnalysisStatus, AnalysisTask, ConversationAnalysis, TaskState
from powerpulse.repositories.analyses import AnalysisRepository
from powerpulse.repositories.conversations import ConversationRepository
from powerpulse.repositories.jobs import JobRepository
from powerpulse.repositories.tenants import TenantRepository
from powerpulse.settings import Settings

T0 = datetime(1999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)
tasks = AnalysisTask.__table__  # type: ignore[attr-defined]
analyses = ConversationAnalysis.__table__  # type: ignore[attr-defined]
TASK_COLUMNS = (
    "tenant_id",
    "job_id",
    "conversation_id",
    "force",
    "state",
    "leased_by",
    "lease_expires_at",
    "attempts",
)


async def test_tasks_and_analysis_rows_are_stored_as_given(database_url: str) -> None:
    database = Database(create_engine(Settings(database_url=database_url)))
    try:
        await create_schema(database.engine)
        async with database.write() as connection:
            tenant = await TenantRepository(connection).create("acme")
            convert = storage_timestamps(connection.dialect.name) or (lambda moment: moment)
            stamp = convert(T0)
            ids = await ConversationRepository(connection).insert_many(
                tenant,
                [
                    (chat, ("web", 1, 1, 0, 0, stamp, stamp, 0.0, None, None, None, 0, 1))
                    for chat in "abc"
                ],
                version=1,
                updated_at=stamp,
            )
            a, b, c = ids["a"], ids["b"], ids["c"]
            jobs = JobRepository(connection)
            job = await jobs.create(tenant, analyzer="lexicon")
            await jobs.add_tasks(tenant, job, [(b, True), (a, False), (c, True)])
            # Values that differ row by row, NULL among them, and the same ones on each row.
            await jobs.insert_for_conversations(
                tasks,
                tenant,
                ("leased_by", "lease_expires_at"),
                [(c, ("worker-1 ✓", T0)), (a, (None, None)), (b, ("worker-1 ✓", T0))],
                {"job_id": job, "force": False, "state": "leased", "attempts": 2_147_483_647},
            )
            before = datetime.now(UTC)
            await AnalysisRepository(connection).mark_pending(
                tenant, [c, a], created={c, a}, version=7
            )
            after = datetime.now(UTC)

        async with database.read() as connection:
            stored = (
                await connection.execute(
                    select(*(tasks.c[name] for name in TASK_COLUMNS)).order_by(tasks.c.id)
                )
            ).all()
            pending = (
                await connection.execute(
                    select(
                        analyses.c.conversation_id,
                        analyses.c.tenant_id,
                        analyses.c.status,
                        analyses.c.input_tokens,
                        analyses.c.output_tokens,
                        analyses.c.cost_usd,
                        analyses.c.data_version,
                        analyses.c.summary,
                        analyses.c.updated_at,
                    ).order_by(analyses.c.conversation_id)
                )
            ).all()
        queued = [
            (tenant, job, cid, force, TaskState.QUEUED.value, None, None, 0)
            for cid, force in ((b, True), (a, False), (c, True))
        ]
        leased = [
            (tenant, job, cid, False, "leased", who, at, 2_147_483_647)
            for cid, who, at in ((c, "worker-1 ✓", T0), (a, None, None), (b, "worker-1 ✓", T0))
        ]
        assert [tuple(row) for row in stored] == queued + leased
        assert [tuple(row[:-1]) for row in pending] == [
            (cid, tenant, AnalysisStatus.PENDING.value, 0, 0, 0.0, 7, None)
            for cid in sorted((a, c))
        ]
        assert all(before <= row.updated_at <= after for row in pending)
    finally:
        await database.dispose()

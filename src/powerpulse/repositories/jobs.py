"""SQL for analysis jobs and the task queue workers claim from.

Claiming is the one place that reads across tenants: a worker serves every tenant, and
each task it claims carries its tenant, which every later call passes on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, func, insert, or_, select, update

from ..models import AnalysisJob, AnalysisTask, JobStatus, TaskState, utcnow
from .base import Repository
from .keyset import Ordering, SortKey

jobs = AnalysisJob.__table__  # type: ignore[attr-defined]
tasks = AnalysisTask.__table__  # type: ignore[attr-defined]
_j = jobs.c
_t = tasks.c

JOB_ORDER = Ordering("jobs", (SortKey(_j.id, True),))


@dataclass(frozen=True, slots=True)
class ClaimedTask:
    id: int
    tenant_id: int
    job_id: int
    conversation_id: int
    force: bool


@dataclass(slots=True)
class JobProgress:
    """What one batch of finished tasks adds to its job."""

    analyzed: int = 0
    cached: int = 0
    failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0


class JobRepository(Repository):
    # -- jobs ------------------------------------------------------------------------
    async def create(self, tenant_id: int, *, analyzer: str) -> int:
        result = await self.connection.execute(
            insert(jobs)
            .values(
                tenant_id=tenant_id,
                status=JobStatus.QUEUED.value,
                analyzer=analyzer,
                created_at=utcnow(),
            )
            .returning(_j.id)
        )
        return int(result.scalar_one())

    async def add_tasks(
        self, tenant_id: int, job_id: int, conversations: Sequence[tuple[int, bool]]
    ) -> None:
        """Queue (conversation id, force) pairs for the job."""
        await self.insert_for_conversations(
            tasks,
            tenant_id,
            ("force",),
            [(conversation_id, (force,)) for conversation_id, force in conversations],
            {"job_id": job_id, "state": TaskState.QUEUED.value, "attempts": 0},
        )

    async def set_totals(
        self, tenant_id: int, job_id: int, *, total: int, cached: int, forced: int
    ) -> None:
        await self.connection.execute(
            update(jobs)
            .where(_j.id == job_id, _j.tenant_id == tenant_id)
            .values(total=total, cached=_j.cached + cached, forced=forced)
        )
        await self.finish_if_complete(tenant_id, job_id)

    async def finish_if_complete(self, tenant_id: int, job_id: int) -> None:
        """Settle the job's status once every conversation is accounted for."""
        done = _j.analyzed + _j.cached + _j.failed
        now = utcnow()
        await self.connection.execute(
            update(jobs)
            .where(
                _j.id == job_id,
                _j.tenant_id == tenant_id,
                _j.finished_at.is_(None),
                done >= _j.total,
            )
            .values(
                status=case(
                    (and_(_j.failed > 0, _j.analyzed + _j.cached == 0), JobStatus.FAILED.value),
                    (_j.failed > 0, JobStatus.PARTIAL.value),
                    else_=JobStatus.SUCCEEDED.value,
                ),
                started_at=func.coalesce(_j.started_at, now),
                finished_at=now,
            )
        )

    async def add_progress(self, tenant_id: int, job_id: int, progress: JobProgress) -> None:
        """Increment counters in the database, so concurrent workers never lose an update."""
        await self.connection.execute(
            update(jobs)
            .where(_j.id == job_id, _j.tenant_id == tenant_id)
            .values(
                analyzed=_j.analyzed + progress.analyzed,
                cached=_j.cached + progress.cached,
                failed=_j.failed + progress.failed,
                input_tokens=_j.input_tokens + progress.input_tokens,
                output_tokens=_j.output_tokens + progress.output_tokens,
                cost_usd=_j.cost_usd + progress.cost_usd,
            )
        )
        await self.finish_if_complete(tenant_id, job_id)

    async def mark_running(self, job_ids: Sequence[int]) -> None:
        if not job_ids:
            return
        await self.connection.execute(
            update(jobs)
            .where(_j.id.in_(job_ids), _j.status == JobStatus.QUEUED.value)
            .values(status=JobStatus.RUNNING.value, started_at=utcnow())
        )

    async def fail(self, tenant_id: int, job_id: int, error: str) -> list[int]:
        """Stop a job for good; returns the conversations it will no longer analyse."""
        rows = await self.connection.execute(
            update(tasks)
            .where(
                _t.job_id == job_id,
                _t.tenant_id == tenant_id,
                _t.state != TaskState.DONE.value,
            )
            .values(state=TaskState.DONE.value, leased_by=None, lease_expires_at=None)
            .returning(_t.conversation_id)
        )
        abandoned = [row[0] for row in rows]
        await self.connection.execute(
            update(jobs)
            # A job that already finished keeps its outcome: a worker that lost its leases
            # may only learn of a dead key after another worker completed the job.
            .where(_j.id == job_id, _j.tenant_id == tenant_id, _j.finished_at.is_(None))
            .values(
                status=JobStatus.FAILED.value,
                error=error,
                failed=_j.failed + len(abandoned),
                finished_at=func.coalesce(_j.finished_at, utcnow()),
                started_at=func.coalesce(_j.started_at, utcnow()),
            )
        )
        return abandoned

    async def get(self, tenant_id: int, job_id: int) -> Mapping[str, Any] | None:
        return (
            (
                await self.connection.execute(
                    select(jobs).where(_j.id == job_id, _j.tenant_id == tenant_id)
                )
            )
            .mappings()
            .first()
        )

    async def page(
        self, tenant_id: int, *, first: int, after: str | None
    ) -> tuple[list[Mapping[str, Any]], bool, Ordering]:
        statement = select(jobs).where(_j.tenant_id == tenant_id)
        if after is not None:
            statement = statement.where(JOB_ORDER.after(after))
        statement = statement.order_by(*JOB_ORDER.order_by()).limit(first + 1)
        rows = list((await self.connection.execute(statement)).mappings())
        return rows[:first], len(rows) > first, JOB_ORDER

    async def count(self, tenant_id: int) -> int:
        return int(
            (
                await self.connection.execute(
                    select(func.count()).select_from(jobs).where(_j.tenant_id == tenant_id)
                )
            ).scalar_one()
        )

    async def claim(
        self, *, worker: str, limit: int, lease_until: datetime, now: datetime
    ) -> list[ClaimedTask]:
        """Lease up to `limit` claimable tasks: queued ones, or ones whose lease ran out."""
        claimable = (
            select(_t.id)
            .where(
                or_(
                    _t.state == TaskState.QUEUED.value,
                    and_(_t.state == TaskState.LEASED.value, _t.lease_expires_at < now),
                )
            )
            .order_by(_t.id)
            .limit(limit)
        )
        if self.is_postgres:
            # Concurrent workers skip each other's rows instead of queueing behind them.
            claimable = claimable.with_for_update(skip_locked=True)
        rows = await self.connection.execute(
            update(tasks)
            .where(_t.id.in_(claimable.scalar_subquery()))
            .values(
                state=TaskState.LEASED.value,
                leased_by=worker,
                lease_expires_at=lease_until,
                attempts=_t.attempts + 1,
            )
            .returning(_t.id, _t.tenant_id, _t.job_id, _t.conversation_id, _t.force)
        )
        claimed = [ClaimedTask(*row) for row in rows]
        claimed.sort(key=lambda task: task.id)
        return claimed

    async def renew(self, *, worker: str, task_ids: Sequence[int], lease_until: datetime) -> None:
        if not task_ids:
            return
        await self.connection.execute(
            update(tasks)
            .where(
                _t.id.in_(task_ids),
                _t.leased_by == worker,
                _t.state == TaskState.LEASED.value,
            )
            .values(lease_expires_at=lease_until)
        )

    async def release(self, *, worker: str, task_ids: Sequence[int] | None = None) -> int:
        """Hand leased tasks back to the queue (all of the worker's when ids are None)."""
        conditions = [_t.state == TaskState.LEASED.value]
        if worker:
            conditions.append(_t.leased_by == worker)
        if task_ids is not None:
            if not task_ids:
                return 0
            conditions.append(_t.id.in_(task_ids))
        result = await self.connection.execute(
            update(tasks)
            .where(*conditions)
            .values(state=TaskState.QUEUED.value, leased_by=None, lease_expires_at=None)
        )
        return int(result.rowcount or 0)

    async def complete(self, *, worker: str, task_ids: Sequence[int]) -> set[int]:
        """Mark tasks done; returns the ids this worker still held (a lost lease is not ours)."""
        if not task_ids:
            return set()
        rows = await self.connection.execute(
            update(tasks)
            .where(
                _t.id.in_(task_ids),
                _t.leased_by == worker,
                _t.state == TaskState.LEASED.value,
            )
            .values(state=TaskState.DONE.value, lease_expires_at=None)
            .returning(_t.id)
        )
        return {row[0] for row in rows}

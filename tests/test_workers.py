"""`powerpulse worker` processes side by side: real subprocesses on one database.

On PostgreSQL several workers share the queue (FOR UPDATE SKIP LOCKED, leases): every chat
is asked about exactly once, and a SIGKILLed worker's leases expire so the others finish its
work, repeating at most what it had in flight. On SQLite only one worker analyses at a time;
a second one waits for the first to stop. A SIGTERMed worker hands its leases back.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from fakes.openai_server import FakeOpenAI
from powerpulse.db import create_engine
from powerpulse.migrate import upgrade
from powerpulse.models import AnalysisTask, Conversation, ConversationAnalysis, Message
from powerpulse.repositories.jobs import JobRepository
from powerpulse.repositories.tenants import TenantRepository
from powerpulse.settings import Settings
from powerpulse.synthetic import write_export

pytestmark = pytest.mark.slow

CONCURRENCY = 4  # lanes per worker, one chat per request (batch size 1)
LEASE_SECONDS = 2.0
STARTUP_SECONDS = 60.0
JOB_SECONDS = 120.0
COMMAND_SECONDS = 120.0
READY = "analysing with"
BUSY = "another PowerPulse process is already analysing"

tasks_table = AnalysisTask.__table__  # type: ignore[attr-defined]
conversations_table = Conversation.__table__  # type: ignore[attr-defined]
messages_table = Message.__table__  # type: ignore[attr-defined]
analyses_table = ConversationAnalysis.__table__  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------ processes


def worker_env(database_url: str, fake: FakeOpenAI, **extra: str) -> dict[str, str]:
    """The inherited environment minus PowerPulse settings, pointed at the fake OpenAI."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("POWERPULSE_", "OPENAI_")) and name != "DATABASE_URL"
    }
    env.update(
        DATABASE_URL=database_url,
        POWERPULSE_ANALYZER="openai",
        OPENAI_API_KEY="test",
        OPENAI_BASE_URL=fake.base_url,
        POWERPULSE_WORKER_POLL_SECONDS="0.1",
        POWERPULSE_ANALYSIS_CONCURRENCY=str(CONCURRENCY),
        POWERPULSE_ANALYSIS_BATCH_SIZE="1",
        POWERPULSE_ANALYSIS_LEASE_SECONDS=str(LEASE_SECONDS),
        POWERPULSE_LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def run_cli(*args: str, env: dict[str, str], cwd: Path) -> str:
    """Run a `powerpulse` command to completion; returns its stdout, fails on a bad exit."""
    done = subprocess.run(
        [sys.executable, "-m", "powerpulse", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=COMMAND_SECONDS,
        check=False,
    )
    assert done.returncode == 0, (
        f"powerpulse {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    )
    return done.stdout


def ingest(export: Path, env: dict[str, str], cwd: Path) -> int:
    """`powerpulse ingest FILE --no-wait --quiet`; returns the id of the queued job."""
    stdout = run_cli("ingest", str(export), "--no-wait", "--quiet", env=env, cwd=cwd)
    match = re.search(r"analysis job (\d+):", stdout)
    assert match, f"no analysis job in the ingest output:\n{stdout}"
    return int(match.group(1))


class Worker:
    """One `python -m powerpulse worker` process; its stdout and stderr go to a log file."""

    def __init__(self, env: dict[str, str], workdir: Path, name: str) -> None:
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "powerpulse", "worker"],
            cwd=workdir,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tail(self) -> str:
        return f"--- {self.name} (exit {self.process.poll()}) ---\n{self.log()[-4000:]}"

    async def wait_for_log(self, text: str, within: float = STARTUP_SECONDS) -> None:
        deadline = time.monotonic() + within
        while text not in self.log():
            assert self.process.poll() is None, f"{self.name} exited early:\n{self.tail()}"
            assert time.monotonic() < deadline, (
                f"{self.name} never logged {text!r} within {within}s:\n{self.tail()}"
            )
            await asyncio.sleep(0.05)

    async def wait_exit(self, within: float = 30.0) -> int:
        deadline = time.monotonic() + within
        while self.process.poll() is None:
            assert time.monotonic() < deadline, f"{self.name} did not exit:\n{self.tail()}"
            await asyncio.sleep(0.05)
        return self.process.returncode

    def close(self) -> None:
        """Always safe: kill the process if it still runs, reap it, close the log."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)
        self._log.close()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], Worker]]:
    """Starts worker processes; every one is killed when the test ends, whatever happened."""
    started: list[Worker] = []

    def start(env: dict[str, str]) -> Worker:
        worker = Worker(env, tmp_path, f"worker-{len(started)}")
        started.append(worker)
        return worker

    try:
        yield start
    finally:
        for worker in started:
            worker.close()


# ------------------------------------------------------------------------------ the database


class Probe:
    """The test's own view of the workers' database."""

    def __init__(self, engine: AsyncEngine, tenant_id: int) -> None:
        self.engine = engine
        self.tenant_id = tenant_id

    async def job(self, job_id: int) -> dict[str, Any]:
        async with self.engine.connect() as connection:
            job = await JobRepository(connection).get(self.tenant_id, job_id)
        assert job is not None, f"no job {job_id}"
        row = dict(job)
        row["processed"] = row["analyzed"] + row["cached"] + row["failed"]
        return row

    async def wait_for_job(
        self, job_id: int, workers: list[Worker], *, processed: int | None = None
    ) -> dict[str, Any]:
        """Until the job finishes (or has processed at least `processed` chats)."""
        deadline = time.monotonic() + JOB_SECONDS
        while True:
            job = await self.job(job_id)
            if job["finished_at"] is not None:
                return job
            if processed is not None and job["processed"] >= processed:
                return job
            if time.monotonic() > deadline:
                logs = "\n".join(worker.tail() for worker in workers)
                pytest.fail(f"job {job_id} did not get there within {JOB_SECONDS}s: {job}\n{logs}")
            await asyncio.sleep(0.05)

    async def task_states(self, job_id: int) -> dict[str, int]:
        async with self.engine.connect() as connection:
            rows = await connection.execute(
                select(tasks_table.c.state, func.count())
                .where(tasks_table.c.job_id == job_id)
                .group_by(tasks_table.c.state)
            )
            return {state: int(count) for state, count in rows}

    async def lessees(self, job_id: int) -> dict[str, int]:
        """Worker id -> tasks of the job it completed (leased_by stays set once DONE)."""
        async with self.engine.connect() as connection:
            rows = await connection.execute(
                select(tasks_table.c.leased_by, func.count())
                .where(tasks_table.c.job_id == job_id, tasks_table.c.state == "DONE")
                .group_by(tasks_table.c.leased_by)
            )
            return {str(worker): int(count) for worker, count in rows}

    async def attempts(self, job_id: int) -> dict[int, int]:
        """Attempts -> tasks of the job claimed that many times."""
        async with self.engine.connect() as connection:
            rows = await connection.execute(
                select(tasks_table.c.attempts, func.count())
                .where(tasks_table.c.job_id == job_id)
                .group_by(tasks_table.c.attempts)
            )
            return {int(attempts): int(count) for attempts, count in rows}

    async def chats_with_messages(self) -> set[str]:
        async with self.engine.connect() as connection:
            rows = await connection.execute(
                select(conversations_table.c.chat_id)
                .distinct()
                .select_from(
                    conversations_table.join(
                        messages_table,
                        messages_table.c.conversation_id == conversations_table.c.id,
                    )
                )
                .where(conversations_table.c.tenant_id == self.tenant_id)
            )
            return {row[0] for row in rows}

    async def analysis_status(self) -> dict[str, str | None]:
        """Chat id -> analysis status (None when never analysed), for every conversation."""
        async with self.engine.connect() as connection:
            rows = await connection.execute(
                select(conversations_table.c.chat_id, analyses_table.c.status)
                .select_from(
                    conversations_table.outerjoin(
                        analyses_table,
                        analyses_table.c.conversation_id == conversations_table.c.id,
                    )
                )
                .where(conversations_table.c.tenant_id == self.tenant_id)
            )
            return {chat_id: status for chat_id, status in rows}


@asynccontextmanager
async def probe(database_url: str) -> AsyncIterator[Probe]:
    """Open after `powerpulse db upgrade` or an ingest: the default tenant must exist."""
    engine = create_engine(Settings(database_url=database_url, env="test"))
    try:
        async with engine.connect() as connection:
            tenant_id = await TenantRepository(connection).id_by_name("default")
        assert tenant_id is not None, "the default tenant was not created"
        yield Probe(engine, tenant_id)
    finally:
        await engine.dispose()


def chat_ids_of(export: Path) -> set[str]:
    import json

    return set(json.loads(export.read_bytes()))


# ------------------------------------------------------------------------------ PostgreSQL


async def test_three_workers_on_postgres_analyse_every_chat_exactly_once(
    postgres_url: str, workers: Callable[[dict[str, str]], Worker], tmp_path: Path
) -> None:
    with FakeOpenAI(latency=0.05) as fake:
        env = worker_env(postgres_url, fake)
        run_cli("db", "upgrade", env=env, cwd=tmp_path)
        export = tmp_path / "export.json"
        write_export(export, chats=150, seed=11)

        # All three are polling before the work arrives, so none can take it all alone.
        started = [workers(env) for _ in range(3)]
        for worker in started:
            await worker.wait_for_log(READY)
        job_id = ingest(export, env, tmp_path)

        async with probe(postgres_url) as db:
            job = await db.wait_for_job(job_id, started)
            chats = await db.chats_with_messages()
            states = await db.task_states(job_id)
            lessees = await db.lessees(job_id)
            attempts = await db.attempts(job_id)
            statuses = await db.analysis_status()
        asked = fake.requests_by_chat
        peak = fake.peak_concurrency

    assert chats == chat_ids_of(export)
    assert job["status"] == "SUCCEEDED", job
    assert job["total"] == len(chats) == 150
    assert (job["processed"], job["analyzed"], job["failed"]) == (150, 150, 0), job
    assert states == {"DONE": 150}
    # Exactly once: one request per chat, and no task was ever claimed twice.
    assert set(asked) == chats
    assert set(asked.values()) == {1}, {c: n for c, n in asked.items() if n != 1}
    assert attempts == {1: 150}
    assert set(statuses.values()) == {"DONE"}
    # The work was shared, and each worker kept to its own concurrency.
    assert len(lessees) >= 2, lessees
    assert sum(lessees.values()) == 150
    assert peak <= 3 * CONCURRENCY, peak


async def test_a_killed_worker_loses_nothing_and_repeats_at_most_its_in_flight_chats(
    postgres_url: str, workers: Callable[[dict[str, str]], Worker], tmp_path: Path
) -> None:
    with FakeOpenAI(latency=0.3) as fake:
        env = worker_env(postgres_url, fake)
        run_cli("db", "upgrade", env=env, cwd=tmp_path)
        export = tmp_path / "export.json"
        write_export(export, chats=150, seed=12)

        started = [workers(env) for _ in range(3)]
        for worker in started:
            await worker.wait_for_log(READY)
        job_id = ingest(export, env, tmp_path)

        async with probe(postgres_url) as db:
            before = await db.wait_for_job(job_id, started, processed=20)
            assert before["finished_at"] is None, f"the job finished before the kill: {before}"
            victim = started[0]
            victim.process.send_signal(signal.SIGKILL)
            assert await victim.wait_exit() == -signal.SIGKILL
            killed_at = await db.job(job_id)

            job = await db.wait_for_job(job_id, started[1:])
            chats = await db.chats_with_messages()
            states = await db.task_states(job_id)
            attempts = await db.attempts(job_id)
            statuses = await db.analysis_status()
        asked = fake.requests_by_chat

    assert killed_at["processed"] < 150, "the worker was not killed mid-job"
    assert job["status"] == "SUCCEEDED", job
    # Nothing lost and nothing counted twice: a repeated chat is stored and counted once.
    assert (job["total"], job["processed"], job["analyzed"], job["failed"]) == (
        150,
        150,
        150,
        0,
    ), job
    assert states == {"DONE": 150}
    assert statuses == dict.fromkeys(chats, "DONE")
    assert set(asked) == chats
    # Only the killed worker's leases (one chat per lane) came back to the queue.
    assert max(asked.values()) <= 2, asked
    repeated = {chat_id: count for chat_id, count in asked.items() if count > 1}
    assert sum(count - 1 for count in repeated.values()) <= CONCURRENCY, repeated
    reclaimed = sum(count for tries, count in attempts.items() if tries > 1)
    assert max(attempts) <= 2 and reclaimed <= CONCURRENCY, attempts


async def test_processes_starting_together_share_the_default_tenant(postgres_url: str) -> None:
    """Every process ensures the default tenant at start-up; a lost race must not crash one.

    The second insert waits on the first one's uncommitted row, then finds the name taken.
    """
    engine = create_engine(Settings(database_url=postgres_url, env="test"))
    try:
        await upgrade(engine)
        async with engine.connect() as first, engine.connect() as second:
            await first.begin()
            await second.begin()
            first_id = await TenantRepository(first).ensure("default")
            racing = asyncio.create_task(TenantRepository(second).ensure("default"))
            await asyncio.sleep(0.3)
            assert not racing.done(), "the second insert did not wait for the first"
            await first.commit()
            second_id = await asyncio.wait_for(racing, timeout=30)
            await second.commit()
    finally:
        await engine.dispose()
    assert first_id == second_id


# ------------------------------------------------------------------------------ SQLite


async def test_sqlite_runs_one_worker_at_a_time_and_the_second_takes_over(
    workers: Callable[[dict[str, str]], Worker], tmp_path: Path
) -> None:
    database_url = f"sqlite:///{tmp_path / 'workers.db'}"
    with FakeOpenAI(latency=0.02) as fake:
        env = worker_env(database_url, fake)
        first = workers(env)
        await first.wait_for_log(READY)
        second = workers(env)
        await second.wait_for_log(BUSY)

        export = tmp_path / "first.json"
        write_export(export, chats=20, seed=21)
        first_job = ingest(export, env, tmp_path)
        async with probe(database_url) as db:
            job = await db.wait_for_job(first_job, [first, second])
            first_lessees = await db.lessees(first_job)
        assert job["status"] == "SUCCEEDED", job
        # Only the lock holder analysed; the second kept waiting.
        assert list(first_lessees.values()) == [20], first_lessees
        assert READY not in second.log(), second.tail()
        assert second.process.poll() is None, second.tail()

        first.process.send_signal(signal.SIGTERM)
        assert await first.wait_exit() == 0, first.tail()
        await second.wait_for_log(READY, within=30)  # it retries every 5 seconds

        export = tmp_path / "second.json"
        write_export(export, chats=10, seed=22)
        second_job = ingest(export, env, tmp_path)
        async with probe(database_url) as db:
            job = await db.wait_for_job(second_job, [second])
            second_lessees = await db.lessees(second_job)
        asked = fake.requests_by_chat

    assert job["status"] == "SUCCEEDED", job
    assert list(second_lessees.values()) == [10], second_lessees
    assert set(second_lessees).isdisjoint(first_lessees)
    assert set(asked) == chat_ids_of(tmp_path / "first.json") | chat_ids_of(export)
    assert set(asked.values()) == {1}, asked


# ------------------------------------------------------------------------------ both engines


async def test_a_sigtermed_worker_hands_back_its_leases(
    database_url: str, workers: Callable[[dict[str, str]], Worker], tmp_path: Path
) -> None:
    # In-flight requests outlast the grace period, so the stop must hand them back.
    with FakeOpenAI(latency=1.0) as fake:
        env = worker_env(database_url, fake, POWERPULSE_SHUTDOWN_GRACE_SECONDS="0.2")
        run_cli("db", "upgrade", env=env, cwd=tmp_path)
        export = tmp_path / "export.json"
        write_export(export, chats=24, seed=31)
        job_id = ingest(export, env, tmp_path)

        async with probe(database_url) as db:
            worker = workers(env)
            await worker.wait_for_log(READY)
            deadline = time.monotonic() + JOB_SECONDS
            while (await db.task_states(job_id)).get("LEASED", 0) < CONCURRENCY:
                assert time.monotonic() < deadline, f"nothing leased:\n{worker.tail()}"
                await asyncio.sleep(0.05)
            worker.process.send_signal(signal.SIGTERM)
            assert await worker.wait_exit() == 0, worker.tail()
            assert "stopping" in worker.log(), worker.tail()

            states = await db.task_states(job_id)
            stopped = await db.job(job_id)
            assert "LEASED" not in states, states
            assert states.get("QUEUED", 0) > 0, states
            assert sum(states.values()) == 24
            assert stopped["finished_at"] is None, stopped
            assert stopped["processed"] == states.get("DONE", 0), (stopped, states)

            # A new worker finishes the job: what was handed back is analysed after all.
            fake.latency = 0.02
            restarted = workers(env)
            job = await db.wait_for_job(job_id, [restarted])
            assert job["status"] == "SUCCEEDED", job
            assert job["processed"] == job["analyzed"] == 24, job
            assert await db.task_states(job_id) == {"DONE": 24}
        asked = fake.requests_by_chat

    assert set(asked) == chat_ids_of(export)
    assert max(asked.values()) <= 2, asked

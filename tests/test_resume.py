"""Crash and restart: `powerpulse serve` as a real process, killed or stopped mid-job.

A SIGKILLed server loses only the analyses that were in flight; the restarted server
finishes the job without redoing what was already stored. A SIGTERMed server lets
in-flight analyses finish (or hands them back) and leaves no task leased.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine

from fakes.openai_server import FakeOpenAI
from powerpulse.models import AnalysisJob, AnalysisTask

pytestmark = pytest.mark.slow

CHATS = 30
JOB_FIELDS = "id status total processed analyzed cached failed finishedAt error"
STARTUP_SECONDS = 60.0
JOB_SECONDS = 60.0


def export(count: int = CHATS) -> bytes:
    chats = {}
    for index in range(count):
        hour = f"{index % 24:02d}"
        chats[f"resume-{index:02d}"] = [
            {
                "DIRECTION": "to_company",
                "SOCIAL_CREATE_TIME": f"2025-07-01T{hour}:00:00Z",
                "MESSAGE_CONTENT": f"my token {index} did not arrive",
            },
            {
                "DIRECTION": "to_client",
                "SOCIAL_CREATE_TIME": f"2025-07-01T{hour}:04:00Z",
                "MESSAGE_CONTENT": "Resent",
                "AGENT_USERNAME": "jane",
            },
            {
                "DIRECTION": "to_company",
                "SOCIAL_CREATE_TIME": f"2025-07-01T{hour}:06:00Z",
                "MESSAGE_CONTENT": "got it, thanks",
            },
        ]
    return json.dumps(chats).encode()


CHAT_IDS = [f"resume-{index:02d}" for index in range(CHATS)]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Server:
    """One `python -m powerpulse serve` process and an HTTP client for it."""

    def __init__(self, env: dict[str, str], workdir: Path, name: str) -> None:
        self.port = free_port()
        self.log_path = workdir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "powerpulse", "serve", "--port", str(self.port), "--migrate"],
            cwd=workdir,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}", timeout=30)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    async def wait_healthy(self) -> None:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            assert self.process.poll() is None, f"the server exited early:\n{self.log()}"
            try:
                response = await self.http.get("/health")
                if response.status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"the server never became healthy:\n{self.log()}"
            await asyncio.sleep(0.1)

    async def data(self, query: str, variables: dict[str, Any] | None = None) -> Any:
        response = await self.http.post(
            "/graphql", json={"query": query, "variables": variables or {}}
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert "errors" not in body, body["errors"]
        return body["data"]

    async def upload(self, content: bytes) -> dict[str, Any]:
        operations = {
            "query": "mutation($file: Upload!) { uploadChats(file: $file) { analysisQueued "
            f"job {{ {JOB_FIELDS} }} }} }}",
            "variables": {"file": None},
        }
        response = await self.http.post(
            "/graphql",
            data={
                "operations": json.dumps(operations),
                "map": json.dumps({"0": ["variables.file"]}),
            },
            files={"0": ("export.json", content, "application/json")},
            headers={"Apollo-Require-Preflight": "true"},
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert "errors" not in body, body["errors"]
        return body["data"]["uploadChats"]  # type: ignore[no-any-return]

    async def job(self, job_id: str) -> dict[str, Any]:
        found = await self.data(
            f"query($id: ID!) {{ job(id: $id) {{ {JOB_FIELDS} }} }}", {"id": job_id}
        )
        assert found["job"] is not None
        return found["job"]  # type: ignore[no-any-return]

    async def wait_for_progress(self, job_id: str, at_least: int) -> dict[str, Any]:
        deadline = time.monotonic() + JOB_SECONDS
        while True:
            job = await self.job(job_id)
            if job["processed"] >= at_least or job["finishedAt"] is not None:
                return job
            assert time.monotonic() < deadline, f"no progress: {job}\n{self.log()}"
            await asyncio.sleep(0.05)

    async def wait_for_job(self, job_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + JOB_SECONDS
        while True:
            job = await self.job(job_id)
            if job["finishedAt"] is not None:
                return job
            assert time.monotonic() < deadline, f"job never finished: {job}\n{self.log()}"
            await asyncio.sleep(0.1)

    async def chats_with_status(self, status: str) -> set[str]:
        data = await self.data(
            "query($filter: ConversationFilter) { conversations(first: 100, filter: $filter) "
            "{ totalCount edges { node { chatId } } } }",
            {"filter": {"analysisStatus": status}},
        )
        chat_ids = {edge["node"]["chatId"] for edge in data["conversations"]["edges"]}
        assert data["conversations"]["totalCount"] == len(chat_ids)
        return chat_ids

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    async def wait_exit(self, within: float = 30.0) -> int:
        deadline = time.monotonic() + within
        while self.process.poll() is None:
            assert time.monotonic() < deadline, f"the server did not stop:\n{self.log()}"
            await asyncio.sleep(0.05)
        return self.process.returncode

    async def close(self) -> None:
        """Always safe: kill the process if it still runs, close the client and the log."""
        try:
            if not self.http.is_closed:
                await self.http.aclose()
        finally:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait(timeout=30)
            self._log.close()


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(latency=0.3) as server:
        yield server


@pytest.fixture
def server_env(database_url: str, fake: FakeOpenAI) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("POWERPULSE_", "OPENAI_")) and key != "DATABASE_URL"
    }
    env.update(
        DATABASE_URL=database_url,
        OPENAI_API_KEY="x",
        OPENAI_BASE_URL=fake.base_url,
        POWERPULSE_ANALYZER="openai",
        POWERPULSE_ANALYSIS_CONCURRENCY="2",
        POWERPULSE_ANALYSIS_BATCH_SIZE="1",
        POWERPULSE_WORKER_POLL_SECONDS="0.1",
        # PostgreSQL has no start-up release: a dead worker's leases must expire.
        POWERPULSE_ANALYSIS_LEASE_SECONDS="2",
        POWERPULSE_LOG_LEVEL="INFO",
        POWERPULSE_AUTH_DISABLED="true",  # every request acts as the default tenant
    )
    return env


@pytest.fixture
async def servers(server_env: dict[str, str], tmp_path: Path) -> AsyncIterator[Any]:
    """Starts servers; every one is killed when the test ends, whatever happened."""
    started: list[Server] = []

    @asynccontextmanager
    async def start(**extra_env: str) -> AsyncIterator[Server]:
        server = Server({**server_env, **extra_env}, tmp_path, f"server-{len(started)}")
        started.append(server)
        try:
            await server.wait_healthy()
            yield server
        finally:
            await server.close()

    try:
        yield start
    finally:
        for server in started:
            await server.close()


async def job_row(database_url: str, job_id: str) -> dict[str, Any]:
    engine = create_async_engine(database_url)
    table = AnalysisJob.__table__  # type: ignore[attr-defined]
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(select(table).where(table.c.id == int(job_id)))
            return dict(rows.mappings().one())
    finally:
        await engine.dispose()


async def task_states(database_url: str) -> dict[str, int]:
    engine = create_async_engine(database_url)
    table = AnalysisTask.__table__  # type: ignore[attr-defined]
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(
                select(table.c.state, func.count()).group_by(table.c.state)
            )
            return {state: int(count) for state, count in rows}
    finally:
        await engine.dispose()


async def test_killed_server_resumes_the_job_without_redoing_finished_chats(
    servers: Any, fake: FakeOpenAI, database_url: str
) -> None:
    async with servers() as first:
        payload = await first.upload(export())
        job_id = payload["job"]["id"]
        assert payload["analysisQueued"] == CHATS
        await first.wait_for_progress(job_id, at_least=4)
        done_before = await first.chats_with_status("DONE")
        first.signal(signal.SIGKILL)
        await first.wait_exit()
    assert 4 <= len(done_before) < CHATS, "the job was not killed mid-way"

    async with servers() as second:
        job = await second.wait_for_job(job_id)

        assert job["status"] == "SUCCEEDED"
        assert (job["total"], job["processed"], job["analyzed"], job["failed"]) == (
            CHATS,
            CHATS,
            CHATS,
            0,
        )
        assert await second.chats_with_status("DONE") == set(CHAT_IDS)
    assert await task_states(database_url) == {"DONE": CHATS}
    asked = fake.requests_by_chat
    assert set(asked) == set(CHAT_IDS)
    assert max(asked.values()) <= 2, asked
    # What was stored before the crash is never asked for again.
    assert {chat_id: asked[chat_id] for chat_id in done_before} == dict.fromkeys(done_before, 1)


@pytest.mark.parametrize(
    ("grace", "in_flight_finish"),
    [("10", True), ("0.05", False)],
    ids=["in-flight-finish", "in-flight-handed-back"],
)
async def test_stopped_server_leaves_no_task_leased_and_the_job_completes_after_restart(
    servers: Any,
    fake: FakeOpenAI,
    database_url: str,
    grace: str,
    in_flight_finish: bool,
) -> None:
    if not in_flight_finish:
        fake.latency = 1.0  # outlasts the grace period
    async with servers(POWERPULSE_SHUTDOWN_GRACE_SECONDS=grace) as first:
        payload = await first.upload(export())
        job_id = payload["job"]["id"]
        await first.wait_for_progress(job_id, at_least=4)
        done_before = await first.chats_with_status("DONE")
        await first.http.aclose()  # no open connection to wait for
        first.signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal it caught.
        assert await first.wait_exit() in {0, -signal.SIGTERM}, first.log()
        assert "Application shutdown complete" in first.log(), first.log()
    assert len(done_before) < CHATS, "the job was not stopped mid-way"

    states = await task_states(database_url)
    assert "LEASED" not in states, states
    assert sum(states.values()) == CHATS
    # The job counted exactly the tasks that are DONE, and it is not finished.
    stopped = await job_row(database_url, job_id)
    assert stopped["finished_at"] is None
    assert stopped["analyzed"] + stopped["cached"] + stopped["failed"] == states.get("DONE", 0)
    assert len(done_before) <= states.get("DONE", 0) < CHATS

    fake.latency = 0.3
    async with servers() as second:
        job = await second.wait_for_job(job_id)

        assert job["status"] == "SUCCEEDED"
        assert (job["total"], job["processed"], job["analyzed"], job["failed"]) == (
            CHATS,
            CHATS,
            CHATS,
            0,
        )
        assert await second.chats_with_status("DONE") == set(CHAT_IDS)
    assert await task_states(database_url) == {"DONE": CHATS}
    asked = fake.requests_by_chat
    assert set(asked) == set(CHAT_IDS)
    assert {chat_id: asked[chat_id] for chat_id in done_before} == dict.fromkeys(done_before, 1)
    if in_flight_finish:
        assert asked == dict.fromkeys(CHAT_IDS, 1)
    else:
        # The analyses cut short by the stop were handed back and asked for once more.
        assert sorted(set(asked.values())) == [1, 2], asked

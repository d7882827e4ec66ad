"""A running app with a counter of the SQL statements its own engine sends.

Tests of what a request reuses (kept analytics answers, kept conversation responses) count
the statements a request issues to see it answered without reading, and check the answer
against what the database holds after a write.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sqlalchemy import event

JOB = "query($id: ID!) { job(id: $id) { status finishedAt } }"


class CountingApp:
    """One running app (one process's view) with a statement counter on its engine."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.state = client.state
        self.statements: list[str] = []
        engine = self.state.database.engine.sync_engine
        event.listen(engine, "before_cursor_execute", self._count)

    def _count(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.statements.append(statement)

    async def data(self, query: str, variables: dict[str, Any] | None = None) -> Any:
        return await self.client.data(query, variables)

    async def counted(self, query: str, variables: dict[str, Any] | None = None) -> Any:
        """The answer's data and the number of SQL statements the request issued."""
        body, statements = await self.counted_body(query, variables)
        assert "errors" not in body, body["errors"]
        return body["data"], statements

    async def counted_body(
        self, query: str, variables: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], int]:
        """The whole response body (errors included) and the statements it issued."""
        self.statements.clear()
        body = await self.client.query(query, variables)
        return body, len(self.statements)

    async def upload(self, content: bytes) -> dict[str, Any]:
        response = await self.client.upload(content, selection="messagesStored job { id }")
        assert response.status_code == 200, response.text
        body = response.json()
        assert "errors" not in body, body["errors"]
        return body["data"]["uploadChats"]  # type: ignore[no-any-return]

    async def wait_for_job(self, job_id: str, within: float = 30.0) -> None:
        deadline = time.monotonic() + within
        while (await self.data(JOB, {"id": job_id}))["job"]["finishedAt"] is None:
            assert time.monotonic() < deadline, "the analysis job did not finish"
            await asyncio.sleep(0.05)

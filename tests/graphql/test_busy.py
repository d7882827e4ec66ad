"""With every database connection taken, requests get a coded answer, never a 500."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

METRICS = "{ metrics { totalConversations } }"
POOL = 2  # the conversations export reads with two connections


@pytest.fixture
async def starved(app_client_factory: Any, settings_factory: Any) -> Any:
    """An app with a small pool and a short wait for a free connection."""
    client = await app_client_factory(
        settings_factory(db_pool_size=POOL, db_max_overflow=0, db_pool_timeout=0.2),
        run_worker=False,
    )
    assert (await client.data(METRICS))["metrics"]["totalConversations"] == 0
    return client


@contextlib.asynccontextmanager
async def every_connection_taken(client: Any) -> AsyncIterator[None]:
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(POOL):
            await stack.enter_async_context(client.state.database.read())
        yield


async def test_graphql_answers_service_unavailable(starved: Any) -> None:
    async with every_connection_taken(starved):
        body = await starved.query(METRICS)
    assert body["data"] is None
    (error,) = body["errors"]
    assert error["extensions"]["code"] == "SERVICE_UNAVAILABLE"
    assert "busy" in error["message"]
    # Released again: the same query answers.
    assert (await starved.data(METRICS))["metrics"]["totalConversations"] == 0


@pytest.mark.parametrize("path", ["/export/conversations.csv", "/export/messages.csv"])
async def test_csv_export_answers_503_with_retry_after(starved: Any, path: str) -> None:
    async with every_connection_taken(starved):
        response = await starved.http.get(path)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert response.json()["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE"
    answered = await starved.http.get(path)
    assert answered.status_code == 200
    assert answered.text.startswith("chat_id,")  # the header row, and an empty export

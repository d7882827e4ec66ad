"""Every GraphQL query issues a fixed number of SQL statements, however much data there is:
grouping happens in the database and nested lists load through data loaders, never with a
query per bucket, agent, topic, conversation or conversation's messages.

Statements are counted on the app's own engine ("before_cursor_execute"), with no analysis
worker running so that nothing else talks to the database while a request is measured.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import event

from fakes.openai_server import FakeOpenAI
from powerpulse.app import create_app
from powerpulse.settings import Settings

RANGE = {"startDate": "2025-07-01", "endDate": "2025-07-30"}
METRICS_FIELDS = (
    "totalConversations totalMessages agentCount replyCount avgResponseTimeMinutes "
    "medianResponseTimeMinutes p90FirstResponseTimeMinutes analyzedConversations "
    "csatPercentage csi csiEffort sentimentDistribution { positive } "
    "topTopics(limit: 5) { topic count }"
)
QUERIES: dict[str, tuple[str, dict[str, Any]]] = {
    "metrics": (
        f"query($f: ConversationFilter) {{ metrics(filter: $f) {{ {METRICS_FIELDS} "
        "previousPeriod { totalConversations csi topTopics { topic } } } }",
        {"f": RANGE},
    ),
    "timeseries": (
        "query($f: ConversationFilter) { timeseries(filter: $f, interval: DAY) { start "
        f"metrics {{ {METRICS_FIELDS} previousPeriod {{ totalConversations }} }} }} }}",
        {"f": RANGE},
    ),
    "agents": (
        "query { agents(first: 5, orderBy: CSI_DESC) { totalCount pageInfo { hasNextPage } "
        "edges { node { agent conversations replyCount medianResponseTimeMinutes "
        "firstResponses csatPercentage avgCsi } } } }",
        {},
    ),
    "topics": (
        "query($f: ConversationFilter) { topics(filter: $f, limit: 10) { topic conversations "
        "percentage csatPercentage avgCsi previousPeriodConversations } }",
        {"f": RANGE},
    ),
    "conversations": (
        "query { conversations(first: 20) { totalCount pageInfo { hasNextPage } edges { node "
        "{ chatId agents analysisStatus csi { score } analysis { satisfactionScore topics } "
        "messages(first: 2) { totalCount edges { node { content } } } } } } }",
        {},
    ),
    "heatmap": (
        "query($f: ConversationFilter) { activityHeatmap(filter: $f) { weekday hour "
        "customerMessages conversationsStarted } }",
        {"f": RANGE},
    ),
    "histogram": (
        "query($f: ConversationFilter) { firstResponseTimeHistogram(filter: $f) { label "
        "conversations } }",
        {"f": RANGE},
    ),
}
TOPIC_WORDS = ("my token is late", "power outage here", "my bill is high", "hello")


def chats(first: int, count: int, *, days: int, agents: int) -> dict[str, list[dict[str, Any]]]:
    """`count` chats from number `first` on, spread over `days` of July and `agents` agents."""
    exported = {}
    for number in range(first, first + count):
        day = 1 + number % days
        hour = 8 + number % 10
        at = f"2025-07-{day:02d}T{hour:02d}"
        exported[f"chat-{number:03d}"] = [
            {
                "DIRECTION": "to_company",
                "SOCIAL_CREATE_TIME": f"{at}:00:00Z",
                "MESSAGE_CONTENT": TOPIC_WORDS[number % len(TOPIC_WORDS)],
            },
            {
                "DIRECTION": "to_client",
                "SOCIAL_CREATE_TIME": f"{at}:{5 + number % 50:02d}:00Z",
                "MESSAGE_CONTENT": "Looking into it",
                "AGENT_USERNAME": f"agent-{number % agents}",
            },
            {
                "DIRECTION": "to_company",
                "SOCIAL_CREATE_TIME": f"{at}:58:00Z",
                "MESSAGE_CONTENT": "thank you" if number % 3 else "still not fixed",
            },
        ]
    return exported


@asynccontextmanager
async def running(settings: Settings, *, run_worker: bool) -> AsyncIterator[Any]:
    app = create_app(settings, run_worker=run_worker, migrate=True)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield manager, http


async def post(http: httpx.AsyncClient, query: str, variables: dict[str, Any]) -> Any:
    response = await http.post("/graphql", json={"query": query, "variables": variables})
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body["errors"]
    return body["data"]


async def load_and_analyse(settings: Settings, exported: dict[str, Any]) -> None:
    """Upload with an analysis worker running and wait until the job has finished."""
    async with running(settings, run_worker=True) as (_, http):
        operations = {
            "query": "mutation($f: Upload!) { uploadChats(file: $f) { job { id } } }",
            "variables": {"f": None},
        }
        response = await http.post(
            "/graphql",
            data={"operations": json.dumps(operations), "map": '{"0": ["variables.f"]}'},
            files={"0": ("export.json", json.dumps(exported).encode(), "application/json")},
            headers={"GraphQL-Require-Preflight": "1"},
        )
        assert response.status_code == 200, response.text
        job_id = response.json()["data"]["uploadChats"]["job"]["id"]
        deadline = time.monotonic() + 30
        query = "query($id: ID!) { job(id: $id) { status finishedAt } }"
        while (job := (await post(http, query, {"id": job_id}))["job"])["finishedAt"] is None:
            assert time.monotonic() < deadline, "the analysis job did not finish"
            await asyncio.sleep(0.05)
        assert job["status"] == "SUCCEEDED"


async def statement_counts(settings: Settings) -> tuple[dict[str, int], dict[str, Any]]:
    """SQL statements per request for each query, and the answers (to check the data)."""
    async with running(settings, run_worker=False) as (manager, http):
        engine = manager._state["powerpulse"].database.engine.sync_engine
        executed: list[str] = []

        def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            executed.append(statement)

        event.listen(engine, "before_cursor_execute", count)
        try:
            counts: dict[str, int] = {}
            answers: dict[str, Any] = {}
            for name, (query, variables) in QUERIES.items():
                await post(http, query, variables)  # warm caches (tenant settings, pool)
                executed.clear()
                answers[name] = await post(http, query, variables)
                counts[name] = len(executed)
        finally:
            event.remove(engine, "before_cursor_execute", count)
    return counts, answers


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.mark.slow
async def test_statements_per_request_do_not_grow_with_the_data(
    settings_factory: Any, fake: FakeOpenAI
) -> None:
    settings = settings_factory(
        analyzer="openai",
        openai_api_key="k",
        openai_base_url=fake.base_url,
        worker_poll_seconds=0.05,
        auth_disabled=True,
        # Count what computing an answer costs: kept answers are test_answer_cache's part.
        analytics_cache_entries=0,
    )

    await load_and_analyse(settings, chats(0, 10, days=3, agents=2))
    small, small_answers = await statement_counts(settings)
    await load_and_analyse(settings, chats(10, 90, days=30, agents=8))
    large, large_answers = await statement_counts(settings)

    # The data really grew: more conversations, days, agents on the page.
    assert small_answers["metrics"]["metrics"]["totalConversations"] == 10
    assert large_answers["metrics"]["metrics"]["totalConversations"] == 100
    assert large_answers["metrics"]["metrics"]["analyzedConversations"] == 100
    assert small_answers["agents"]["agents"]["totalCount"] == 2
    assert large_answers["agents"]["agents"]["totalCount"] == 8
    assert len(large_answers["agents"]["agents"]["edges"]) == 5
    small_days = [
        b for b in small_answers["timeseries"]["timeseries"] if b["metrics"]["totalConversations"]
    ]
    large_days = [
        b for b in large_answers["timeseries"]["timeseries"] if b["metrics"]["totalConversations"]
    ]
    assert (len(small_days), len(large_days)) == (3, 30)
    assert len(small_answers["conversations"]["conversations"]["edges"]) == 10
    assert len(large_answers["conversations"]["conversations"]["edges"]) == 20
    assert all(
        len(edge["node"]["messages"]["edges"]) == 2
        for edge in large_answers["conversations"]["conversations"]["edges"]
    )
    assert len(large_answers["topics"]["topics"]) == 4
    # And no query asked the database more often for it.
    assert all(count > 0 for count in small.values()), small
    assert large == small

"""SQLite and PostgreSQL give the same answers on the same data."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from asgi_lifespan import LifespanManager

from powerpulse.app import create_app
from powerpulse.settings import Settings

DEMO = (resources.files("powerpulse") / "data" / "demo_export.json").read_bytes()

METRICS = """
totalConversations totalMessages customerMessages agentMessages botMessages agentCount
repeatContactConversations avgFirstResponseTimeMinutes medianFirstResponseTimeMinutes
p90FirstResponseTimeMinutes avgResponseTimeMinutes medianResponseTimeMinutes
p90ResponseTimeMinutes replyCount analyzedConversations csatPercentage fcrPercentage
resolutionRate avgSatisfactionScore avgSentimentScore avgEffortScore
sentimentDistribution { positive neutral negative positiveFraction neutralFraction
negativeFraction } topTopics(limit: 20) { topic count percentage } inputTokens outputTokens
costUsd
"""
CONVERSATION = """
chatId platform messageCount customerMessageCount agentMessageCount botMessageCount
firstMessageAt lastMessageAt durationMinutes firstResponseTimeMinutes avgResponseTimeMinutes
replyCount contactCount agents analysisStatus
analysis { satisfactionScore sentimentScore initialSentiment finalSentiment sentimentLabel
resolved firstContactResolution effortScore topics language summary }
"""
FILTERS: list[dict[str, Any] | None] = [
    None,
    {"startDate": "2025-08-05", "endDate": "2025-08-12"},
    {"search": "token"},
    {"satisfied": False},
    {"topic": "outage"},
]


async def _snapshot(database_url: str, tmp_path: Path) -> dict[str, Any]:
    import httpx

    settings = Settings(
        database_url=database_url, env="test", worker_poll_seconds=0.05, auth_disabled=True
    )
    app = create_app(settings, migrate=True)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            import json

            operations = {
                "query": "mutation($f: Upload!) { uploadChats(file: $f) { job { id } } }",
                "variables": {"f": None},
            }
            response = await http.post(
                "/graphql",
                data={"operations": json.dumps(operations), "map": '{"0": ["variables.f"]}'},
                files={"0": ("demo.json", DEMO, "application/json")},
                headers={"GraphQL-Require-Preflight": "1"},
            )
            job_id = response.json()["data"]["uploadChats"]["job"]["id"]
            await _wait_for_job(http, job_id)
            snapshot: dict[str, Any] = {}
            for index, selection in enumerate(FILTERS):
                body = (
                    await http.post(
                        "/graphql",
                        json={
                            "query": "query($f: ConversationFilter) { metrics(filter: $f) {"
                            + METRICS
                            + "} conversations(first: 100, filter: $f) { totalCount edges "
                            "{ node {" + CONVERSATION + "} } } }",
                            "variables": {"f": selection},
                        },
                    )
                ).json()
                assert "errors" not in body, body
                snapshot[f"filter{index}"] = body["data"]
            return snapshot


async def _wait_for_job(http: Any, job_id: str) -> None:
    import asyncio

    for _ in range(600):
        body = (
            await http.post(
                "/graphql",
                json={
                    "query": "query($id: ID!) { job(id: $id) { status finishedAt } }",
                    "variables": {"id": job_id},
                },
            )
        ).json()
        if body["data"]["job"]["finishedAt"]:
            assert body["data"]["job"]["status"] == "SUCCEEDED"
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the analysis job did not finish")


def _approximately(value: Any) -> Any:
    if isinstance(value, float):
        return pytest.approx(value, rel=1e-9, abs=1e-9)
    if isinstance(value, dict):
        return {key: _approximately(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_approximately(item) for item in value]
    return value


@pytest.mark.slow
async def test_every_metric_and_conversation_is_the_same_on_sqlite_and_postgres(
    postgres_url: str, tmp_path: Path
) -> None:
    on_sqlite = await _snapshot(f"sqlite+aiosqlite:///{tmp_path / 'parity.db'}", tmp_path)
    on_postgres = await _snapshot(postgres_url, tmp_path)

    assert on_sqlite["filter0"]["metrics"]["totalConversations"] > 50
    assert on_sqlite["filter0"]["metrics"]["analyzedConversations"] > 50
    assert on_postgres == _approximately(on_sqlite)

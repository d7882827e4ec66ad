"""The requests the benchmark sends: GraphQL queries, the CSV export, and an upload.

Used in-process (httpx ASGITransport) by the queries and growth sections and over HTTP by
the ingest and load sections: the same client code either way.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The synthetic exports cover 30 days from 2025-08-01 (powerpulse.synthetic.DEFAULT_START).
WEEK = {"startDate": "2025-08-11", "endDate": "2025-08-17"}
NINETY_DAYS = {"startDate": "2025-07-17", "endDate": "2025-10-14"}
PAGE_SIZE = 20

METRIC_FIELDS = """
    totalConversations totalMessages customerMessages agentMessages botMessages agentCount
    repeatContactConversations avgFirstResponseTimeMinutes medianFirstResponseTimeMinutes
    p90FirstResponseTimeMinutes avgResponseTimeMinutes medianResponseTimeMinutes
    p90ResponseTimeMinutes replyCount analyzedConversations csatPercentage fcrPercentage
    resolutionRate avgSatisfactionScore avgSentimentScore avgEffortScore csi
"""

METRICS = (
    "query Metrics($filter: ConversationFilter) "
    f"{{ metrics(filter: $filter) {{ {METRIC_FIELDS} }} }}"
)

CONVERSATIONS = """
query Conversations($first: Int!, $after: String) {
  conversations(first: $first, after: $after) {
    totalCount
    pageInfo { hasNextPage endCursor }
    edges { cursor node {
      chatId messageCount customerMessageCount agentMessageCount firstMessageAt lastMessageAt
      durationMinutes firstResponseTimeMinutes avgResponseTimeMinutes contactCount agents
      analysisStatus
    } }
  }
}
"""

CONVERSATION = """
query Conversation($chatId: String!) {
  conversation(chatId: $chatId) {
    chatId messageCount firstMessageAt lastMessageAt firstResponseTimeMinutes agents
    analysisStatus
    messages(first: 100) {
      pageInfo { hasNextPage endCursor }
      edges { node { id sender content sentAt agentUsername agentEmail } }
    }
  }
}
"""

TIMESERIES = """
query Timeseries($filter: ConversationFilter) {
  timeseries(filter: $filter, interval: DAY) {
    start
    metrics {
      totalConversations totalMessages replyCount avgFirstResponseTimeMinutes
      medianFirstResponseTimeMinutes p90FirstResponseTimeMinutes avgResponseTimeMinutes
    }
  }
}
"""

AGENTS = """
query Agents {
  agents(first: 20) {
    totalCount
    edges { node {
      agent conversations messages replyCount avgResponseTimeMinutes medianResponseTimeMinutes
    } }
  }
}
"""

TOPICS = """
query Topics {
  topics(limit: 20) {
    topic conversations percentage csatPercentage avgSentimentScore resolutionRate avgCsi
  }
}
"""

UPLOAD = """
mutation ($file: Upload!) {
  uploadChats(file: $file) {
    conversationsReceived messagesReceived messagesStored duplicatesSkipped
    autoresponsesFiltered invalidRecords conversationsCreated conversationsUpdated
    analysisQueued job { id status total }
  }
}
"""

JOB = (
    "query Job($id: ID!) { job(id: $id) "
    "{ id status total processed analyzed cached failed finishedAt error } }"
)


@dataclass
class Params:
    """Query arguments found before timing (agent, a ~100-message chat, a deep cursor)."""

    agent: str | None = None
    chat_id: str | None = None
    chat_messages: int | None = None
    deep_cursor: str | None = None
    deep_page: int = 0
    conversations: int | None = None


# name -> (label for the report, load-mix weight). The full CSV export has no weight: in
# the load section it comes from a client of its own at a fixed rate (load.py).
QUERIES: dict[str, tuple[str, int]] = {
    "metrics_all": ("metrics, all time", 3),
    "metrics_week": ("metrics, one week", 3),
    "metrics_agent": ("metrics, one agent", 2),
    "conversations_first": (f"conversations, first page ({PAGE_SIZE})", 4),
    "conversations_deep": ("conversations, deep page", 2),
    "conversation_detail": ("conversation(chatId) + messages(first: 100)", 3),
    "timeseries_90d": ("timeseries DAY over 90 days", 2),
    "agents": ("agents (first 20)", 2),
    "topics": ("topics (limit 20)", 2),
    "csv_export": ("CSV export, all conversations (streamed)", 0),
}


def request_for(name: str, params: Params) -> tuple[str, dict[str, Any]] | None:
    """(query, variables) of a GraphQL request; None for the CSV export."""
    if name == "metrics_all":
        return METRICS, {"filter": None}
    if name == "metrics_week":
        return METRICS, {"filter": WEEK}
    if name == "metrics_agent":
        return METRICS, {"filter": {"agent": params.agent}}
    if name == "conversations_first":
        return CONVERSATIONS, {"first": PAGE_SIZE, "after": None}
    if name == "conversations_deep":
        return CONVERSATIONS, {"first": PAGE_SIZE, "after": params.deep_cursor}
    if name == "conversation_detail":
        return CONVERSATION, {"chatId": params.chat_id}
    if name == "timeseries_90d":
        return TIMESERIES, {"filter": NINETY_DAYS}
    if name == "agents":
        return AGENTS, {}
    if name == "topics":
        return TOPICS, {}
    if name == "csv_export":
        return None
    raise KeyError(name)


@dataclass
class Outcome:
    seconds: float
    ok: bool
    bytes: int
    error: str | None = None
    status: int | None = None


async def graphql(client: Any, query: str, variables: dict[str, Any] | None = None) -> Any:
    response = await client.post("/graphql", json={"query": query, "variables": variables or {}})
    if response.status_code != 200:
        raise RuntimeError(f"HTTP {response.status_code}: {response.text[:300]}")
    payload = response.json()
    if payload.get("errors"):
        raise RuntimeError(f"GraphQL errors: {json.dumps(payload['errors'])[:300]}")
    return payload["data"]


async def execute(client: Any, name: str, params: Params) -> Outcome:
    """Send one request and read the whole answer; never raises."""
    started = time.perf_counter()
    try:
        request = request_for(name, params)
        if request is None:
            size = 0
            async with client.stream("GET", "/export/conversations.csv") as response:
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                status = response.status_code
            elapsed = time.perf_counter() - started
            if status != 200:
                return Outcome(elapsed, False, size, f"HTTP {status}", status)
            return Outcome(elapsed, True, size, None, status)
        query, variables = request
        response = await client.post("/graphql", json={"query": query, "variables": variables})
        body = response.content
        elapsed = time.perf_counter() - started
        if response.status_code != 200:
            return Outcome(
                elapsed,
                False,
                len(body),
                f"HTTP {response.status_code}: {body[:200].decode(errors='replace')}",
                response.status_code,
            )
        payload = json.loads(body)
        if payload.get("errors"):
            return Outcome(
                elapsed,
                False,
                len(body),
                "GraphQL: " + json.dumps(payload["errors"])[:200],
                response.status_code,
            )
        return Outcome(elapsed, True, len(body), None, response.status_code)
    except Exception as exc:
        return Outcome(
            time.perf_counter() - started, False, 0, f"{type(exc).__name__}: {exc}"[:200]
        )


async def prepare_params(client: Any, database_url: str, *, deep_pages: int) -> Params:
    """Find an agent, a chat with about 100 messages and a cursor `deep_pages` pages deep."""
    from sqlalchemy import text

    from powerpulse.db import create_engine

    from .common import bench_settings

    params = Params()
    engine = create_engine(bench_settings(database_url))
    try:
        async with engine.connect() as connection:
            row = (
                await connection.execute(
                    text(
                        "SELECT chat_id, message_count FROM conversations "
                        "ORDER BY abs(message_count - 100), id LIMIT 1"
                    )
                )
            ).first()
            params.conversations = (
                await connection.execute(text("SELECT count(*) FROM conversations"))
            ).scalar()
    finally:
        await engine.dispose()
    if row is not None:
        params.chat_id, params.chat_messages = row[0], int(row[1])
    agents = await graphql(client, "{ agents(first: 1) { edges { node { agent } } } }")
    edges = agents["agents"]["edges"]
    params.agent = edges[0]["node"]["agent"] if edges else "nobody"
    cursor = None
    for page in range(deep_pages):
        data = await graphql(client, CONVERSATIONS, {"first": PAGE_SIZE, "after": cursor})
        info = data["conversations"]["pageInfo"]
        if not info["hasNextPage"]:
            break
        cursor = info["endCursor"]
        params.deep_page = page + 2  # the page `cursor` leads to
    params.deep_cursor = cursor
    return params


async def upload(client: Any, path: Path) -> tuple[float, dict[str, Any]]:
    """Upload an export with the multipart request spec, streaming the file."""
    operations = json.dumps({"query": UPLOAD, "variables": {"file": None}})
    started = time.perf_counter()
    with path.open("rb") as stream:
        response = await client.post(
            "/graphql",
            data={"operations": operations, "map": json.dumps({"0": ["variables.file"]})},
            files={"0": (path.name, stream, "application/json")},
            headers={"Apollo-Require-Preflight": "true"},
        )
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise RuntimeError(f"upload: HTTP {response.status_code}: {response.text[:300]}")
    payload = response.json()
    if payload.get("errors"):
        raise RuntimeError(f"upload: {json.dumps(payload['errors'])[:300]}")
    return elapsed, payload["data"]["uploadChats"]

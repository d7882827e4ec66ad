"""Tenants share one database and never each other's data or settings.

Two tenants, acme and bolt, upload exports whose chat ids overlap ("shared-1", "shared-2")
with entirely different messages, agents, words, dates and topics. Every query, filter,
export and job lookup is checked both ways: by hand-picked facts, and by taking a snapshot
of everything a tenant sees before the other tenant uploads and comparing it afterwards
(run in both upload orders, so each direction is covered).

Then each tenant's own settings: timezone, autoresponse patterns, session gap and topics
file, set with TenantAdmin.configure before the app first reads the tenant (tenant settings
are cached for 15 s per process).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from chat_exports import SAMPLE, SAMPLE_CHATS, agent, bot, customer, export, upload_ok

import powerpulse.services.tenants as tenants_module
from powerpulse.db import Database, create_engine
from powerpulse.services.tenants import TenantAdmin
from powerpulse.settings import Settings

pytestmark = pytest.mark.postgres

ACME_CHATS = {
    "shared-1": [
        customer("2025-04-01T09:00:00Z", "My bill is wrong, zebra account 5521"),
        agent("2025-04-01T09:04:00Z", "Checking your bill now", username="alice"),
        customer("2025-04-01T09:10:00Z", "thanks, zebra sorted"),
    ],
    "shared-2": [
        customer("2025-04-02T14:00:00Z", "zebra invoice overcharged again"),
        agent("2025-04-02T14:30:00Z", "Refunded the charge", email="carol@acme.example"),
    ],
    "acme-only": [
        customer("2025-04-02T18:00:00Z", "hello zebra"),
        bot("2025-04-02T18:00:05Z", "Dial *977# for balance"),
        agent("2025-04-02T18:02:00Z", "Hi, how can I help?", username="alice"),
    ],
}
BOLT_CHATS = {
    "shared-1": [
        customer("2025-04-10T06:00:00Z", "No power since morning on yak street"),
        agent("2025-04-10T06:20:00Z", "Crews are restoring power", username="bob"),
        customer("2025-04-10T07:00:00Z", "still no power, yak"),
        agent("2025-04-10T07:05:00Z", "Power restored now", username="bob"),
        bot("2025-04-10T07:06:00Z", "Please rate us"),
    ],
    "shared-2": [
        customer("2025-04-11T21:00:00Z", "yak transformer fault, blackout"),
        customer("2025-04-11T21:05:00Z", "anyone there?"),
    ],
    "bolt-only": [
        customer("2025-04-12T03:00:00Z", "yak token not received"),
        agent("2025-04-12T03:45:00Z", "Here is your token", email="dave@bolt.example"),
        customer("2025-04-13T05:00:00Z", "thanks yak"),
    ],
}
EXPORTS = {"acme": export(ACME_CHATS), "bolt": export(BOLT_CHATS)}
# acme's "*977#" bot message is an autoresponse and is not stored.
STORED_MESSAGES = {"acme": 7, "bolt": 10}
CHAT_IDS = {
    "acme": {"shared-1", "shared-2", "acme-only"},
    "bolt": {"shared-1", "shared-2", "bolt-only"},
}
WORD = {"acme": "zebra", "bolt": "yak"}
AGENTS = {"acme": {"alice", "carol@acme.example"}, "bolt": {"bob", "dave@bolt.example"}}
TOPIC = {"acme": "billing", "bolt": "outage"}
OTHER = {"acme": "bolt", "bolt": "acme"}

METRICS_FIELDS = """
    totalConversations totalMessages customerMessages agentMessages botMessages agentCount
    repeatContactConversations avgFirstResponseTimeMinutes medianFirstResponseTimeMinutes
    p90FirstResponseTimeMinutes avgResponseTimeMinutes medianResponseTimeMinutes
    p90ResponseTimeMinutes replyCount analyzedConversations csatPercentage fcrPercentage
    resolutionRate avgSatisfactionScore avgSentimentScore avgEffortScore
    sentimentDistribution { positive neutral negative positiveFraction neutralFraction
      negativeFraction }
    inputTokens outputTokens costUsd csi csiEffectiveness csiEffort csiEfficiency csiEmpathy
    topTopics(limit: 10) { topic count percentage }
"""
CONVERSATION_FIELDS = """
    chatId platform messageCount customerMessageCount agentMessageCount botMessageCount
    firstMessageAt lastMessageAt durationMinutes firstResponseTimeMinutes
    avgResponseTimeMinutes replyCount contactCount analysisStatus analysisFailureReason
    analysis { satisfactionScore isSatisfied sentimentScore initialSentiment finalSentiment
      sentimentLabel resolved firstContactResolution effortScore summary language analyzer
      model promptVersion inputTokens outputTokens costUsd analyzedAt topics }
    csi { score effectiveness effort efficiency empathy }
    agents
    messages(first: 20) { totalCount pageInfo { hasNextPage endCursor }
      edges { cursor node { id externalId sender content sentAt agentUsername agentEmail } } }
"""
JOB_FIELDS = (
    "id status total processed analyzed cached failed forced inputTokens outputTokens costUsd "
    "createdAt startedAt finishedAt error"
)
EVERYTHING = f"""
{{
  metrics {{ {METRICS_FIELDS} }}
  conversations(first: 20) {{ totalCount
    pageInfo {{ hasNextPage hasPreviousPage startCursor endCursor }}
    edges {{ cursor node {{ {CONVERSATION_FIELDS} }} }} }}
  byFirstResponse: conversations(first: 20, orderBy: FIRST_RESPONSE_TIME_ASC) {{
    edges {{ node {{ chatId }} }} }}
  byCsi: conversations(first: 20, orderBy: CSI_DESC) {{ edges {{ node {{ chatId }} }} }}
  day: timeseries(interval: DAY) {{ start metrics {{ {METRICS_FIELDS} }} }}
  hour: timeseries(interval: HOUR) {{ start metrics {{ totalConversations totalMessages }} }}
  activityHeatmap {{ weekday hour customerMessages conversationsStarted }}
  firstResponseTimeHistogram {{ label minMinutes maxMinutes conversations }}
  agents(first: 20) {{ totalCount edges {{ cursor node {{ agent conversations messages
    replyCount avgResponseTimeMinutes medianResponseTimeMinutes firstResponses
    avgFirstResponseTimeMinutes analyzedConversations csatPercentage resolutionRate
    avgCsi }} }} }}
  topics(limit: 20) {{ topic conversations percentage csatPercentage avgSentimentScore
    resolutionRate avgCsi previousPeriodConversations }}
}}
"""
# Under each filter, every query again with fewer fields (the unfiltered one has them all).
FILTERED = f"""
query($filter: ConversationFilter) {{
  metrics(filter: $filter) {{ {METRICS_FIELDS}
    previousPeriod {{ totalConversations totalMessages replyCount analyzedConversations }} }}
  conversations(first: 20, filter: $filter) {{ totalCount
    edges {{ node {{ chatId messageCount firstMessageAt }} }} }}
  timeseries(filter: $filter) {{ start metrics {{ totalConversations totalMessages }} }}
  activityHeatmap(filter: $filter) {{ weekday hour customerMessages conversationsStarted }}
  firstResponseTimeHistogram(filter: $filter) {{ label conversations }}
  agents(filter: $filter, first: 20) {{ totalCount edges {{ node {{ agent conversations
    messages replyCount }} }} }}
  topics(filter: $filter, limit: 20) {{ topic conversations previousPeriodConversations }}
}}
"""
FILTERS: dict[str, dict[str, Any]] = {
    "acme-days": {"startDate": "2025-04-01", "endDate": "2025-04-02"},
    "bolt-days": {"startDate": "2025-04-10", "endDate": "2025-04-13"},
    "search-zebra": {"search": "zebra"},
    "search-yak": {"search": "yak"},
    "acme-agents": {"agents": sorted(AGENTS["acme"])},
    "bolt-agents": {"agents": sorted(AGENTS["bolt"])},
    "agent-bob": {"agent": "bob"},
    "topics-billing": {"topics": ["billing"]},
    "topics-outage": {"topics": ["outage"]},
    "topic-outage": {"topic": "outage"},
    "shared-chat-ids": {"chatIds": ["shared-1", "shared-2"]},
    "acme-only-id": {"chatIds": ["acme-only", "shared-1"]},
    "bolt-only-id": {"chatIds": ["bolt-only", "shared-1"]},
    "repeat-contact": {"repeatContact": True},
    "answered": {"minFirstResponseTimeMinutes": 0},
    "slow": {"maxFirstResponseTimeMinutes": 1000, "minFirstResponseTimeMinutes": 10},
    "satisfied": {"satisfied": True},
    "unresolved": {"resolved": False},
    "negative": {"sentiment": "NEGATIVE"},
    "english": {"language": "en"},
    "any-csi": {"minCsi": 0, "maxCsi": 100},
}
CSV_QUERIES = (
    "",
    "?search=yak",
    "?search=zebra",
    "?chatIds=shared-1,bolt-only",
    "?chatIds=shared-1,acme-only",
    "?agents=bob",
    "?agents=alice",
    "?topics=outage",
    "?topics=billing",
    "?startDate=2025-04-10&endDate=2025-04-13",
)
JOB_DONE = "query($id: ID!) { job(id: $id) { finishedAt status } }"


@contextlib.asynccontextmanager
async def tenant_admin(settings: Settings) -> AsyncIterator[TenantAdmin]:
    database = Database(create_engine(settings))
    try:
        yield TenantAdmin(database, settings)
    finally:
        await database.dispose()


class KeyClient:
    """One tenant's view of the app: every request carries its API key."""

    def __init__(self, client: Any, key: str) -> None:
        self.client = client
        self.headers = {"Authorization": f"Bearer {key}"}

    async def data(self, query: str, variables: dict[str, Any] | None = None) -> Any:
        body = await self.client.query(query, variables, headers=self.headers)
        assert "errors" not in body, body["errors"]
        return body["data"]

    async def upload(self, content: bytes, **kwargs: Any) -> httpx.Response:
        return await self.client.upload(content, headers=self.headers, **kwargs)

    async def csv(self, export_type: str, query: str = "") -> list[dict[str, str]]:
        response = await self.client.http.get(
            f"/export/{export_type}.csv{query}", headers=self.headers
        )
        assert response.status_code == 200, response.text
        return list(csv.DictReader(io.StringIO(response.text.lstrip("\ufeff"))))


async def wait_for_job(client: KeyClient, job_id: str, within: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        job = (await client.data(JOB_DONE, {"id": job_id}))["job"]
        if job["finishedAt"] is not None:
            return job  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, f"job {job_id} did not finish"
        await asyncio.sleep(0.05)


async def upload_and_wait(client: KeyClient, content: bytes) -> tuple[dict[str, Any], str]:
    report = await upload_ok(
        client,
        content,
        selection="conversationsReceived messagesStored autoresponsesFiltered job { id }",
    )
    job = await wait_for_job(client, report["job"]["id"])
    assert job["status"] == "SUCCEEDED", job
    return report, report["job"]["id"]


@pytest.fixture
def auth_settings(settings_factory: Any) -> Settings:
    return settings_factory(auth_disabled=False, analyzer="lexicon")  # type: ignore[no-any-return]


async def tenant_clients(
    app_client_factory: Any, settings: Settings, names: tuple[str, ...] = ("acme", "bolt")
) -> dict[str, KeyClient]:
    client = await app_client_factory(settings)
    keys = {}
    async with tenant_admin(settings) as admin:
        for name in names:
            _, _, keys[name] = await admin.create_tenant(name)
    return {name: KeyClient(client, key) for name, key in keys.items()}


async def everything(client: KeyClient, job_ids: list[str]) -> dict[str, Any]:
    """Every answer the tenant gets: each query under each filter, lookups, jobs, CSVs."""
    seen: dict[str, Any] = {"everything": await client.data(EVERYTHING)}
    for name, selection in FILTERS.items():
        seen[f"filter {name}"] = await client.data(FILTERED, {"filter": selection})
    for chat_id in sorted(CHAT_IDS["acme"] | CHAT_IDS["bolt"]):
        seen[f"conversation {chat_id}"] = await client.data(
            f"query($id: String!) {{ conversation(chatId: $id) {{ {CONVERSATION_FIELDS} }} }}",
            {"id": chat_id},
        )
    seen["jobs"] = await client.data(
        f"{{ jobs(first: 10) {{ totalCount edges {{ cursor node {{ {JOB_FIELDS} }} }} }} }}"
    )
    for job_id in job_ids:
        seen[f"job {job_id}"] = await client.data(
            f"query($id: ID!) {{ job(id: $id) {{ {JOB_FIELDS} }} }}", {"id": job_id}
        )
    for export_type in ("conversations", "messages"):
        for query in CSV_QUERIES:
            seen[f"{export_type}.csv{query}"] = await client.csv(export_type, query)
    return seen


@pytest.mark.parametrize("first", ["acme", "bolt"])
async def test_another_tenants_upload_changes_nothing_a_tenant_sees(
    app_client_factory: Any, auth_settings: Settings, first: str
) -> None:
    """Same chat ids, other messages: any leak would change the first tenant's answers."""
    clients = await tenant_clients(app_client_factory, auth_settings)
    second = OTHER[first]
    _, first_job = await upload_and_wait(clients[first], EXPORTS[first])
    # The second tenant's job will take the next id; asking for it now and later must agree.
    probe_ids = [first_job, str(int(first_job) + 1)]
    before = await everything(clients[first], probe_ids)
    assert before[f"job {probe_ids[1]}"] == {"job": None}
    assert before["everything"]["metrics"]["totalConversations"] == 3
    assert before["everything"]["metrics"]["analyzedConversations"] == 3

    _, second_job = await upload_and_wait(clients[second], EXPORTS[second])
    assert second_job == probe_ids[1]
    after = await everything(clients[first], probe_ids)

    assert after.keys() == before.keys()
    for name in before:
        assert after[name] == before[name], f"{first}'s {name} changed after {second} uploaded"


@pytest.fixture
async def two_tenants(app_client_factory: Any, auth_settings: Settings) -> dict[str, Any]:
    clients = await tenant_clients(app_client_factory, auth_settings)
    jobs = {}
    for name, client in clients.items():
        report, jobs[name] = await upload_and_wait(client, EXPORTS[name])
        assert report["messagesStored"] == STORED_MESSAGES[name]
    return {"clients": clients, "jobs": jobs}


async def test_same_chat_id_gives_each_tenant_its_own_conversation(
    two_tenants: dict[str, Any],
) -> None:
    for name, client in two_tenants["clients"].items():
        chats = ACME_CHATS if name == "acme" else BOLT_CHATS
        for chat_id in ("shared-1", "shared-2"):
            data = await client.data(
                "query($id: String!) { conversation(chatId: $id) { chatId messageCount agents "
                "messages { totalCount edges { node { content } } } } }",
                {"id": chat_id},
            )
            conversation = data["conversation"]
            contents = [edge["node"]["content"] for edge in conversation["messages"]["edges"]]
            assert contents == [record["MESSAGE_CONTENT"] for record in chats[chat_id]], name
            assert conversation["messageCount"] == len(chats[chat_id])
            assert conversation["messages"]["totalCount"] == len(chats[chat_id])
            assert set(conversation["agents"]) <= AGENTS[name]
        other_only = f"{OTHER[name]}-only"
        missing = await client.data(
            "query($id: String!) { conversation(chatId: $id) { chatId } }", {"id": other_only}
        )
        assert missing == {"conversation": None}


async def test_conversation_lists_and_totals_hold_only_the_tenants_own_chats(
    two_tenants: dict[str, Any],
) -> None:
    for name, client in two_tenants["clients"].items():
        data = await client.data(
            "{ metrics { totalConversations totalMessages agentCount } "
            "conversations(first: 20) { totalCount edges { node { chatId "
            "messages(first: 20) { edges { node { content } } } } } } }"
        )
        texts = " ".join(
            str(message["node"]["content"])
            for edge in data["conversations"]["edges"]
            for message in edge["node"]["messages"]["edges"]
        )

        assert data["metrics"] == {
            "totalConversations": 3,
            "totalMessages": STORED_MESSAGES[name],
            "agentCount": 2,
        }
        assert data["conversations"]["totalCount"] == 3
        assert {e["node"]["chatId"] for e in data["conversations"]["edges"]} == CHAT_IDS[name]
        assert WORD[name] in texts
        assert WORD[OTHER[name]] not in texts


@pytest.mark.parametrize(
    "selection",
    [
        "search",
        "agents",
        "agent",
        "topics",
        "topic",
        "chatIds",
    ],
)
async def test_filtering_by_the_other_tenants_values_finds_nothing(
    two_tenants: dict[str, Any], selection: str
) -> None:
    for name, client in two_tenants["clients"].items():
        other = OTHER[name]
        own, theirs = {
            "search": ({"search": WORD[name]}, {"search": WORD[other]}),
            "agents": ({"agents": sorted(AGENTS[name])}, {"agents": sorted(AGENTS[other])}),
            "agent": ({"agent": min(AGENTS[name])}, {"agent": min(AGENTS[other])}),
            "topics": ({"topics": [TOPIC[name]]}, {"topics": [TOPIC[other]]}),
            "topic": ({"topic": TOPIC[name]}, {"topic": TOPIC[other]}),
            "chatIds": (
                {"chatIds": [f"{name}-only", "shared-1"]},
                {"chatIds": [f"{other}-only"]},
            ),
        }[selection]
        query = (
            "query($filter: ConversationFilter) { metrics(filter: $filter) "
            "{ totalConversations } conversations(filter: $filter) { totalCount } "
            "agents(filter: $filter) { totalCount } topics(filter: $filter) { topic } "
            "firstResponseTimeHistogram(filter: $filter) { conversations } "
            "activityHeatmap(filter: $filter) { conversationsStarted } "
            "timeseries(filter: $filter) { start } }"
        )

        mine = await client.data(query, {"filter": own})
        foreign = await client.data(query, {"filter": theirs})

        assert mine["metrics"]["totalConversations"] > 0, (name, own)
        assert mine["conversations"]["totalCount"] == mine["metrics"]["totalConversations"]
        assert foreign["metrics"]["totalConversations"] == 0, (name, theirs)
        assert foreign["conversations"]["totalCount"] == 0
        assert foreign["agents"]["totalCount"] == 0
        assert foreign["topics"] == []
        assert sum(b["conversations"] for b in foreign["firstResponseTimeHistogram"]) == 0
        assert sum(c["conversationsStarted"] for c in foreign["activityHeatmap"]) == 0


async def test_analytics_cover_only_the_tenants_own_conversations(
    two_tenants: dict[str, Any],
) -> None:
    days = {"acme": ("2025-04-01", "2025-04-02"), "bolt": ("2025-04-10", "2025-04-12")}
    customer_messages = {"acme": 4, "bolt": 6}
    for name, client in two_tenants["clients"].items():
        data = await client.data(
            "{ timeseries(interval: DAY) { start metrics { totalConversations } } "
            "activityHeatmap { customerMessages conversationsStarted } "
            "firstResponseTimeHistogram { conversations } "
            "agents(first: 20) { edges { node { agent conversations } } } "
            "topics(limit: 20) { topic conversations } "
            "metrics { analyzedConversations topTopics(limit: 10) { topic } } }"
        )

        series = data["timeseries"]
        assert series[0]["start"].startswith(days[name][0]), series
        assert series[-1]["start"].startswith(days[name][1]), series
        assert sum(bucket["metrics"]["totalConversations"] for bucket in series) == 3
        heatmap = data["activityHeatmap"]
        assert sum(cell["conversationsStarted"] for cell in heatmap) == 3
        assert sum(cell["customerMessages"] for cell in heatmap) == customer_messages[name]
        assert sum(b["conversations"] for b in data["firstResponseTimeHistogram"]) == 3
        agents = {edge["node"]["agent"] for edge in data["agents"]["edges"]}
        assert agents == AGENTS[name]
        topics = {topic["topic"] for topic in data["topics"]}
        assert TOPIC[name] in topics
        assert TOPIC[OTHER[name]] not in topics
        assert sum(topic["conversations"] for topic in data["topics"]) >= 3
        assert data["metrics"]["analyzedConversations"] == 3
        assert {t["topic"] for t in data["metrics"]["topTopics"]} == topics


async def test_each_tenant_sees_only_its_own_jobs(two_tenants: dict[str, Any]) -> None:
    jobs = two_tenants["jobs"]
    assert jobs["acme"] != jobs["bolt"]
    for name, client in two_tenants["clients"].items():
        data = await client.data(
            "query($own: ID!, $other: ID!) { jobs { totalCount edges { node { id total } } } "
            "own: job(id: $own) { id total } other: job(id: $other) { id } }",
            {"own": jobs[name], "other": jobs[OTHER[name]]},
        )

        assert data["jobs"] == {
            "totalCount": 1,
            "edges": [{"node": {"id": jobs[name], "total": 3}}],
        }
        assert data["own"] == {"id": jobs[name], "total": 3}
        assert data["other"] is None


async def test_csv_exports_hold_only_the_callers_rows(two_tenants: dict[str, Any]) -> None:
    for name, client in two_tenants["clients"].items():
        other = OTHER[name]
        conversations = await client.csv("conversations")
        messages = await client.csv("messages")
        foreign_search = await client.csv("conversations", f"?search={WORD[other]}")
        foreign_messages = await client.csv("messages", f"?chatIds={other}-only")
        shared = await client.csv("messages", "?chatIds=shared-1")

        assert {row["chat_id"] for row in conversations} == CHAT_IDS[name]
        assert len(messages) == STORED_MESSAGES[name]
        assert {row["chat_id"] for row in messages} == CHAT_IDS[name]
        exported = json.dumps(messages)
        assert WORD[name] in exported
        assert WORD[OTHER[name]] not in exported
        for agent_name in AGENTS[other]:
            assert agent_name not in exported
            assert agent_name not in json.dumps(conversations)
        assert foreign_search == []
        assert foreign_messages == []
        chats = ACME_CHATS if name == "acme" else BOLT_CHATS
        assert [row["content"] for row in shared] == [
            record["MESSAGE_CONTENT"] for record in chats["shared-1"]
        ]


async def test_reuploading_a_shared_chat_id_touches_only_the_uploaders_conversation(
    two_tenants: dict[str, Any],
) -> None:
    """acme adds a message to its shared-1; bolt's shared-1 stays as it was."""
    clients = two_tenants["clients"]
    query = (
        '{ conversation(chatId: "shared-1") { messageCount lastMessageAt analysisStatus } '
        "jobs { totalCount } }"
    )
    bolt_before = await clients["bolt"].data(query)
    addition = export({"shared-1": [customer("2025-04-01T09:30:00Z", "one more zebra thing")]})

    report, _ = await upload_and_wait(clients["acme"], addition)

    assert report["messagesStored"] == 1
    acme_after = await clients["acme"].data(query)
    assert acme_after["conversation"]["messageCount"] == 4
    assert acme_after["jobs"]["totalCount"] == 2
    assert await clients["bolt"].data(query) == bolt_before


# -- each tenant's own settings ------------------------------------------------------------


async def configured_clients(
    app_client_factory: Any, settings: Settings, **own_settings: dict[str, Any]
) -> dict[str, KeyClient]:
    """Tenants named after own_settings' keys, configured before the app reads them."""
    clients = await tenant_clients(app_client_factory, settings, tuple(own_settings))
    async with tenant_admin(settings) as admin:
        for name, values in own_settings.items():
            if values:
                await admin.configure(name, **values)
    return clients


def first_message_times() -> dict[str, datetime]:
    return {
        chat_id: min(
            datetime.fromisoformat(record["SOCIAL_CREATE_TIME"].replace("Z", "+00:00"))
            for record in records
            if record.get("MESSAGE_CONTENT") is None or "*977#" not in record["MESSAGE_CONTENT"]
        )
        for chat_id, records in SAMPLE_CHATS.items()
    }


DAY_QUERY = (
    "query($day: Date!) { conversations(first: 20, filter: {startDate: $day, endDate: $day}) "
    "{ edges { node { chatId } } } }"
)


async def test_each_tenant_reads_dates_in_its_own_timezone(
    app_client_factory: Any, auth_settings: Settings
) -> None:
    clients = await configured_clients(
        app_client_factory, auth_settings, utc={}, tokyo={"timezone": "Asia/Tokyo"}
    )
    for client in clients.values():
        await upload_and_wait(client, SAMPLE)
    started = first_message_times()

    for name, zone in (("utc", ZoneInfo("UTC")), ("tokyo", ZoneInfo("Asia/Tokyo"))):
        client = clients[name]
        local_days = {chat_id: at.astimezone(zone).date() for chat_id, at in started.items()}
        for day in ("2025-03-05", "2025-03-06"):
            data = await client.data(DAY_QUERY, {"day": day})
            found = {edge["node"]["chatId"] for edge in data["conversations"]["edges"]}
            expected = {c for c, local in local_days.items() if local.isoformat() == day}
            assert found == expected, (name, day)
        series = (
            await client.data(
                "{ timeseries(interval: DAY) { start metrics { totalConversations } } }"
            )
        )["timeseries"]
        counts = {
            datetime.fromisoformat(bucket["start"]).astimezone(zone).date().isoformat(): bucket[
                "metrics"
            ]["totalConversations"]
            for bucket in series
        }
        for bucket in series:
            start = datetime.fromisoformat(bucket["start"]).astimezone(zone)
            assert (start.hour, start.minute) == (0, 0), (name, bucket["start"])
        expected_counts: dict[str, int] = {}
        for local in local_days.values():
            expected_counts[local.isoformat()] = expected_counts.get(local.isoformat(), 0) + 1
        assert {day: n for day, n in counts.items() if n} == expected_counts, name
        heatmap = (await client.data("{ activityHeatmap { weekday hour conversationsStarted } }"))[
            "activityHeatmap"
        ]
        cells = {
            (cell["weekday"], cell["hour"]): cell["conversationsStarted"]
            for cell in heatmap
            if cell["conversationsStarted"]
        }
        expected_cells: dict[tuple[int, int], int] = {}
        for at in started.values():
            local = at.astimezone(zone)
            key = (local.isoweekday(), local.hour)
            expected_cells[key] = expected_cells.get(key, 0) + 1
        assert cells == expected_cells, name

    # Both tenants hold the same data, so the answers differ only by the timezone.
    utc_day = await clients["utc"].data(DAY_QUERY, {"day": "2025-03-05"})
    tokyo_day = await clients["tokyo"].data(DAY_QUERY, {"day": "2025-03-05"})
    assert utc_day != tokyo_day


async def test_each_tenant_filters_its_own_autoresponse_patterns(
    app_client_factory: Any, auth_settings: Settings
) -> None:
    clients = await configured_clients(
        app_client_factory,
        auth_settings,
        usual={},
        custom={"autoresponse_patterns": ["Please rate us", "we will GET back"]},
    )
    query = (
        "{ metrics { totalMessages botMessages } conversations(first: 20) { edges { node { "
        "chatId botMessageCount messages { edges { node { sender content } } } } } } }"
    )

    usual = await upload_ok(clients["usual"], SAMPLE)
    custom = await upload_ok(clients["custom"], SAMPLE)

    assert usual["autoresponsesFiltered"] == 1  # "Dial *977# for balance"
    assert custom["autoresponsesFiltered"] == 2  # "Please rate us", "We will get back to you"
    assert usual["messagesStored"] == 28
    assert custom["messagesStored"] == 27
    for name, dropped in (
        ("usual", {"Dial *977# for balance"}),
        ("custom", {"Please rate us", "We will get back to you"}),
    ):
        data = await clients[name].data(query)
        bots = {
            message["node"]["content"]
            for edge in data["conversations"]["edges"]
            for message in edge["node"]["messages"]["edges"]
            if message["node"]["sender"] == "BOT"
        }
        all_bots = {
            record["MESSAGE_CONTENT"]
            for records in SAMPLE_CHATS.values()
            for record in records
            if record["DIRECTION"] == "to_client"
            and not record.get("AGENT_USERNAME")
            and not record.get("AGENT_EMAIL")
        }
        assert bots == all_bots - dropped, name
        assert data["metrics"]["botMessages"] == len(all_bots - dropped)


async def test_each_tenant_counts_contacts_with_its_own_session_gap(
    app_client_factory: Any, auth_settings: Settings
) -> None:
    clients = await configured_clients(
        app_client_factory,
        auth_settings,
        daily={},
        half_hour={"session_gap_hours": 0.5},
        three_days={"session_gap_hours": 72},
    )
    # Silences: bravo 30 min and 52.5 h; echo 40 min; everything else under 30 min.
    expected = {
        "daily": {"bravo": 2},
        "half_hour": {"bravo": 3, "echo": 2},
        "three_days": {},
    }
    for name, client in clients.items():
        await upload_ok(client, SAMPLE)
        data = await client.data(
            "{ metrics { repeatContactConversations } "
            "conversations(first: 20) { edges { node { chatId contactCount } } } }"
        )
        counts = {
            e["node"]["chatId"]: e["node"]["contactCount"] for e in data["conversations"]["edges"]
        }

        assert counts == {chat_id: expected[name].get(chat_id, 1) for chat_id in SAMPLE_CHATS}
        assert data["metrics"]["repeatContactConversations"] == len(expected[name]), name


CUSTOM_TAXONOMY = {
    "version": 1,
    "topics": {"Invoice dispute": ["bill", "refund"], "Greeting": ["hello", "hi"]},
}
# By the lexicon's rules: customer texts first, all texts when they hit nothing; ties in
# file order; no hit at all is "enquiry".
CUSTOM_TOPICS = {
    "alpha": ["invoice dispute", "greeting"],  # "Hello, my bill is wrong ..."
    "bravo": ["invoice dispute"],  # "Need a 100% refund_now"
    "charlie": ["greeting"],  # "Hi"
    "delta": ["enquiry"],
    "echo": ["enquiry"],
    "foxtrot": ["enquiry"],
    "golf": ["enquiry"],
}


async def test_a_tenant_with_its_own_topics_file_gets_its_own_topics(
    app_client_factory: Any, auth_settings: Settings, tmp_path: Path
) -> None:
    taxonomy = tmp_path / "topics.json"
    taxonomy.write_text(json.dumps(CUSTOM_TAXONOMY))
    clients = await configured_clients(
        app_client_factory, auth_settings, usual={}, custom={"topics_file": str(taxonomy)}
    )
    query = (
        "{ conversations(first: 20) { edges { node { chatId analysis { topics model } } } } "
        "topics(limit: 20) { topic conversations } }"
    )
    seen = {}
    for name, client in clients.items():
        await upload_and_wait(client, SAMPLE)
        seen[name] = await client.data(query)

    custom = {
        edge["node"]["chatId"]: edge["node"]["analysis"]["topics"]
        for edge in seen["custom"]["conversations"]["edges"]
    }
    usual = {
        edge["node"]["chatId"]: edge["node"]["analysis"]["topics"]
        for edge in seen["usual"]["conversations"]["edges"]
    }
    assert custom == CUSTOM_TOPICS
    assert {t["topic"]: t["conversations"] for t in seen["custom"]["topics"]} == {
        "enquiry": 4,
        "invoice dispute": 2,
        "greeting": 2,
    }
    assert "billing" in usual["alpha"]
    assert not {"invoice dispute", "greeting"} & {t for topics in usual.values() for t in topics}
    models = {
        name: {edge["node"]["analysis"]["model"] for edge in seen[name]["conversations"]["edges"]}
        for name in seen
    }
    assert len(models["usual"]) == len(models["custom"]) == 1
    assert models["usual"] != models["custom"]  # the model names the taxonomy's digest


async def test_a_running_app_picks_up_changed_tenant_settings_after_its_cache(
    app_client_factory: Any, auth_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tenants_module, "TENANT_CACHE_SECONDS", 0.2)
    clients = await tenant_clients(app_client_factory, auth_settings, ("acme",))
    acme = clients["acme"]
    await upload_ok(acme, SAMPLE)
    before = await acme.data(DAY_QUERY, {"day": "2025-03-05"})
    assert before["conversations"]["edges"] == [{"node": {"chatId": "delta"}}]

    async with tenant_admin(auth_settings) as admin:
        await admin.configure("acme", timezone="Asia/Tokyo")
    await asyncio.sleep(0.3)

    after = await acme.data(DAY_QUERY, {"day": "2025-03-05"})
    assert after["conversations"]["edges"] == []
    moved = await acme.data(DAY_QUERY, {"day": "2025-03-06"})
    assert {edge["node"]["chatId"] for edge in moved["conversations"]["edges"]} == {
        "delta",
        "echo",
    }

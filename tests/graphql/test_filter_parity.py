"""Every filter selects the same conversations in lists (SQL) and in analytics (the facts).

Lists and exports narrow conversations in SQL (repositories/selection.py); metrics, counts
and breakdowns apply the same filter to the conversation facts in memory
(services/aggregates.py). On an analysed synthetic data set with every quirk, for each field
of ConversationFilter (and combinations), the chat ids a list pages through must be exactly
as many as its totalCount and as the metrics count, on both engines.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from chat_exports import upload_ok

from powerpulse.synthetic import generate_export

PAGE = """
query($filter: ConversationFilter, $after: String) {
  conversations(first: 100, filter: $filter, after: $after) {
    totalCount
    pageInfo { hasNextPage endCursor }
    edges { node { chatId agents analysis { topics } } }
  }
}
"""
METRICS = """
query($filter: ConversationFilter) {
  metrics(filter: $filter) { totalConversations analyzedConversations }
  firstResponseTimeHistogram(filter: $filter) { conversations }
}
"""
JOB = "query($id: ID!) { job(id: $id) { finishedAt status } }"


async def listed(client: Any, selection: dict[str, Any] | None) -> tuple[list[str], int]:
    chat_ids: list[str] = []
    after = None
    total = None
    while True:
        data = (await client.data(PAGE, {"filter": selection, "after": after}))["conversations"]
        total = data["totalCount"]
        chat_ids.extend(edge["node"]["chatId"] for edge in data["edges"])
        if not data["pageInfo"]["hasNextPage"]:
            return chat_ids, total
        after = data["pageInfo"]["endCursor"]


@pytest.fixture
async def analysed(app_client_factory: Any, settings_factory: Any) -> Any:
    """240 analysed synthetic chats, 15 of them since extended and waiting again (PENDING)."""
    client = await app_client_factory(settings_factory(analyzer="lexicon"), run_worker=True)
    exported = generate_export(chats=240, seed=21)
    uploaded = await upload_ok(
        client, json.dumps(exported).encode(), selection="messagesStored job { id }"
    )
    deadline = time.monotonic() + 60
    while (await client.data(JOB, {"id": uploaded["job"]["id"]}))["job"]["finishedAt"] is None:
        assert time.monotonic() < deadline, "the analysis did not finish"
        await asyncio.sleep(0.1)
    await client.state.worker.stop()
    later = {
        chat_id: [
            {
                "DIRECTION": "to_company",
                "SOCIAL_CREATE_TIME": "2025-09-20T08:00:00Z",
                "MESSAGE_CONTENT": "any news on my token?",
            }
        ]
        for chat_id in sorted(exported)[:15]
    }
    await upload_ok(client, json.dumps(later).encode())
    client.sample = exported
    return client


async def test_every_filter_selects_the_same_conversations_everywhere(
    analysed: Any, subtests: Any
) -> None:
    client = analysed
    everything, _ = await listed(client, None)
    sample_chat = sorted(analysed.sample)[3]
    pages = [(await client.data(PAGE, {"filter": None, "after": None}))["conversations"]["edges"]]
    some_agent = next(
        agent for edge in pages[0] for agent in edge["node"]["agents"] if edge["node"]["agents"]
    )
    some_topic = next(
        topic
        for edge in pages[0]
        if edge["node"]["analysis"]
        for topic in edge["node"]["analysis"]["topics"]
    )
    filters: list[dict[str, Any] | None] = [
        None,
        {"startDate": "2025-08-05", "endDate": "2025-08-12"},
        {"startDate": "2025-08-20"},
        {"endDate": "2025-08-03"},
        {"agent": some_agent},
        {"agents": [some_agent, "nobody-at-all"]},
        {"search": "token"},
        {"chatIds": [sample_chat, "no-such-chat"]},
        {"satisfied": True},
        {"satisfied": False},
        {"minSatisfaction": 4},
        {"maxSatisfaction": 2},
        {"minSatisfaction": 2, "maxSatisfaction": 3},
        {"sentiment": "POSITIVE"},
        {"sentiment": "NEGATIVE"},
        {"sentiment": "NEUTRAL"},
        {"topic": some_topic},
        {"topics": [some_topic, "not a topic"]},
        {"resolved": True},
        {"resolved": False},
        {"analysisStatus": "PENDING"},
        {"analysisStatus": "DONE"},
        {"analysisStatus": "FAILED"},
        {"minFirstResponseTimeMinutes": 10},
        {"maxFirstResponseTimeMinutes": 5},
        {"minCsi": 60},
        {"maxCsi": 40},
        {"repeatContact": True},
        {"repeatContact": False},
        {"language": "sw"},
        {"language": "en"},
        {"satisfied": False, "agent": some_agent, "startDate": "2025-08-10"},
        {"resolved": True, "topic": some_topic, "minCsi": 50, "search": "the"},
    ]
    sizes = set()
    for selection in filters:
        with subtests.test(filter=selection):
            chat_ids, total = await listed(client, selection)
            assert len(chat_ids) == len(set(chat_ids)) == total
            found = await client.data(METRICS, {"filter": selection})
            assert found["metrics"]["totalConversations"] == total
            assert sum(b["conversations"] for b in found["firstResponseTimeHistogram"]) == total
            sizes.add(total)
    # The filters really narrow (or empty) the selection: not all the same size.
    assert len(sizes) > 10
    assert max(sizes) == len(everything)

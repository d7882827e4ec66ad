"""conversations (keyset-paged, every ordering) and conversation(chatId) with its messages."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime
from typing import Any

import pytest
from chat_exports import SAMPLE, SAMPLE_CONVERSATIONS, upload_ok
from strawberry.types.nodes import FragmentSpread, InlineFragment, SelectedField

from powerpulse.graphql.types import selects

PAGE = """
query($first: Int, $after: String, $order: ConversationOrder, $filter: ConversationFilter) {
  conversations(first: $first, after: $after, orderBy: $order, filter: $filter) {
    totalCount
    edges { cursor node { chatId } }
    pageInfo { hasNextPage endCursor }
  }
}
"""

NULL_FRT = {"charlie", "foxtrot", "golf"}

# The expected order of the sample for each ordering, worked out by hand. Orderings by
# first response time put conversations without one last, in either direction.
EXPECTED_ORDER: dict[str, list[str]] = {
    "LAST_MESSAGE_DESC": ["golf", "foxtrot", "echo", "delta", "bravo", "charlie", "alpha"],
    "LAST_MESSAGE_ASC": ["alpha", "charlie", "bravo", "delta", "echo", "foxtrot", "golf"],
    "FIRST_MESSAGE_DESC": ["golf", "foxtrot", "echo", "delta", "charlie", "bravo", "alpha"],
    "FIRST_MESSAGE_ASC": ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf"],
    "MESSAGE_COUNT_DESC": ["golf", "alpha", "bravo", "echo", "delta", "charlie", "foxtrot"],
    "FIRST_RESPONSE_TIME_ASC": ["echo", "delta", "alpha", "bravo", *sorted(NULL_FRT)],
    "FIRST_RESPONSE_TIME_DESC": ["bravo", "alpha", "delta", "echo", *sorted(NULL_FRT)],
    "DURATION_DESC": ["bravo", "echo", "alpha", "golf", "delta", "charlie", "foxtrot"],
}


@pytest.fixture
async def sample_client(client: Any) -> Any:
    await upload_ok(client, SAMPLE)
    return client


async def page_through(
    client: Any, order: str | None, first: int, filter: dict[str, Any] | None = None
) -> list[str]:
    """Follow endCursor until hasNextPage is false; returns chat ids in visiting order."""
    visited: list[str] = []
    after = None
    for _ in range(50):
        data = await client.data(
            PAGE, {"first": first, "after": after, "order": order, "filter": filter}
        )
        connection = data["conversations"]
        edges = connection["edges"]
        assert len(edges) <= first
        visited += [edge["node"]["chatId"] for edge in edges]
        page_info = connection["pageInfo"]
        if edges:
            assert page_info["endCursor"] == edges[-1]["cursor"]
        if not page_info["hasNextPage"]:
            return visited
        assert len(edges) == first, "a page before the last must be full"
        after = page_info["endCursor"]
    raise AssertionError(f"paging did not end: {visited}")


def _ties_sorted(order: str, chat_ids: list[str]) -> list[str]:
    """Conversations without a first response time tie; compare them as a set."""
    if order.startswith("FIRST_RESPONSE_TIME"):
        ranked = [c for c in chat_ids if c not in NULL_FRT]
        return ranked + sorted(c for c in chat_ids if c in NULL_FRT)
    return chat_ids


async def test_paging_visits_every_conversation_once_in_the_expected_order(
    sample_client: Any, subtests: Any
) -> None:
    for order, expected in EXPECTED_ORDER.items():
        for first in (2, 3, 1):
            with subtests.test(order=order, first=first):
                visited = await page_through(sample_client, order, first)

                assert len(visited) == len(set(visited)), visited
                assert _ties_sorted(order, visited) == expected


async def test_one_page_and_many_pages_give_the_same_order(
    sample_client: Any, subtests: Any
) -> None:
    for order in EXPECTED_ORDER:
        with subtests.test(order=order):
            whole = await page_through(sample_client, order, 100)

            assert await page_through(sample_client, order, 2) == whole


ORDER_VALUES = '{ __type(name: "ConversationOrder") { enumValues { name } } }'
JOB_DONE = "query($id: ID!) { job(id: $id) { finishedAt } }"


async def test_every_ordering_pages_each_conversation_exactly_once(client: Any) -> None:
    """Including orderings by analysis results, once the in-process analysis has run."""
    response = await client.upload(SAMPLE, selection="messagesStored job { id }")
    job_id = response.json()["data"]["uploadChats"]["job"]["id"]
    deadline = time.monotonic() + 30
    while (await client.data(JOB_DONE, {"id": job_id}))["job"]["finishedAt"] is None:
        assert time.monotonic() < deadline, "the analysis job did not finish"
        await asyncio.sleep(0.05)
    statuses = await client.data(
        "{ conversations(first: 100) { edges { node { analysisStatus } } } }"
    )
    assert {e["node"]["analysisStatus"] for e in statuses["conversations"]["edges"]} == {"DONE"}
    data = await client.data(ORDER_VALUES)
    orders = [value["name"] for value in data["__type"]["enumValues"]]
    assert set(EXPECTED_ORDER) <= set(orders)

    for order in orders:
        whole = await page_through(client, order, 100)
        paged = await page_through(client, order, 2)

        assert sorted(paged) == sorted(SAMPLE_CONVERSATIONS), order
        assert paged == whole, order


async def test_default_order_is_last_message_descending(sample_client: Any) -> None:
    data = await sample_client.data("{ conversations { edges { node { chatId } } } }")

    chat_ids = [edge["node"]["chatId"] for edge in data["conversations"]["edges"]]
    assert chat_ids == EXPECTED_ORDER["LAST_MESSAGE_DESC"]


async def test_default_page_size_is_twenty(client: Any) -> None:
    chats = {
        f"chat-{n:02d}": [
            {"DIRECTION": "to_company", "SOCIAL_CREATE_TIME": f"2025-01-{n:02d}T10:00:00Z"}
        ]
        for n in range(1, 26)
    }
    await upload_ok(client, json.dumps(chats).encode())

    data = await client.data(
        "{ conversations { totalCount edges { node { chatId } } pageInfo { hasNextPage } } }"
    )

    connection = data["conversations"]
    assert len(connection["edges"]) == 20
    assert connection["totalCount"] == 25
    assert connection["pageInfo"]["hasNextPage"] is True


async def test_paging_with_a_filter_visits_only_matching_conversations(
    sample_client: Any,
) -> None:
    visited = await page_through(sample_client, "FIRST_MESSAGE_ASC", 1, {"agent": "jane"})

    assert visited == ["alpha", "bravo", "echo"]


async def test_total_count_counts_all_pages(sample_client: Any) -> None:
    data = await sample_client.data(PAGE, {"first": 2})

    assert data["conversations"]["totalCount"] == 7
    assert len(data["conversations"]["edges"]) == 2


async def test_first_zero_returns_no_edges_but_the_total(sample_client: Any) -> None:
    data = await sample_client.data(PAGE, {"first": 0})

    assert data["conversations"]["edges"] == []
    assert data["conversations"]["totalCount"] == 7


async def test_first_of_one_hundred_is_allowed(sample_client: Any) -> None:
    data = await sample_client.data(PAGE, {"first": 100})

    assert len(data["conversations"]["edges"]) == 7
    assert data["conversations"]["pageInfo"]["hasNextPage"] is False


async def test_empty_database_has_an_empty_connection(client: Any) -> None:
    data = await client.data(PAGE, {"first": 5})

    assert data["conversations"] == {
        "totalCount": 0,
        "edges": [],
        "pageInfo": {"hasNextPage": False, "endCursor": None},
    }


CONVERSATION = """
query($chatId: String!) {
  conversation(chatId: $chatId) {
    chatId platform messageCount customerMessageCount agentMessageCount botMessageCount
    durationMinutes firstResponseTimeMinutes avgResponseTimeMinutes replyCount contactCount
    agents firstMessageAt lastMessageAt
  }
}
"""


def _utc(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert moment.utcoffset() is not None and moment.utcoffset().total_seconds() == 0, text
    return moment.replace(tzinfo=None)


async def test_conversation_has_hand_computed_measurements(
    sample_client: Any, subtests: Any
) -> None:
    for chat_id, measurements in SAMPLE_CONVERSATIONS.items():
        with subtests.test(chat_id=chat_id):
            data = await sample_client.data(CONVERSATION, {"chatId": chat_id})

            found = dict(data["conversation"])
            expected = dict(measurements)
            assert found.pop("chatId") == chat_id
            assert found.pop("platform") == "facebook"
            assert found.pop("agents") == expected.pop("agents")
            for moment in ("firstMessageAt", "lastMessageAt"):
                assert _utc(found.pop(moment)) == datetime.fromisoformat(expected.pop(moment))
            assert found == pytest.approx(expected)


AGENTS_SPELLINGS = {
    "field": "conversations(first: 10) { edges { node { chatId agents } } }",
    "alias": "conversations(first: 10) { edges { node { chatId who: agents } } }",
    "named fragment": (
        "conversations(first: 10) { edges { ...Edge } } } "
        "fragment Edge on ConversationEdge { node { chatId ...People } } "
        "fragment People on Conversation { agents"
    ),
    "inline fragment": (
        "conversations(first: 10) { edges { node { chatId ... on Conversation { agents } } } }"
    ),
    "no agents": "conversations(first: 10) { edges { node { chatId } } }",
}


async def test_agents_of_a_page_however_they_are_asked_for(
    sample_client: Any, subtests: Any
) -> None:
    """Agents asked for on a page are read with it, through aliases and fragments too."""
    expected = {chat_id: facts["agents"] for chat_id, facts in SAMPLE_CONVERSATIONS.items()}
    for spelling, selection in AGENTS_SPELLINGS.items():
        with subtests.test(spelling=spelling):
            data = await sample_client.data(f"query {{ {selection} }}")

            nodes = [edge["node"] for edge in data["conversations"]["edges"]]
            assert sorted(node["chatId"] for node in nodes) == sorted(expected)
            for node in nodes:
                if spelling == "no agents":
                    assert set(node) == {"chatId"}
                else:
                    agents = node["who"] if spelling == "alias" else node["agents"]
                    assert agents == expected[node["chatId"]], node["chatId"]


def _field(name: str, *selections: Any) -> SelectedField:
    return SelectedField(name, {}, {}, list(selections))


def test_selects_finds_a_path_through_fragments_and_nothing_else() -> None:
    agents = _field("agents")
    direct = [_field("conversations", _field("edges", _field("node", agents)))]
    spread = [
        _field(
            "conversations",
            _field(
                "edges",
                FragmentSpread("Edge", "ConversationEdge", {}, [_field("node", agents)]),
            ),
        )
    ]
    inline = [
        _field("conversations", _field("edges", _field("node", InlineFragment(None, [agents], {}))))
    ]
    path = ("conversations", "edges", "node", "agents")

    assert selects(direct, path) and selects(spread, path) and selects(inline, path)
    assert not selects([_field("conversations", _field("edges", _field("node")))], path)
    # The name has to be at its own level: an `agents` elsewhere does not count.
    assert not selects([_field("conversations", _field("edges", agents))], path)
    assert not selects([_field("agents")], path)


async def test_agents_of_one_conversation_through_a_fragment(sample_client: Any) -> None:
    chat_id, facts = next(
        (chat_id, facts) for chat_id, facts in SAMPLE_CONVERSATIONS.items() if facts["agents"]
    )
    data = await sample_client.data(
        "query($chatId: String!) { conversation(chatId: $chatId) { ...People } } "
        "fragment People on Conversation { chatId agents }",
        {"chatId": chat_id},
    )

    assert data["conversation"] == {"chatId": chat_id, "agents": facts["agents"]}


async def test_unknown_conversation_is_null(sample_client: Any) -> None:
    data = await sample_client.data(CONVERSATION, {"chatId": "no-such-chat"})

    assert data == {"conversation": None}


MESSAGES = """
query($chatId: String!, $first: Int, $after: String) {
  conversation(chatId: $chatId) {
    messages(first: $first, after: $after) {
      totalCount
      edges { cursor node { sender content sentAt agentUsername agentEmail externalId } }
      pageInfo { hasNextPage endCursor }
    }
  }
}
"""

ALPHA_IN_TIME_ORDER = [
    ("CUSTOMER", "Hello, my bill is wrong for account 12304", "2025-03-01T10:00:00", None),
    ("BOT", "Thanks for contacting us", "2025-03-01T10:00:30", None),
    ("AGENT", "Let me check", "2025-03-01T10:05:00", "jane"),
    ("CUSTOMER", "ok", "2025-03-01T10:10:00", None),
    ("CUSTOMER", "still there?", "2025-03-01T10:12:00", None),
    ("AGENT", "Fixed now", "2025-03-01T10:20:00", "jane"),
]


async def test_messages_page_in_time_order(sample_client: Any, subtests: Any) -> None:
    for first in (2, 4, 50):
        with subtests.test(first=first):
            assert await _alpha_messages(sample_client, first) == ALPHA_IN_TIME_ORDER


async def _alpha_messages(sample_client: Any, first: int) -> list[tuple[Any, ...]]:
    seen: list[tuple[Any, ...]] = []
    after = None
    while True:
        data = await sample_client.data(
            MESSAGES, {"chatId": "alpha", "first": first, "after": after}
        )
        connection = data["conversation"]["messages"]
        assert connection["totalCount"] == 6
        seen += [
            (
                edge["node"]["sender"],
                edge["node"]["content"],
                _utc(edge["node"]["sentAt"]).isoformat(),
                edge["node"]["agentUsername"],
            )
            for edge in connection["edges"]
        ]
        if not connection["pageInfo"]["hasNextPage"]:
            break
        assert len(connection["edges"]) == first
        after = connection["pageInfo"]["endCursor"]
        assert len(seen) < 10, "message paging did not end"
    return seen


async def test_messages_keep_agent_identity_and_post_id(sample_client: Any) -> None:
    data = await sample_client.data(MESSAGES, {"chatId": "bravo", "first": 2})

    nodes = [edge["node"] for edge in data["conversation"]["messages"]["edges"]]
    assert [(n["externalId"], n["agentUsername"], n["agentEmail"]) for n in nodes] == [
        ("b-1", None, None),
        (None, None, "bob@example.com"),
    ]


async def test_messages_first_above_one_hundred_is_bad_user_input(sample_client: Any) -> None:
    body = await sample_client.query(MESSAGES, {"chatId": "alpha", "first": 101})

    assert [e["extensions"]["code"] for e in body["errors"]] == ["BAD_USER_INPUT"]


NESTED_MESSAGES = """
query($first: Int, $after: String) {
  conversations(first: 20, orderBy: FIRST_MESSAGE_ASC) {
    edges { node {
      chatId
      messages(first: $first, after: $after) {
        totalCount
        edges { cursor node { sender content sentAt agentUsername agentEmail externalId } }
        pageInfo { hasNextPage endCursor }
      }
    } }
  }
}
"""


async def test_messages_of_every_conversation_in_a_page_match_each_read_alone(
    sample_client: Any, subtests: Any
) -> None:
    """The messages of a page's conversations are read together (one statement for all);
    each conversation's page is what asking for that conversation alone returns."""
    for first in (1, 2, 3, 50):
        with subtests.test(first=first):
            data = await sample_client.data(NESTED_MESSAGES, {"first": first})
            edges = data["conversations"]["edges"]
            assert [e["node"]["chatId"] for e in edges] == EXPECTED_ORDER["FIRST_MESSAGE_ASC"]
            for edge in edges:
                alone = await sample_client.data(
                    MESSAGES, {"chatId": edge["node"]["chatId"], "first": first}
                )
                assert edge["node"]["messages"] == alone["conversation"]["messages"]
            alpha = edges[0]["node"]["messages"]
            assert len(alpha["edges"]) == min(first, 6)
            assert alpha["pageInfo"]["hasNextPage"] is (first < 6)


async def test_a_cursor_continues_each_conversation_in_a_page(sample_client: Any) -> None:
    """The same `after` on every conversation of a page: it continues the conversation it
    came from, and the others start after the same moment in their own time order."""
    alone = await sample_client.data(MESSAGES, {"chatId": "alpha", "first": 2})
    cursor = alone["conversation"]["messages"]["pageInfo"]["endCursor"]

    data = await sample_client.data(NESTED_MESSAGES, {"first": 2, "after": cursor})

    for edge in data["conversations"]["edges"]:
        chat_id = edge["node"]["chatId"]
        expected = await sample_client.data(
            MESSAGES, {"chatId": chat_id, "first": 2, "after": cursor}
        )
        assert edge["node"]["messages"] == expected["conversation"]["messages"], chat_id
    alpha = data["conversations"]["edges"][0]["node"]["messages"]
    assert [e["node"]["content"] for e in alpha["edges"]] == ["Let me check", "ok"]


async def test_a_bad_cursor_or_size_fails_only_its_own_messages(sample_client: Any) -> None:
    """Message pages asked for in one request are read together, but each answers for
    itself: a broken cursor or an oversized `first` is an error on that field alone."""
    body = await sample_client.query(
        """
        query {
          a: conversation(chatId: "alpha") { messages(first: 2) { edges { node { content } } } }
          b: conversation(chatId: "bravo") { messages(after: "not-a-cursor") { totalCount } }
          c: conversation(chatId: "charlie") { messages(first: 101) { totalCount } }
          d: conversation(chatId: "alpha") { messages(first: 1) { edges { node { content } } } }
        }
        """
    )

    errors = {tuple(error["path"]): error["extensions"]["code"] for error in body["errors"]}
    assert errors == {("b", "messages"): "BAD_USER_INPUT", ("c", "messages"): "BAD_USER_INPUT"}
    data = body["data"]
    assert [e["node"]["content"] for e in data["a"]["messages"]["edges"]] == [
        "Hello, my bill is wrong for account 12304",
        "Thanks for contacting us",
    ]
    assert [e["node"]["content"] for e in data["d"]["messages"]["edges"]] == [
        "Hello, my bill is wrong for account 12304"
    ]
    assert data["b"] is None and data["c"] is None

"""ConversationFilter: dates in the configured timezone, agent, search and chat ids."""

from __future__ import annotations

from typing import Any

import pytest
from chat_exports import SAMPLE, customer, error_codes, export, metrics, upload_ok

CHAT_IDS = """
query($filter: ConversationFilter) {
  conversations(first: 100, filter: $filter) { totalCount edges { node { chatId } } }
}
"""


async def selected(client: Any, **filter: Any) -> set[str]:
    """The chat ids a filter selects; checks totalCount and metrics agree with the page."""
    data = await client.data(CHAT_IDS, {"filter": filter})
    chat_ids = [edge["node"]["chatId"] for edge in data["conversations"]["edges"]]
    assert data["conversations"]["totalCount"] == len(chat_ids)
    assert (await metrics(client, filter))["totalConversations"] == len(chat_ids)
    return set(chat_ids)


@pytest.fixture
async def sample_client(client: Any) -> Any:
    await upload_ok(client, SAMPLE)
    return client


DATE_CASES = [
    ({"startDate": "2025-03-02", "endDate": "2025-03-05"}, {"bravo", "charlie", "delta"}),
    # delta starts at 23:30 on the 5th: the end date counts all of its day.
    ({"startDate": "2025-03-05", "endDate": "2025-03-05"}, {"delta"}),
    ({"startDate": "2025-03-01", "endDate": "2025-03-01"}, {"alpha"}),
    ({"startDate": "2025-03-06"}, {"echo", "foxtrot", "golf"}),
    ({"endDate": "2025-03-02"}, {"alpha", "bravo"}),
    # bravo's last message is on the 4th, but it started on the 2nd.
    ({"startDate": "2025-03-03", "endDate": "2025-03-04"}, {"charlie"}),
    ({"startDate": "2025-03-09"}, set()),
]


async def test_date_filter_is_inclusive_by_first_message_date(
    sample_client: Any, subtests: Any
) -> None:
    for filter, expected in DATE_CASES:
        with subtests.test(filter=filter):
            assert await selected(sample_client, **filter) == expected


async def test_date_filter_narrows_metrics(sample_client: Any) -> None:
    found = await metrics(sample_client, {"startDate": "2025-03-05", "endDate": "2025-03-06"})

    # delta and echo: 3 + 4 messages, first responses 2 and 1, reply events 2 and 1.
    assert found["totalConversations"] == 2
    assert found["totalMessages"] == 7
    assert found["avgFirstResponseTimeMinutes"] == pytest.approx(1.5)
    assert found["replyCount"] == 2
    assert found["agentCount"] == 2


async def test_start_date_after_end_date_is_bad_user_input(sample_client: Any) -> None:
    body = await sample_client.query(
        CHAT_IDS, {"filter": {"startDate": "2025-03-05", "endDate": "2025-03-04"}}
    )

    assert error_codes(body) == ["BAD_USER_INPUT"]


async def test_malformed_date_is_bad_user_input(sample_client: Any) -> None:
    body = await sample_client.query(CHAT_IDS, {"filter": {"startDate": "05/03/2025"}})

    assert error_codes(body) == ["BAD_USER_INPUT"]


NEAR_MIDNIGHT = export(
    {
        # Nairobi is UTC+3: 23:59:59 on the 4th and 00:00:00 on the 5th, local time.
        "before_midnight": [customer("2025-03-04T20:59:59Z", "late")],
        "at_midnight": [customer("2025-03-04T21:00:00Z", "early")],
        "utc_next_day": [customer("2025-03-05T00:30:00Z", "morning")],
    }
)


TIMEZONE_CASES = {
    "Africa/Nairobi": [
        ({"endDate": "2025-03-04"}, {"before_midnight"}),
        ({"startDate": "2025-03-04", "endDate": "2025-03-04"}, {"before_midnight"}),
        ({"startDate": "2025-03-05"}, {"at_midnight", "utc_next_day"}),
        ({"startDate": "2025-03-05", "endDate": "2025-03-05"}, {"at_midnight", "utc_next_day"}),
    ],
    "UTC": [
        ({"endDate": "2025-03-04"}, {"before_midnight", "at_midnight"}),
        ({"startDate": "2025-03-05"}, {"utc_next_day"}),
    ],
}


@pytest.mark.parametrize("timezone", TIMEZONE_CASES)
async def test_dates_are_days_in_the_configured_timezone(
    app_client_factory: Any, settings_factory: Any, subtests: Any, timezone: str
) -> None:
    client = await app_client_factory(settings_factory(timezone=timezone))
    await upload_ok(client, NEAR_MIDNIGHT)

    for filter, expected in TIMEZONE_CASES[timezone]:
        with subtests.test(filter=filter):
            assert await selected(client, **filter) == expected


async def test_sample_conversation_near_midnight_moves_day_in_nairobi(
    app_client_factory: Any, settings_factory: Any
) -> None:
    client = await app_client_factory(settings_factory(timezone="Africa/Nairobi"))
    await upload_ok(client, SAMPLE)

    # delta starts 2025-03-05 23:30 UTC, which is 02:30 on the 6th in Nairobi.
    assert await selected(client, startDate="2025-03-05", endDate="2025-03-05") == set()
    assert await selected(client, startDate="2025-03-06", endDate="2025-03-06") == {
        "delta",
        "echo",
    }


AGENT_CASES = [
    ("jane", {"alpha", "bravo", "echo"}),
    ("bob@example.com", {"bravo"}),
    ("mike", {"delta"}),
    ("  mike  ", {"delta"}),
    ("nobody", set()),
    ("Jan", set()),
]


async def test_agent_filter_selects_conversations_the_agent_wrote_in(
    sample_client: Any, subtests: Any
) -> None:
    for agent, expected in AGENT_CASES:
        with subtests.test(agent=agent):
            assert await selected(sample_client, agent=agent) == expected


async def test_agent_filter_narrows_metrics(sample_client: Any) -> None:
    found = await metrics(sample_client, {"agent": "jane"})

    # alpha, bravo, echo: reply events 5, 10, 30, 20, 1; agents jane and bob.
    assert found["totalConversations"] == 3
    assert found["totalMessages"] == 15
    assert found["replyCount"] == 5
    assert found["avgResponseTimeMinutes"] == pytest.approx(13.2)
    assert found["agentCount"] == 2
    assert found["repeatContactConversations"] == 1


SEARCH_CASES = [
    ("BILL IS WRONG", {"alpha"}),
    ("hElLo", {"alpha"}),
    ("refund approved", {"bravo"}),  # an agent's text counts too
    # % and _ are literal: as wildcards "0%" would match alpha's "12304" and "d_n"
    # delta's "done".
    ("0%", {"bravo"}),
    ("%", {"bravo"}),
    ("d_n", {"bravo"}),
    ("_", {"bravo"}),
    ("\\", set()),
    ("no such words", set()),
]


async def test_search_is_a_case_insensitive_literal_substring(
    sample_client: Any, subtests: Any
) -> None:
    for search, expected in SEARCH_CASES:
        with subtests.test(search=search):
            assert await selected(sample_client, search=search) == expected


async def test_chat_ids_filter_selects_exactly_those_chats(sample_client: Any) -> None:
    assert await selected(sample_client, chatIds=["alpha", "echo", "missing"]) == {
        "alpha",
        "echo",
    }
    assert await selected(sample_client, chatIds=["golf"]) == {"golf"}
    assert await selected(sample_client, chatIds=[]) == set()


async def test_filters_combine_as_and(sample_client: Any) -> None:
    assert await selected(sample_client, agent="jane", startDate="2025-03-02") == {
        "bravo",
        "echo",
    }
    assert await selected(sample_client, agent="jane", search="refund") == {"bravo"}
    assert await selected(sample_client, chatIds=["alpha", "delta"], agent="mike") == {"delta"}


async def test_too_many_chat_ids_is_bad_user_input(sample_client: Any) -> None:
    body = await sample_client.query(
        CHAT_IDS, {"filter": {"chatIds": [f"c{i}" for i in range(1001)]}}
    )

    assert error_codes(body) == ["BAD_USER_INPUT"]

"""uploadChats over the GraphQL multipart request spec: reports, de-duplication, bad files."""

from __future__ import annotations

import json
from typing import Any

import pytest
from chat_exports import (
    SAMPLE,
    SAMPLE_CHATS,
    SAMPLE_METRICS,
    SAMPLE_UPLOAD_REPORT,
    agent,
    customer,
    error_codes,
    export,
    metrics,
    upload_ok,
)

ZERO_METRICS = {
    **{name: 0 for name, value in SAMPLE_METRICS.items() if isinstance(value, int)},
    **{name: None for name, value in SAMPLE_METRICS.items() if isinstance(value, float)},
}


async def test_upload_reports_what_it_received_stored_and_filtered(client: Any) -> None:
    report = await upload_ok(client, SAMPLE)

    assert report == SAMPLE_UPLOAD_REPORT


async def test_metrics_after_upload_match_hand_computed_values(client: Any) -> None:
    await upload_ok(client, SAMPLE)

    assert await metrics(client) == pytest.approx(SAMPLE_METRICS)


async def test_metrics_of_an_empty_database_are_zero_and_null(client: Any) -> None:
    assert await metrics(client) == ZERO_METRICS


async def test_reupload_stores_nothing_new_and_changes_no_metric(client: Any) -> None:
    first = await upload_ok(client, SAMPLE)
    before = await metrics(client)

    second = await upload_ok(client, SAMPLE)

    assert second["messagesStored"] == 0
    assert second["duplicatesSkipped"] == first["messagesStored"] == 28
    assert second["autoresponsesFiltered"] == 1
    assert second["messagesReceived"] == first["messagesReceived"]
    assert await metrics(client) == before


async def test_upload_with_force_reprocess_still_stores_no_duplicates(client: Any) -> None:
    await upload_ok(client, SAMPLE)

    again = await upload_ok(client, SAMPLE, force_reprocess=True)

    assert again["messagesStored"] == 0
    assert again["duplicatesSkipped"] == 28
    assert (await metrics(client))["totalMessages"] == 28


async def test_upload_adding_messages_to_a_known_chat_remeasures_it(client: Any) -> None:
    await upload_ok(client, export({"bravo": SAMPLE_CHATS["bravo"]}))
    later = [
        customer("2025-03-04T14:00:00Z", "one more thing"),
        agent("2025-03-04T14:04:00Z", "Sure", username="mike"),
    ]

    report = await upload_ok(client, export({"bravo": SAMPLE_CHATS["bravo"] + later}))

    assert report["messagesStored"] == 2
    assert report["duplicatesSkipped"] == 5
    data = await client.data(
        '{ conversation(chatId: "bravo") { messageCount replyCount avgResponseTimeMinutes '
        "durationMinutes agents } }"
    )
    # Reply events 30, 20 and now 4 minutes; the chat now ends at 14:04 on the 4th.
    assert data["conversation"] == {
        "messageCount": 7,
        "replyCount": 3,
        "avgResponseTimeMinutes": pytest.approx(18.0),
        "durationMinutes": pytest.approx(3244.0),
        "agents": ["bob@example.com", "jane", "mike"],
    }


async def test_partially_bad_file_stores_good_records_and_lists_the_bad(client: Any) -> None:
    content = export(
        {
            "good": [
                customer("2025-04-01T09:00:00Z", "hello"),
                agent("2025-04-01T09:03:00Z", "hi", username="jane"),
            ],
            "mixed": [
                {"DIRECTION": "sideways", "SOCIAL_CREATE_TIME": "2025-04-01T10:00:00Z"},
                {"DIRECTION": "to_company", "SOCIAL_CREATE_TIME": "not a time"},
                customer("2025-04-01T10:05:00Z", "are you there"),
                "not a record",
            ],
        }
    )

    report = await upload_ok(client, content)

    assert report["messagesReceived"] == 6
    assert report["messagesStored"] == 3
    assert report["invalidRecords"] == 3
    errors = report["errors"]
    assert [(e["chatId"], e["index"]) for e in errors] == [("mixed", 0), ("mixed", 1), ("mixed", 3)]
    assert "DIRECTION" in errors[0]["message"]
    assert "SOCIAL_CREATE_TIME" in errors[1]["message"]
    assert "object" in errors[2]["message"]
    stored = await metrics(client)
    assert (stored["totalConversations"], stored["totalMessages"]) == (2, 3)
    assert stored["avgFirstResponseTimeMinutes"] == pytest.approx(3.0)


def _truncated() -> bytes:
    return SAMPLE[: int(len(SAMPLE) * 0.8)]


INVALID_FILES = {
    "not_json": b"this is not json at all",
    "top_level_array": json.dumps([SAMPLE_CHATS["alpha"]]).encode(),
    "truncated": _truncated(),
    "chat_not_an_array": b'{"alpha": {"DIRECTION": "to_company"}}',
    "empty": b"",
    "top_level_string": b'"hello"',
    "utf16": SAMPLE.decode().encode("utf-16"),
}


@pytest.mark.parametrize("content", INVALID_FILES.values(), ids=INVALID_FILES.keys())
async def test_invalid_file_is_refused_with_invalid_upload_and_stores_nothing(
    app_client_factory: Any, settings_factory: Any, content: bytes
) -> None:
    # One chat per batch: a broken file's earlier chats reach the database before the
    # parser fails, so only a rolled-back transaction keeps them out.
    client = await app_client_factory(settings_factory(ingest_batch_chats=1))

    response = await client.upload(content)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["data"] is None
    assert error_codes(body) == ["INVALID_UPLOAD"]
    assert body["errors"][0]["path"] == ["uploadChats"]
    assert await metrics(client) == ZERO_METRICS


async def test_invalid_file_after_a_good_upload_leaves_everything_unchanged(
    app_client_factory: Any, settings_factory: Any
) -> None:
    client = await app_client_factory(settings_factory(ingest_batch_chats=1))
    await upload_ok(client, export({"alpha": SAMPLE_CHATS["alpha"]}))
    before = await metrics(client)
    # New chats first, then the file breaks off.
    broken = export({"echo": SAMPLE_CHATS["echo"], "golf": SAMPLE_CHATS["golf"]})[:-40]

    response = await client.upload(broken)

    assert error_codes(response.json()) == ["INVALID_UPLOAD"]
    assert await metrics(client) == before
    data = await client.data('{ conversation(chatId: "echo") { chatId } }')
    assert data["conversation"] is None


async def test_invalid_upload_message_says_what_is_wrong(client: Any) -> None:
    response = await client.upload(json.dumps([1, 2]).encode())

    message = response.json()["errors"][0]["message"]
    assert "array" in message
    assert "object" in message

"""Hand-built grouped_chats exports with metrics worked out by hand from the rules.

Rules used (see the schema descriptions): a `to_company` record is a CUSTOMER message; a
`to_client` record with an agent username or email is an AGENT message, else a BOT message;
bot messages containing "*977#" are dropped as autoresponses. First response time runs from
the first customer message to the first agent message at or after it. A reply event is an
agent message answering a customer who has been waiting since their first unanswered
message. contactCount is 1 + the silences of at least 24 hours.
"""

from __future__ import annotations

import json
from typing import Any

Record = dict[str, Any]


def customer(at: str, text: str | None, *, post_id: str | None = None) -> Record:
    return {
        "DIRECTION": "to_company",
        "SOCIAL_CREATE_TIME": at,
        "MESSAGE_CONTENT": text,
        "UNIQUE_POST_ID": post_id,
        "PLATFORM": "facebook",
        "AGENT_USERNAME": None,
        "AGENT_EMAIL": None,
    }


def agent(at: str, text: str, *, username: str | None = None, email: str | None = None) -> Record:
    return {
        "DIRECTION": "to_client",
        "SOCIAL_CREATE_TIME": at,
        "MESSAGE_CONTENT": text,
        "PLATFORM": "facebook",
        "AGENT_USERNAME": username,
        "AGENT_EMAIL": email,
    }


def bot(at: str, text: str) -> Record:
    return {"DIRECTION": "to_client", "SOCIAL_CREATE_TIME": at, "MESSAGE_CONTENT": text}


def export(chats: dict[str, list[Any]]) -> bytes:
    return json.dumps(chats, indent=1).encode()


# Chats are listed out of every sort order, and alpha's records out of time order, so
# that neither file order nor insertion order can pass for a sort.
SAMPLE_CHATS: dict[str, list[Record]] = {
    "delta": [
        customer("2025-03-05T23:30:00Z", "late night question"),
        agent("2025-03-05T23:32:00Z", "Here to help", username="mike"),
        customer("2025-03-05T23:33:00Z", "done, thanks"),
    ],
    "golf": [
        bot("2025-03-08T06:00:00Z", "Service notice: maintenance tonight"),
        *(customer(f"2025-03-08T06:0{i}:00Z", f"complaint number {i}") for i in range(1, 7)),
    ],
    "alpha": [
        agent("2025-03-01T10:20:00Z", "Fixed now", username="jane"),
        customer("2025-03-01T10:00:00Z", "Hello, my bill is wrong for account 12304"),
        customer("2025-03-01T10:12:00Z", "still there?"),
        bot("2025-03-01T10:00:30Z", "Thanks for contacting us"),
        agent("2025-03-01T10:05:00Z", "Let me check", username="jane"),
        customer("2025-03-01T10:10:00Z", "ok"),
    ],
    "foxtrot": [customer("2025-03-07T07:00:00Z", "anyone there?")],
    "bravo": [
        customer("2025-03-02T08:00:00Z", "Need a 100% refund_now", post_id="b-1"),
        agent("2025-03-02T08:30:00Z", "Refund approved", email="bob@example.com"),
        customer("2025-03-04T13:00:00Z", "thanks again", post_id="b-2"),
        agent("2025-03-04T13:20:00Z", "Anything else?", username="jane"),
        bot("2025-03-04T13:21:00Z", "Please rate us"),
    ],
    "echo": [
        agent("2025-03-06T09:00:00Z", "Following up on your ticket", username="jane"),
        customer("2025-03-06T09:40:00Z", "Thanks"),
        agent("2025-03-06T09:41:00Z", "You're welcome", username="jane"),
        customer("2025-03-06T09:50:00Z", "bye"),
    ],
    "charlie": [
        customer("2025-03-04T12:00:00Z", "Hi"),
        bot("2025-03-04T12:00:05Z", "Dial *977# for balance"),
        bot("2025-03-04T12:00:10Z", "We will get back to you"),
    ],
}
SAMPLE = export(SAMPLE_CHATS)

SAMPLE_UPLOAD_REPORT = {
    "conversationsReceived": 7,
    "messagesReceived": 29,
    "messagesStored": 28,
    "duplicatesSkipped": 0,
    "autoresponsesFiltered": 1,
    "invalidRecords": 0,
    "errors": [],
}

# First response times: alpha 5, bravo 30, delta 2, echo 1 (charlie, foxtrot, golf: none).
# Reply events: alpha 5 and 10, bravo 30 and 20, delta 2, echo 1.
SAMPLE_METRICS = {
    "totalConversations": 7,
    "totalMessages": 28,
    "customerMessages": 17,
    "agentMessages": 7,
    "botMessages": 4,
    "agentCount": 3,  # jane, bob@example.com, mike
    "repeatContactConversations": 1,  # bravo: 52.5 silent hours
    "avgFirstResponseTimeMinutes": 9.5,  # (1 + 2 + 5 + 30) / 4
    "medianFirstResponseTimeMinutes": 3.5,  # between 2 and 5
    "p90FirstResponseTimeMinutes": 22.5,  # rank 2.7 of [1, 2, 5, 30]: 5 + 0.7 * 25
    "avgResponseTimeMinutes": 68 / 6,
    "medianResponseTimeMinutes": 7.5,  # between 5 and 10 of [1, 2, 5, 10, 20, 30]
    "p90ResponseTimeMinutes": 25.0,  # rank 4.5: 20 + 0.5 * 10
    "replyCount": 6,
}
METRICS_FIELDS = " ".join(SAMPLE_METRICS)

# chatId: (messageCount, customer, agent, bot, durationMinutes, firstResponseTimeMinutes,
#          avgResponseTimeMinutes, replyCount, contactCount, agents, firstMessageAt,
#          lastMessageAt)
SAMPLE_CONVERSATIONS: dict[str, dict[str, Any]] = {
    chat_id: dict(
        zip(
            (
                "messageCount",
                "customerMessageCount",
                "agentMessageCount",
                "botMessageCount",
                "durationMinutes",
                "firstResponseTimeMinutes",
                "avgResponseTimeMinutes",
                "replyCount",
                "contactCount",
                "agents",
                "firstMessageAt",
                "lastMessageAt",
            ),
            values,
            strict=True,
        )
    )
    for chat_id, values in {
        "alpha": (
            6,
            3,
            2,
            1,
            20.0,
            5.0,
            7.5,
            2,
            1,
            ["jane"],
            "2025-03-01T10:00:00",
            "2025-03-01T10:20:00",
        ),
        "bravo": (
            5,
            2,
            2,
            1,
            3201.0,
            30.0,
            25.0,
            2,
            2,
            ["bob@example.com", "jane"],
            "2025-03-02T08:00:00",
            "2025-03-04T13:21:00",
        ),
        "charlie": (
            2,
            1,
            0,
            1,
            10 / 60,
            None,
            None,
            0,
            1,
            [],
            "2025-03-04T12:00:00",
            "2025-03-04T12:00:10",
        ),
        "delta": (
            3,
            2,
            1,
            0,
            3.0,
            2.0,
            2.0,
            1,
            1,
            ["mike"],
            "2025-03-05T23:30:00",
            "2025-03-05T23:33:00",
        ),
        "echo": (
            4,
            2,
            2,
            0,
            50.0,
            1.0,
            1.0,
            1,
            1,
            ["jane"],
            "2025-03-06T09:00:00",
            "2025-03-06T09:50:00",
        ),
        "foxtrot": (
            1,
            1,
            0,
            0,
            0.0,
            None,
            None,
            0,
            1,
            [],
            "2025-03-07T07:00:00",
            "2025-03-07T07:00:00",
        ),
        "golf": (
            7,
            6,
            0,
            1,
            6.0,
            None,
            None,
            0,
            1,
            [],
            "2025-03-08T06:00:00",
            "2025-03-08T06:06:00",
        ),
    }.items()
}


async def upload_ok(client: Any, content: bytes, **kwargs: Any) -> dict[str, Any]:
    """Upload through the multipart endpoint and return the uploadChats payload."""
    response = await client.upload(content, **kwargs)
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body["errors"]
    return body["data"]["uploadChats"]  # type: ignore[no-any-return]


async def metrics(client: Any, filter: dict[str, Any] | None = None) -> dict[str, Any]:
    data = await client.data(
        f"query($filter: ConversationFilter) {{ metrics(filter: $filter) {{ {METRICS_FIELDS} }} }}",
        {"filter": filter},
    )
    return data["metrics"]  # type: ignore[no-any-return]


def error_codes(body: dict[str, Any]) -> list[str]:
    return [error.get("extensions", {}).get("code") for error in body.get("errors", [])]

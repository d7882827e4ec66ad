"""Client mistakes get coded GraphQL errors; internal failures are masked, never leaked."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from chat_exports import SAMPLE, error_codes, upload_ok
from sqlalchemy.exc import OperationalError

from powerpulse.db import Database

PAGE = """
query($first: Int, $after: String, $order: ConversationOrder) {
  conversations(first: $first, after: $after, orderBy: $order) {
    edges { cursor node { chatId } }
    pageInfo { endCursor }
  }
}
"""


def _forged(payload: Any) -> str:
    """A cursor-shaped string: url-safe base64 of JSON, as a client could make up."""
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


@pytest.fixture
async def sample_client(client: Any) -> Any:
    await upload_ok(client, SAMPLE)
    return client


async def test_first_above_one_hundred_is_an_error_not_a_cap(sample_client: Any) -> None:
    body = await sample_client.query(PAGE, {"first": 101})

    assert error_codes(body) == ["BAD_USER_INPUT"]
    assert body["data"] is None
    assert "100" in body["errors"][0]["message"]


async def test_negative_first_is_bad_user_input(sample_client: Any) -> None:
    body = await sample_client.query(PAGE, {"first": -1})

    assert error_codes(body) == ["BAD_USER_INPUT"]


GARBAGE_CURSORS = {
    "not_base64": "!!!not a cursor!!!",
    "empty": "",
    "base64_of_text": base64.urlsafe_b64encode(b"hello world").decode(),
    "base64_of_a_number": _forged(12345),
    "base64_of_an_object": _forged({"a": 1, "b": 2}),
    "unknown_ordering": _forged(["sideways", ["2025-01-01T00:00:00+00:00", 1]]),
    "wrong_arity": _forged(["last_desc", ["2025-01-01T00:00:00+00:00"]]),
    "null_in_a_required_key": _forged(["last_desc", [None, 1]]),
    "not_a_timestamp": _forged(["last_desc", ["yesterday", 1]]),
    "number_for_a_timestamp": _forged(["last_desc", [1700000000, 1]]),
    "text_for_an_id": _forged(["last_desc", ["2025-03-01T00:00:00+00:00", "1"]]),
    "huge_id": _forged(["last_desc", ["2025-03-01T00:00:00+00:00", 10**30]]),
    "bool_for_an_id": _forged(["last_desc", ["2025-03-01T00:00:00+00:00", True]]),
    "nested_value": _forged(["last_desc", [["2025"], {"id": 1}]]),
    "text_for_a_count": _forged(["count_desc", ["many", 1]]),
    "huge_count": _forged(["count_desc", [2**40, 1]]),
    "text_for_a_duration": _forged(["duration_desc", ["long", 1]]),
    "text_for_a_response_time": _forged(["frt_asc", ["soon", 1]]),
    "huge_id_after_null_response_time": _forged(["frt_asc", [None, 10**20]]),
}


async def test_garbage_after_cursor_is_bad_user_input_for_every_ordering(
    sample_client: Any, subtests: Any
) -> None:
    orders = [
        "LAST_MESSAGE_DESC",
        "MESSAGE_COUNT_DESC",
        "DURATION_DESC",
        "FIRST_RESPONSE_TIME_ASC",
    ]
    for name, cursor in GARBAGE_CURSORS.items():
        for order in orders:
            with subtests.test(cursor=name, order=order):
                body = await sample_client.query(
                    PAGE, {"first": 2, "after": cursor, "order": order}
                )

                assert error_codes(body) == ["BAD_USER_INPUT"], body


async def test_cursor_of_another_ordering_is_bad_user_input(sample_client: Any) -> None:
    data = await sample_client.data(PAGE, {"first": 1, "order": "LAST_MESSAGE_DESC"})
    cursor = data["conversations"]["pageInfo"]["endCursor"]

    body = await sample_client.query(
        PAGE, {"first": 1, "after": cursor, "order": "MESSAGE_COUNT_DESC"}
    )

    assert error_codes(body) == ["BAD_USER_INPUT"]


async def test_garbage_messages_cursor_is_bad_user_input(sample_client: Any) -> None:
    body = await sample_client.query(
        '{ conversation(chatId: "alpha") { messages(first: 2, after: "garbage!") '
        "{ edges { cursor } } } }"
    )

    assert error_codes(body) == ["BAD_USER_INPUT"]


@pytest.mark.parametrize(
    "query",
    [
        "{ metrics { totalConversations ",
        "{ conversations(first: ) { totalCount } }",
        "query {{ metrics }",
        "mutation",
    ],
)
async def test_syntax_error_is_graphql_parse_failed(client: Any, query: str) -> None:
    response = await client.http.post("/graphql", json={"query": query})

    body = response.json()
    assert error_codes(body) == ["GRAPHQL_PARSE_FAILED"]


async def test_unknown_field_is_graphql_validation_failed(client: Any) -> None:
    body = await client.query("{ metrics { noSuchField } }")

    assert error_codes(body) == ["GRAPHQL_VALIDATION_FAILED"]


async def test_wrongly_typed_variable_is_bad_user_input(client: Any) -> None:
    body = await client.query(PAGE, {"first": "twenty"})

    assert error_codes(body) == ["BAD_USER_INPUT"]


async def test_unexpected_failure_is_masked_with_a_request_id(
    app_client_factory: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await app_client_factory(settings, run_worker=False)

    def broken_database(*_args: Any, **_kwargs: Any) -> Any:
        raise OperationalError(
            "SELECT secret FROM conversations WHERE tenant_id = ?", (1,), Exception("disk I/O")
        )

    monkeypatch.setattr(Database, "read", broken_database)

    # A conversations read fails before any resolver, where its kept response is looked up.
    for query in ("{ metrics { totalConversations } }", "{ conversations { totalCount } }"):
        response = await client.http.post("/graphql", json={"query": query})

        assert response.status_code == 200
        body = response.json()
        assert error_codes(body) == ["INTERNAL_SERVER_ERROR"]
        error = body["errors"][0]
        assert error["message"] == "Internal server error"
        assert error["extensions"]["requestId"] == response.headers["x-request-id"]
        assert "secret" not in response.text

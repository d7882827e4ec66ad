"""The bad-input corpus (tests/data/bad_inputs) uploaded over HTTP on SQLite and PostgreSQL.

Every file goes into a database that already holds a known good upload. A rejected file
must answer 200 with a coded GraphQL error and store nothing; an accepted one must report
exactly the expected counts and invalid records and store exactly its good records. No
response may be a 5xx or leak internals, and after the whole corpus the database must be
consistent and the earlier upload's conversations unchanged.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

DATA_DIR = Path(__file__).parent / "data"
CORPUS_DIR = DATA_DIR / "bad_inputs"
MANIFEST = json.loads((CORPUS_DIR / "manifest.json").read_text(encoding="utf-8"))
CASES: list[dict[str, Any]] = MANIFEST["cases"]
# The committed corpus stays small; big cases are generated at test time.
MAX_CORPUS_BYTES = 3 * 1024 * 1024
# The corpus's "million tiny chats" case: about 5 minutes on an idle two-core machine.
# POWERPULSE_TINY_CHATS lowers it for a quicker local run (200,000 take about 30 s).
TINY_CHATS = int(os.environ.get("POWERPULSE_TINY_CHATS", "1000000"))
# The corpus is a burst of uploads and queries from one client: no rate limits here.
NO_RATE_LIMITS = {"rate_limit_per_minute": 0, "upload_rate_limit_per_hour": 0}

# As in tests/graphql/conftest.py: what a response must never contain.
LEAK_PATTERNS = re.compile(
    r"Traceback|\bSELECT\b|\bINSERT INTO\b|\bUPDATE \w+ SET\b|\bDELETE FROM\b|\bWHERE\b"
    r"|sqlalchemy|asyncpg|aiosqlite|sqlite3|psycopg|\[SQL:|File \"",
)
REPORT_FIELDS = (
    "conversationsReceived messagesReceived messagesStored duplicatesSkipped "
    "autoresponsesFiltered invalidRecords conversationsCreated errorsTruncated "
    "errors { chatId index message }"
)
CONVERSATION_FIELDS = (
    "chatId platform messageCount customerMessageCount agentMessageCount botMessageCount "
    "firstMessageAt lastMessageAt durationMinutes firstResponseTimeMinutes "
    "avgResponseTimeMinutes replyCount contactCount agents"
)
TOTALS = "totalConversations totalMessages customerMessages agentMessages botMessages"


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "make_bad_inputs", DATA_DIR / "make_bad_inputs.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


generator = _load_generator()


def _baseline() -> bytes:
    customer, agent, bot = generator.customer, generator.agent, generator.bot
    return generator.export(
        [
            (
                "base-alpha",
                [
                    customer("my bill is wrong", "2025-02-01T10:00:00Z"),
                    bot("Thanks for contacting us", "2025-02-01T10:00:30Z"),
                    agent("let me check", "2025-02-01T10:05:00Z", username="jane"),
                    customer("still there?", "2025-02-01T10:12:00Z"),
                    agent("fixed now", "2025-02-01T10:20:00Z", username="jane"),
                ],
            ),
            (
                "base-bravo",
                [
                    customer("refund please", "2025-02-02T08:00:00Z", UNIQUE_POST_ID="b-1"),
                    agent(
                        "approved", "2025-02-02T08:30:00Z", username=None, AGENT_EMAIL="bob@x.io"
                    ),
                    customer("thanks again", "2025-02-04T13:00:00Z", UNIQUE_POST_ID="b-2"),
                    agent("anything else?", "2025-02-04T13:20:00Z", username="mike"),
                ],
            ),
            (
                "base-charlie",
                [
                    customer("hi", "2025-02-03T12:00:00Z"),
                    bot("Dial *977# for balance", "2025-02-03T12:00:05Z"),
                ],
            ),
        ]
    )


BASELINE_CHATS = ("base-alpha", "base-bravo", "base-charlie")


def case_content(case: dict[str, Any]) -> bytes:
    if "generate" in case:
        return generator.generate(case["generate"])
    return (CORPUS_DIR / case["file"]).read_bytes()


def leaks(body: str) -> list[str]:
    return LEAK_PATTERNS.findall(body)


def as_utc(value: str) -> datetime:
    moment = datetime.fromisoformat(value)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def has_surrogate(value: str | None) -> bool:
    return value is not None and any("\ud800" <= char <= "\udfff" for char in value)


# -- talking to the app ---------------------------------------------------------------------


async def upload(client: Any, content: bytes) -> tuple[int, dict[str, Any]]:
    response = await client.upload(content, selection=REPORT_FIELDS)
    assert response.status_code < 500, response.text[:2000]
    assert not leaks(response.text), f"response leaks internals: {response.text[:2000]}"
    return response.status_code, response.json()


async def totals(client: Any) -> dict[str, int]:
    return (await client.data(f"{{ metrics {{ {TOTALS} }} }}"))["metrics"]


async def conversation(client: Any, chat_id: str, extra: str = "") -> dict[str, Any] | None:
    data = await client.data(
        f"query($id: String!) {{ conversation(chatId: $id) {{ {CONVERSATION_FIELDS} {extra} }} }}",
        {"id": chat_id},
    )
    return data["conversation"]


async def contents(client: Any, chat_id: str) -> list[str | None]:
    found = await conversation(
        client, chat_id, "messages(first: 100) { edges { node { content } } }"
    )
    assert found is not None
    return [edge["node"]["content"] for edge in found["messages"]["edges"]]


# -- checking one case ----------------------------------------------------------------------


async def check_rejected(client: Any, expect: dict[str, Any], content: bytes) -> None:
    before = await totals(client)

    status, body = await upload(client, content)

    assert status == 200, body
    assert body.get("data") is None, body
    errors = body["errors"]
    assert [error.get("extensions", {}).get("code") for error in errors] == [expect["code"]]
    assert errors[0].get("path") == ["uploadChats"]
    message = errors[0]["message"]
    if "message_contains" in expect:
        assert expect["message_contains"] in message, message
    assert len(message) < 300 and "\n" not in message, message
    assert await totals(client) == before, "a refused upload stored something"


async def check_stored(client: Any, expect: dict[str, Any], content: bytes) -> None:
    before = await totals(client)

    status, body = await upload(client, content)

    assert status == 200, body
    assert "errors" not in body, body["errors"]
    report = body["data"]["uploadChats"]
    counts = {
        "chats_received": report["conversationsReceived"],
        "received": report["messagesReceived"],
        "stored": report["messagesStored"],
        "invalid": report["invalidRecords"],
        "duplicates": report["duplicatesSkipped"],
        "autoresponses": report["autoresponsesFiltered"],
        "created": report["conversationsCreated"],
        "errors_truncated": report["errorsTruncated"],
    }
    wanted = {key: expect[key] for key in counts if key in expect}
    wanted["created"] = len(expect["conversations"])  # every chat id of the corpus is new
    assert counts == wanted

    listed = report["errors"]
    expected_errors = expect["errors"]
    if expect["errors_truncated"]:
        assert len(listed) == expect["errors_listed"]
        indices = [error["index"] for error in listed]
        assert indices == sorted(indices), "errors are listed in file order"
    else:
        assert len(listed) == len(expected_errors), listed
    for error, (chat_id, index, reason) in zip(listed, expected_errors, strict=False):
        assert (error["chatId"], error["index"]) == (chat_id, index), (error, reason)
        assert reason in error["message"], (error, reason)

    after = await totals(client)
    assert after["totalConversations"] == before["totalConversations"] + len(
        expect["conversations"]
    )
    assert after["totalMessages"] == before["totalMessages"] + expect["stored"]
    for chat_id, count in expect["conversations"].items():
        found = await conversation(client, chat_id)
        assert found is not None, f"conversation {chat_id[:60]!r} was not stored"
        assert found["messageCount"] == count, (chat_id[:60], found)
    for chat_id, moment in expect.get("first_message_at", {}).items():
        found = await conversation(client, chat_id)
        assert found is not None
        assert as_utc(found["firstMessageAt"]) == as_utc(moment), (chat_id, found["firstMessageAt"])
    for chat_id, texts in expect.get("contents", {}).items():
        assert await contents(client, chat_id) == texts
    for chat_id, agents in expect.get("agents", {}).items():
        found = await conversation(client, chat_id)
        assert found is not None
        assert sorted(found["agents"]) == sorted(agents)
    for chat_id, senders in expect.get("senders", {}).items():
        found = await conversation(client, chat_id)
        assert found is not None
        assert {
            "customer": found["customerMessageCount"],
            "agent": found["agentMessageCount"],
            "bot": found["botMessageCount"],
        } == senders
    for chat_id in expect["conversations"]:
        found = await conversation(client, chat_id)
        assert found is not None
        assert not has_surrogate(found["chatId"])
        assert not any(has_surrogate(agent) for agent in found["agents"])
        assert not any(has_surrogate(text) for text in await contents(client, chat_id))


async def check_case(client: Any, expect: dict[str, Any], content: bytes) -> None:
    if expect["outcome"] == "rejected":
        await check_rejected(client, expect, content)
    else:
        await check_stored(client, expect, content)


# -- the database after the corpus ----------------------------------------------------------

CONSISTENCY_QUERIES = {
    "messages without their conversation": """
        SELECT count(*) FROM messages m
        LEFT JOIN conversations c ON c.id = m.conversation_id WHERE c.id IS NULL""",
    "messages of another tenant than their conversation": """
        SELECT count(*) FROM messages m
        JOIN conversations c ON c.id = m.conversation_id WHERE c.tenant_id <> m.tenant_id""",
    "conversations whose message_count is not their messages": """
        SELECT count(*) FROM conversations c WHERE c.message_count <>
            (SELECT count(*) FROM messages m WHERE m.conversation_id = c.id)""",
    "conversations whose sender counts are not their messages": """
        SELECT count(*) FROM conversations c WHERE
            c.customer_message_count <> (SELECT count(*) FROM messages m
                WHERE m.conversation_id = c.id AND m.sender = 'CUSTOMER')
            OR c.agent_message_count <> (SELECT count(*) FROM messages m
                WHERE m.conversation_id = c.id AND m.sender = 'AGENT')
            OR c.bot_message_count <> (SELECT count(*) FROM messages m
                WHERE m.conversation_id = c.id AND m.sender = 'BOT')""",
    "conversations without messages": "SELECT count(*) FROM conversations WHERE message_count < 1",
    "conversations whose first/last times are not their messages'": """
        SELECT count(*) FROM conversations c WHERE
            c.first_message_at <> (SELECT min(m.sent_at) FROM messages m
                WHERE m.conversation_id = c.id)
            OR c.last_message_at <> (SELECT max(m.sent_at) FROM messages m
                WHERE m.conversation_id = c.id)""",
    "conversations whose reply_count is not their reply events": """
        SELECT count(*) FROM conversations c WHERE c.reply_count <>
            (SELECT count(*) FROM reply_events r WHERE r.conversation_id = c.id)""",
    "reply events without their conversation": """
        SELECT count(*) FROM reply_events r
        LEFT JOIN conversations c ON c.id = r.conversation_id WHERE c.id IS NULL""",
    "agent rows without their conversation": """
        SELECT count(*) FROM conversation_agents a
        LEFT JOIN conversations c ON c.id = a.conversation_id WHERE c.id IS NULL""",
    "conversations whose agent rows do not add up to agent_message_count": """
        SELECT count(*) FROM conversations c WHERE c.agent_message_count <>
            (SELECT coalesce(sum(a.message_count), 0) FROM conversation_agents a
                WHERE a.conversation_id = c.id)""",
    "repeated message keys in a conversation": """
        SELECT count(*) FROM (SELECT conversation_id, message_key FROM messages
            GROUP BY conversation_id, message_key HAVING count(*) > 1) repeated""",
    "chat ids empty or longer than 255 characters": """
        SELECT count(*) FROM conversations
        WHERE length(chat_id) = 0 OR length(chat_id) > 255""",
}


async def integrity_problems(database_url: str) -> dict[str, Any]:
    engine = create_async_engine(database_url, poolclass=NullPool)
    problems: dict[str, Any] = {}
    try:
        async with engine.connect() as connection:
            if engine.dialect.name == "sqlite":
                check = (await connection.execute(text("PRAGMA integrity_check"))).all()
                if [tuple(row) for row in check] != [("ok",)]:
                    problems["PRAGMA integrity_check"] = check
                foreign = (await connection.execute(text("PRAGMA foreign_key_check"))).all()
                if foreign:
                    problems["PRAGMA foreign_key_check"] = foreign
            for name, query in CONSISTENCY_QUERIES.items():
                count = (await connection.execute(text(query))).scalar_one()
                if count:
                    problems[name] = count
    finally:
        await engine.dispose()
    return problems


async def snapshot(client: Any, chat_ids: tuple[str, ...]) -> dict[str, Any]:
    return {chat_id: await conversation(client, chat_id) for chat_id in chat_ids}


# -- the tests ------------------------------------------------------------------------------


def test_the_corpus_is_committed_as_the_generator_builds_it() -> None:
    files = generator.corpus()
    present = {path.name: path.read_bytes() for path in CORPUS_DIR.iterdir()}
    assert present.keys() == files.keys()
    changed = sorted(name for name in files if present[name] != files[name])
    assert not changed, f"run python tests/data/make_bad_inputs.py: {changed}"
    assert len(files) - 1 >= 40
    assert sum(len(content) for content in files.values()) < MAX_CORPUS_BYTES
    assert {case["name"] for case in CASES} >= {"huge_message"}
    assert len(generator.generate("huge_message")) > 5 * 1024 * 1024


# Small files are read in a thread and big ones parsed in a process of their own: the
# corpus runs both ways, every file through each.
PARSE_MODES = {
    "thread": {"ingest_parse_process": False},
    "process": {"ingest_parse_process": True, "ingest_process_min_mib": 0},
}


@pytest.mark.parametrize("parse_mode", PARSE_MODES.values(), ids=PARSE_MODES.keys())
async def test_every_bad_input_is_refused_or_stored_exactly(
    app_client_factory: Any,
    settings_factory: Any,
    database_url: str,
    subtests: Any,
    parse_mode: dict[str, Any],
) -> None:
    settings = settings_factory(**MANIFEST["settings"], **NO_RATE_LIMITS, **parse_mode)
    client = await app_client_factory(settings, run_worker=False)
    status, body = await upload(client, _baseline())
    assert status == 200 and "errors" not in body, body
    assert body["data"]["uploadChats"]["messagesStored"] == 10
    baseline = await snapshot(client, BASELINE_CHATS)
    assert all(baseline.values())

    for case in CASES:
        with subtests.test(case=case["name"]):
            await check_case(client, case["expect"], case_content(case))

    assert await snapshot(client, BASELINE_CHATS) == baseline
    assert await integrity_problems(database_url) == {}


async def test_an_upload_over_the_size_limit_is_refused_before_it_is_stored(
    app_client_factory: Any, settings_factory: Any
) -> None:
    client = await app_client_factory(
        settings_factory(max_upload_bytes=1024 * 1024, **NO_RATE_LIMITS), run_worker=False
    )
    content = generator.generate("huge_message")

    response = await client.upload(content)

    assert response.status_code == 413
    assert not leaks(response.text)
    assert [error["extensions"]["code"] for error in response.json()["errors"]] == [
        "PAYLOAD_TOO_LARGE"
    ]
    assert (await totals(client))["totalMessages"] == 0


UPLOAD_MUTATION = "mutation($file: Upload!) { uploadChats(file: $file) { messagesStored } }"
BAD_REQUESTS: dict[str, dict[str, Any]] = {
    # A JSON body must be an object; strawberry called .get() on anything else (a 500).
    "json body a number": {"content": b"5"},
    "json body a string": {"content": b'"{ metrics { totalMessages } }"'},
    "json body null": {"content": b"null"},
    "json body true": {"content": b"true"},
    # The Upload scalar accepts any value; a resolver reading .file from it failed (a 500
    # in disguise: INTERNAL_SERVER_ERROR).
    "file variable a string": {"json": {"query": UPLOAD_MUTATION, "variables": {"file": "x"}}},
    "file variable an object": {"json": {"query": UPLOAD_MUTATION, "variables": {"file": {}}}},
    "file literal": {"json": {"query": 'mutation { uploadChats(file: "x") { messagesStored } }'}},
    # A multipart `map` of the wrong shape made strawberry raise (a 500).
    "multipart map a list": {"operations": {"query": UPLOAD_MUTATION}, "map": ["variables.file"]},
    "multipart map path a number": {"operations": {"query": UPLOAD_MUTATION}, "map": {"0": [5]}},
    "multipart map null": {"operations": {"query": UPLOAD_MUTATION}, "map": None},
    "multipart map into a string": {
        "operations": {"query": UPLOAD_MUTATION, "variables": {"file": "x"}},
        "map": {"0": ["variables.file.inner"]},
    },
    "multipart map past a list": {
        "operations": {"query": UPLOAD_MUTATION, "variables": {"file": []}},
        "map": {"0": ["variables.file.3"]},
    },
    "multipart variables null": {
        "operations": {"query": UPLOAD_MUTATION, "variables": None},
        "map": {"0": ["variables.file"]},
    },
    "multipart operations a number": {"operations": 5, "map": {}},
    "multipart operations null": {"operations": None, "map": {"0": ["variables.file"]}},
    # Refused by strawberry or by validation, before a resolver could close the file.
    "multipart map to a missing path": {
        "operations": {"query": UPLOAD_MUTATION, "variables": {}},
        "map": {"0": ["variables.missing.file"]},
    },
    "multipart invalid document": {
        "operations": {
            "query": "mutation($file: Upload!) { uploadChatz(file: $file) { messagesStored } }",
            "variables": {"file": None},
        },
        "map": {"0": ["variables.file"]},
    },
    "multipart file not used": {
        "operations": {"query": "{ metrics { totalMessages } }", "variables": {"file": None}},
        "map": {"0": ["variables.file"]},
    },
}


@pytest.mark.parametrize("request_parts", BAD_REQUESTS.values(), ids=BAD_REQUESTS.keys())
async def test_a_malformed_request_is_a_client_error_with_a_code(
    app_client_factory: Any, settings_factory: Any, request_parts: dict[str, Any]
) -> None:
    client = await app_client_factory(settings_factory(**NO_RATE_LIMITS), run_worker=False)
    if "content" in request_parts:
        response = await client.http.post(
            "/graphql",
            content=request_parts["content"],
            headers={"content-type": "application/json"},
        )
    elif "json" in request_parts:
        response = await client.http.post("/graphql", json=request_parts["json"])
    else:
        response = await client.http.post(
            "/graphql",
            data={
                "operations": json.dumps(request_parts["operations"]),
                "map": json.dumps(request_parts["map"]),
            },
            files={"0": ("export.json", b'{"a": []}', "application/json")},
            headers={"Apollo-Require-Preflight": "true"},
        )

    assert response.status_code < 500, response.text
    assert not leaks(response.text), response.text
    body = response.json()
    if body.get("data") is not None:  # a query that merely carried an unused file
        assert "errors" not in body and body["data"]["metrics"]["totalMessages"] == 0
    else:
        codes = [error["extensions"]["code"] for error in body["errors"]]
        assert codes in (["BAD_REQUEST"], ["BAD_USER_INPUT"], ["GRAPHQL_VALIDATION_FAILED"])
    assert (await totals(client))["totalMessages"] == 0


TEXT_ARGUMENT_QUERIES = {
    "conversation": "query($s: String!) { conversation(chatId: $s) { chatId messageCount } }",
    "agent": "query($s: String!) { metrics(filter: {agent: $s}) { totalMessages } }",
    "agents": "query($s: String!) { metrics(filter: {agents: [$s]}) { totalMessages } }",
    "search": "query($s: String!) { metrics(filter: {search: $s}) { totalMessages } }",
    "chatIds": "query($s: String!) { metrics(filter: {chatIds: [$s]}) { totalMessages } }",
    "topic": "query($s: String!) { metrics(filter: {topic: $s}) { totalMessages } }",
    "language": "query($s: String!) { metrics(filter: {language: $s}) { totalMessages } }",
    "conversations": "query($s: String!) { conversations(filter: {search: $s}) "
    "{ edges { node { chatId } } } }",
}


async def test_text_arguments_with_nul_or_unpaired_surrogates_are_answered(
    app_client_factory: Any, settings_factory: Any, subtests: Any
) -> None:
    # PostgreSQL refuses NUL in text and no driver encodes an unpaired surrogate: such
    # arguments failed as INTERNAL_SERVER_ERROR. They are cleaned as ingest cleans text, so
    # "base-al\u0000pha" finds the chat stored as "base-alpha" (NUL removed).
    client = await app_client_factory(settings_factory(**NO_RATE_LIMITS), run_worker=False)
    status, body = await upload(client, _baseline())
    assert status == 200 and "errors" not in body, body

    for name, query in TEXT_ARGUMENT_QUERIES.items():
        for value in ("base-al\x00pha", "\x00", "\ud800", "jane\udc00"):
            with subtests.test(argument=name, value=value):
                # json.dumps writes unpaired surrogates as escapes; httpx's json= cannot send them.
                response = await client.http.post(
                    "/graphql",
                    content=json.dumps({"query": query, "variables": {"s": value}}),
                    headers={"content-type": "application/json"},
                )
                assert response.status_code == 200, response.text
                assert not leaks(response.text), response.text
                assert "errors" not in response.json(), response.json()
    found = await client.data(TEXT_ARGUMENT_QUERIES["conversation"], {"s": "base-al\x00pha"})
    assert found["conversation"] == {"chatId": "base-alpha", "messageCount": 5}


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_huge_number_of_tiny_chats_is_stored_in_full(
    app_client_factory: Any, settings_factory: Any, database_url: str
) -> None:
    content = generator.tiny_chats(TINY_CHATS)
    # About 66 bytes a chat: a million of them exceed the default 50 MiB upload limit.
    limit = max(50 * 1024 * 1024, len(content) + 1024 * 1024)
    client = await app_client_factory(
        settings_factory(max_upload_bytes=limit, **NO_RATE_LIMITS), run_worker=False
    )
    status, body = await upload(client, _baseline())
    assert status == 200 and "errors" not in body, body
    baseline = await snapshot(client, BASELINE_CHATS)
    before = await totals(client)

    status, body = await upload(client, content)

    assert status == 200 and "errors" not in body, body
    report = body["data"]["uploadChats"]
    assert report["conversationsReceived"] == TINY_CHATS
    assert report["messagesReceived"] == TINY_CHATS
    assert report["messagesStored"] == TINY_CHATS
    assert report["conversationsCreated"] == TINY_CHATS
    assert report["invalidRecords"] == 0 and report["errors"] == []
    after = await totals(client)
    assert after["totalConversations"] == before["totalConversations"] + TINY_CHATS
    assert after["totalMessages"] == before["totalMessages"] + TINY_CHATS
    assert after["customerMessages"] == before["customerMessages"] + TINY_CHATS
    last = await conversation(client, f"tiny-{TINY_CHATS - 1:07d}")
    assert last is not None and last["messageCount"] == 1
    assert await snapshot(client, BASELINE_CHATS) == baseline
    assert await integrity_problems(database_url) == {}

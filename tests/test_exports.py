"""CSV exports over HTTP: the same selection as the GraphQL filter, spreadsheet-safe cells,
an optional BOM for Excel, coded errors for bad parameters, and a streamed body.

The analysed chats are judged by FakeOpenAI (see its docstring): a customer line's mood is 5
with "thank", 1 with "still"/"not", else 3; satisfied = mood of the last customer line >= 4;
topics from the customer text ("token" -> token purchase, "power"/"outage" -> outage,
"bill" -> billing, else enquiry).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import math
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from asgi_lifespan import LifespanManager

from fakes.openai_server import FakeOpenAI
from powerpulse.app import create_app
from powerpulse.services.exports import CONVERSATIONS_PER_CHUNK, MESSAGES_PER_CHUNK, renderer


def customer(at: str, text: str) -> dict[str, Any]:
    return {"DIRECTION": "to_company", "SOCIAL_CREATE_TIME": at, "MESSAGE_CONTENT": text}


def agent(at: str, text: str, username: str) -> dict[str, Any]:
    return {
        "DIRECTION": "to_client",
        "SOCIAL_CREATE_TIME": at,
        "MESSAGE_CONTENT": text,
        "AGENT_USERNAME": username,
    }


CHATS = {
    "e1": [  # two topics; an agent whose name a spreadsheet would run as a formula
        customer("2025-08-04T09:00:00Z", "power outage and my bill is wrong"),
        agent("2025-08-04T09:10:00Z", "Both fixed", "@admin"),
        customer("2025-08-04T09:12:00Z", "thank you"),
    ],
    "e2": [
        customer("2025-08-05T09:00:00Z", '=HYPERLINK("http://evil.example","click")'),
        agent("2025-08-05T09:05:00Z", "-1 credit applied", "jane"),
        customer("2025-08-05T09:06:00Z", "still broken"),
    ],
    "e3": [
        customer("2025-08-06T09:00:00Z", "+254 token missing"),
        agent("2025-08-06T09:20:00Z", "Resent", "jane"),
        customer("2025-08-06T09:21:00Z", "thanks"),
    ],
    "e4": [customer("2025-08-07T09:00:00Z", "hello")],
}
# chat: (agents, topics, satisfied) by hand from the judge rules.
EXPECTED = {
    "e1": ("@admin", "outage;billing", True),
    "e2": ("jane", "enquiry", False),
    "e3": ("jane", "token purchase", True),
    "e4": ("", "enquiry", False),
}
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

CONVERSATIONS = """
query($filter: ConversationFilter) {
  conversations(first: 100, filter: $filter, orderBy: FIRST_MESSAGE_ASC) {
    edges { node {
      chatId messageCount customerMessageCount firstResponseTimeMinutes replyCount
      contactCount agents analysisStatus durationMinutes
      analysis { satisfactionScore isSatisfied resolved topics sentimentScore effortScore }
      csi { score effectiveness effort efficiency empathy }
    } }
  }
}
"""
JOB = "query($id: ID!) { job(id: $id) { status finishedAt } }"


def upload_body(chats: dict[str, Any]) -> bytes:
    return json.dumps(chats).encode()


async def upload(client: Any, chats: dict[str, Any]) -> str:
    response = await client.upload(upload_body(chats), selection="job { id }")
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body
    return body["data"]["uploadChats"]["job"]["id"]  # type: ignore[no-any-return]


async def wait_for_job(client: Any, job_id: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while (await client.data(JOB, {"id": job_id}))["job"]["finishedAt"] is None:
        assert time.monotonic() < deadline, f"job {job_id} did not finish"
        await asyncio.sleep(0.05)


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
async def analysed(app_client_factory: Any, settings_factory: Any, fake: FakeOpenAI) -> Any:
    client = await app_client_factory(
        settings_factory(
            analyzer="openai",
            openai_api_key="k",
            openai_base_url=fake.base_url,
            worker_poll_seconds=0.05,
        )
    )
    await wait_for_job(client, await upload(client, CHATS))
    return client


@pytest.fixture
async def plain(app_client_factory: Any, settings_factory: Any) -> Any:
    return await app_client_factory(settings_factory(), run_worker=False)


def rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


async def download(client: Any, path: str, params: Any = None) -> str:
    response = await client.http.get(path, params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    disposition = response.headers["content-disposition"]
    assert disposition.startswith("attachment; filename=")
    assert disposition.endswith('.csv"')
    return response.content.decode("utf-8")  # type: ignore[no-any-return]


def defused(text: str) -> str:
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def number(text: str) -> float | None:
    return None if text == "" else float(text)


# -- the same selection as GraphQL ----------------------------------------------------------

# Query parameters, the same filter in GraphQL, and the chats it selects.
FILTERS: list[tuple[dict[str, str], dict[str, Any], list[str]]] = [
    ({}, {}, ["e1", "e2", "e3", "e4"]),
    (
        {"startDate": "2025-08-05", "endDate": "2025-08-06"},
        {"startDate": "2025-08-05", "endDate": "2025-08-06"},
        ["e2", "e3"],
    ),
    ({"agent": "jane"}, {"agent": "jane"}, ["e2", "e3"]),
    ({"agent": "@admin"}, {"agent": "@admin"}, ["e1"]),
    ({"topic": "outage"}, {"topic": "outage"}, ["e1"]),
    ({"topics": "billing,token purchase"}, {"topics": ["billing", "token purchase"]}, ["e1", "e3"]),
    ({"satisfied": "true"}, {"satisfied": True}, ["e1", "e3"]),
    ({"satisfied": "false"}, {"satisfied": False}, ["e2", "e4"]),
    ({"satisfied": "true", "agent": "jane"}, {"satisfied": True, "agent": "jane"}, ["e3"]),
    ({"minFirstResponseTimeMinutes": "6"}, {"minFirstResponseTimeMinutes": 6}, ["e1", "e3"]),
    ({"search": "HYPERLINK"}, {"search": "HYPERLINK"}, ["e2"]),
    (
        {"analysisStatus": "done", "endDate": "2025-08-05"},
        {"analysisStatus": "DONE", "endDate": "2025-08-05"},
        ["e1", "e2"],
    ),
]


async def test_conversation_rows_match_the_conversations_query(
    analysed: Any, subtests: Any
) -> None:
    for params, filter, chat_ids in FILTERS:
        with subtests.test(params=params):
            exported = rows(await download(analysed, "/export/conversations.csv", params))
            data = await analysed.data(CONVERSATIONS, {"filter": filter})
            nodes = [edge["node"] for edge in data["conversations"]["edges"]]

            assert [row["chat_id"] for row in exported] == chat_ids
            assert [node["chatId"] for node in nodes] == chat_ids
            for row, node in zip(exported, nodes, strict=True):
                analysis, csi = node["analysis"], node["csi"]
                assert int(row["message_count"]) == node["messageCount"]
                assert int(row["customer_message_count"]) == node["customerMessageCount"]
                assert (
                    number(row["first_response_time_minutes"]) == node["firstResponseTimeMinutes"]
                )
                assert number(row["duration_minutes"]) == pytest.approx(node["durationMinutes"])
                assert int(row["reply_count"]) == node["replyCount"]
                assert int(row["contact_count"]) == node["contactCount"]
                assert row["agents"] == defused(";".join(node["agents"]))
                assert row["analysis_status"] == node["analysisStatus"] == "DONE"
                assert int(row["satisfaction_score"]) == analysis["satisfactionScore"]
                assert row["is_satisfied"] == str(analysis["isSatisfied"]).lower()
                assert row["resolved"] == str(analysis["resolved"]).lower()
                assert row["topics"] == ";".join(analysis["topics"])
                for column, field in (
                    ("csi", "score"),
                    ("csi_effectiveness", "effectiveness"),
                    ("csi_effort", "effort"),
                    ("csi_efficiency", "efficiency"),
                    ("csi_empathy", "empathy"),
                ):
                    assert number(row[column]) == pytest.approx(csi[field]), column


async def test_conversation_rows_carry_hand_computed_values(analysed: Any) -> None:
    exported = {
        row["chat_id"]: row for row in rows(await download(analysed, "/export/conversations.csv"))
    }

    for chat_id, (agents, topics, satisfied) in EXPECTED.items():
        row = exported[chat_id]
        assert row["agents"] == defused(agents), chat_id
        assert row["topics"] == topics, chat_id
        assert row["is_satisfied"] == ("true" if satisfied else "false"), chat_id
    assert exported["e1"]["first_response_time_minutes"] == "10.0"
    assert exported["e1"]["first_response_agent"] == "'@admin"
    assert exported["e4"]["first_response_time_minutes"] == ""
    assert exported["e1"]["first_message_at"] == "2025-08-04T09:00:00+00:00"
    # e1: resolved first contact, effort 5, sentiment (3 + 5) // 2 = 4, final 5, FRT 10:
    # 40 + 25 + 0.15 × 100 ln 24 / ln 48 + 0.2 × 87.5.
    assert float(exported["e1"]["csi"]) == pytest.approx(
        40 + 25 + 15 * math.log(24) / math.log(48) + 17.5
    )


async def test_message_rows_are_the_messages_of_the_selected_conversations(
    analysed: Any, subtests: Any
) -> None:
    for params, filter, chat_ids in FILTERS:
        with subtests.test(params=params):
            exported = rows(await download(analysed, "/export/messages.csv", params))
            data = await analysed.data(CONVERSATIONS, {"filter": filter})
            counts = {
                edge["node"]["chatId"]: edge["node"]["messageCount"]
                for edge in data["conversations"]["edges"]
            }

            assert list(dict.fromkeys(row["chat_id"] for row in exported)) == chat_ids
            assert len(exported) == sum(counts.values())
            for chat_id in chat_ids:
                assert sum(row["chat_id"] == chat_id for row in exported) == counts[chat_id]


async def test_message_rows_are_in_time_order_with_their_senders(analysed: Any) -> None:
    exported = rows(await download(analysed, "/export/messages.csv", {"agent": "jane"}))

    assert [(row["chat_id"], row["sender"], row["agent_username"]) for row in exported] == [
        ("e2", "CUSTOMER", ""),
        ("e2", "AGENT", "jane"),
        ("e2", "CUSTOMER", ""),
        ("e3", "CUSTOMER", ""),
        ("e3", "AGENT", "jane"),
        ("e3", "CUSTOMER", ""),
    ]
    assert [row["sent_at"] for row in exported[:2]] == [
        "2025-08-05T09:00:00+00:00",
        "2025-08-05T09:05:00+00:00",
    ]


# -- spreadsheet safety ---------------------------------------------------------------------


async def test_cells_that_start_like_formulas_are_prefixed_with_a_quote(analysed: Any) -> None:
    messages = rows(await download(analysed, "/export/messages.csv"))
    contents = {row["content"] for row in messages}
    usernames = {row["agent_username"] for row in messages}

    assert '\'=HYPERLINK("http://evil.example","click")' in contents
    assert "'-1 credit applied" in contents
    assert "'+254 token missing" in contents
    assert "'@admin" in usernames
    assert "thank you" in contents  # ordinary text is left alone
    assert not any(text.startswith(FORMULA_STARTS) for text in contents | usernames)
    conversations = rows(await download(analysed, "/export/conversations.csv"))
    for row in conversations:
        for column, value in row.items():
            assert not value.startswith(("=", "+", "@", "\t", "\r")), (column, value)
            # A negative number would be a number, not text; none is negative here.
            assert not value.startswith("-"), (column, value)


@pytest.mark.parametrize(
    ("kind", "value", "expected"),
    [
        ("text", "=1+1", "'=1+1"),
        ("text", "+1", "'+1"),
        ("text", "-1", "'-1"),
        ("text", "@SUM(A1)", "'@SUM(A1)"),
        ("text", "\tcmd", "'\tcmd"),
        ("text", "\rcmd", "'\rcmd"),
        ("text", "a=1", "a=1"),
        ("text", "", ""),
        ("text", None, ""),
        ("flag", True, "true"),
        ("flag", False, "false"),
        ("flag", 1, "true"),  # SQLite's driver reads a flag as a number
        ("flag", 0, "false"),
        ("flag", None, ""),
        ("value", -1.5, "-1.5"),
        ("value", None, ""),
        ("time", "2025-08-01 10:00:00.000000", "2025-08-01T10:00:00+00:00"),
        ("time", "2025-08-01 10:00:00.250000", "2025-08-01T10:00:00.250000+00:00"),
        (
            "time",
            datetime(2025, 8, 1, 10, 0, 0, 250000, tzinfo=UTC),
            "2025-08-01T10:00:00.250000+00:00",
        ),
        ("time", datetime(2025, 8, 1, 10, tzinfo=UTC), "2025-08-01T10:00:00+00:00"),
    ],
)
def test_cells_defuse_formula_text_only(kind: str, value: Any, expected: str) -> None:
    rendered = renderer(["text", kind, "value"])([("x", value, 7)])
    assert next(csv.reader(io.StringIO(rendered))) == ["x", expected, "7"]


# -- Excel ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/export/conversations.csv", "/export/messages.csv"])
async def test_excel_flag_adds_a_utf8_bom(analysed: Any, path: str) -> None:
    with_bom = (await analysed.http.get(path, params={"excel": "1"})).content
    without = (await analysed.http.get(path)).content

    assert with_bom.startswith(b"\xef\xbb\xbf")
    assert not without.startswith(b"\xef\xbb\xbf")
    assert with_bom[3:] == without
    assert (await analysed.http.get(path, params={"excel": "false"})).content == without


# -- the older address ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("export_type", "path"),
    [("conversations", "/export/conversations.csv"), ("messages", "/export/messages.csv")],
)
async def test_api_download_serves_the_same_files(
    analysed: Any, export_type: str, path: str
) -> None:
    params = {"agent": "jane", "satisfied": "true"}

    old = await download(analysed, "/api/download", {"export_type": export_type, **params})
    new = await download(analysed, path, params)

    assert old == new
    assert [row["chat_id"] for row in rows(old)] == (
        ["e3"] if export_type == "conversations" else ["e3", "e3", "e3"]
    )


async def test_api_download_defaults_to_conversations(analysed: Any) -> None:
    assert await download(analysed, "/api/download") == await download(
        analysed, "/export/conversations.csv"
    )


# -- bad parameters -------------------------------------------------------------------------

BAD_PARAMETERS = [
    "startDate=2025-13-01",
    "endDate=yesterday",
    "startDate=2025-08-10&endDate=2025-08-01",
    "unknown=1",
    "satisfied=maybe",
    "repeatContact=2",
    "agent=jane&agent=mike",
    "sentiment=happy",
    "minSatisfaction=high",
    "minSatisfaction=9",
    "minCsi=abc",
    "maxFirstResponseTimeMinutes=nan",
    "excel=perhaps",
]


async def test_bad_parameters_are_refused_with_a_coded_json_error(
    plain: Any, subtests: Any
) -> None:
    for path in ("/export/conversations.csv", "/export/messages.csv", "/api/download"):
        for query in BAD_PARAMETERS:
            with subtests.test(path=path, query=query):
                response = await plain.http.get(f"{path}?{query}")
                assert response.status_code == 400, response.text
                assert response.headers["content-type"].startswith("application/json")
                errors = response.json()["errors"]
                assert errors[0]["extensions"]["code"] == "BAD_USER_INPUT"
                assert errors[0]["message"]


async def test_unknown_export_type_is_refused(plain: Any) -> None:
    response = await plain.http.get("/api/download?export_type=xlsx")

    assert response.status_code == 400
    assert response.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_an_empty_selection_is_just_the_header(plain: Any) -> None:
    text = await download(plain, "/export/conversations.csv")

    assert text.splitlines() == [text.splitlines()[0]]
    assert text.startswith("chat_id,platform,first_message_at,")
    assert rows(await download(plain, "/export/messages.csv")) == []


# -- streaming ------------------------------------------------------------------------------

MANY = 2500


async def raw_get(app: Any, path: str) -> list[dict[str, Any]]:
    """GET through the ASGI interface itself, returning every message the app sends.

    (httpx's ASGI transport joins the body parts, so it cannot show streaming.)
    """
    sent: list[dict[str, Any]] = []
    finished = asyncio.Event()
    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await finished.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            finished.set()

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "extensions": {},
    }
    await app(scope, receive, send)
    return sent


@pytest.mark.slow
@pytest.mark.parametrize(
    ("path", "rows_per_chat", "rows_per_chunk"),
    [
        ("/export/conversations.csv", 1, CONVERSATIONS_PER_CHUNK),
        ("/export/messages.csv", 2, MESSAGES_PER_CHUNK),
    ],
)
async def test_large_exports_stream_in_several_chunks(
    app_client_factory: Any,
    settings_factory: Any,
    path: str,
    rows_per_chat: int,
    rows_per_chunk: int,
) -> None:
    settings = settings_factory()
    client = await app_client_factory(settings, run_worker=False)
    chats = {
        f"bulk-{index:05d}": [
            customer(f"2025-06-{1 + index % 28:02d}T{index % 24:02d}:00:00Z", f"question {index}"),
            agent(f"2025-06-{1 + index % 28:02d}T{index % 24:02d}:03:00Z", "answer", "jane"),
        ]
        for index in range(MANY)
    }
    await upload(client, chats)

    async with LifespanManager(create_app(settings, run_worker=False)) as manager:
        sent = await raw_get(manager.app, path)

    assert sent[0]["type"] == "http.response.start"
    assert sent[0]["status"] == 200
    bodies = [message for message in sent[1:] if message["type"] == "http.response.body"]
    chunks = [message["body"] for message in bodies if message["body"]]
    # The header first, then a chunk per batch of rows read from the database (thousands
    # of rows are more than one batch).
    expected_rows = MANY * rows_per_chat
    assert len(chunks) >= 3
    assert all(message.get("more_body") for message in bodies[:-1])
    assert chunks[0].count(b"\n") == 1  # the header leaves before any row is read
    # Small chunks: the process's other requests take turns with the export between them.
    assert max(chunk.count(b"\n") for chunk in chunks) <= rows_per_chunk
    assert len(chunks) >= 1 + expected_rows // rows_per_chunk
    exported = rows(b"".join(chunks).decode())
    assert len(exported) == expected_rows
    assert len({row["chat_id"] for row in exported}) == MANY
    # The HTTP client sees the same file.
    assert rows(await download(client, path)) == exported


# -- export slots ---------------------------------------------------------------------------


class HeldExport:
    """An export through the ASGI interface whose client stops reading after the header."""

    def __init__(self, app: Any, path: str, *, client_gone: bool = False) -> None:
        self.header_sent = asyncio.Event()
        self.resume = asyncio.Event()
        self.client_gone = client_gone
        self.requested = False
        self.sent: list[dict[str, Any]] = []
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"testserver")],
            "client": ("127.0.0.1", 50001),
            "server": ("testserver", 80),
            "extensions": {},
        }
        self.task = asyncio.create_task(app(scope, self._receive, self._send))

    async def _receive(self) -> dict[str, Any]:
        if not self.requested:
            self.requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.resume.wait()
        await asyncio.sleep(5)  # the client stays connected while the rest is sent
        return {"type": "http.disconnect"}

    async def _send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)
        if message["type"] == "http.response.body" and message.get("body"):
            self.header_sent.set()
            await self.resume.wait()
            if self.client_gone:
                raise OSError("the client went away")


async def test_exports_beyond_the_slots_wait_then_are_refused_before_any_byte(
    app_client_factory: Any, settings_factory: Any
) -> None:
    # The wait is long enough that the export waiting below gets the slot whatever else
    # the machine is doing (0.3 s once was not: the slot came back too late, and it was
    # refused).
    settings = settings_factory(export_concurrency=1, export_wait_seconds=2)
    client = await app_client_factory(settings, run_worker=False)
    await upload(client, {"e1": CHATS["e1"]})
    app = client.http._transport.app
    held = HeldExport(app, "/export/conversations.csv")
    await asyncio.wait_for(held.header_sent.wait(), 10)

    refused = await client.http.get("/export/messages.csv")
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "5"
    assert refused.json()["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE"
    # A bad filter is still answered at once: it never waits for a slot.
    assert (await client.http.get("/export/messages.csv?startDate=x")).status_code == 400

    # An export waiting for the slot gets it when the one streaming finishes.
    waiting = asyncio.create_task(client.http.get("/export/messages.csv"))
    await asyncio.sleep(0.05)
    held.resume.set()
    await held.task
    assert held.sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert (await waiting).status_code == 200


async def test_a_client_gone_mid_export_gives_its_slot_back(
    app_client_factory: Any, settings_factory: Any
) -> None:
    settings = settings_factory(export_concurrency=1, export_wait_seconds=2)
    client = await app_client_factory(settings, run_worker=False)
    await upload(client, {"e1": CHATS["e1"]})
    app = client.http._transport.app
    for _ in range(3):
        gone = HeldExport(app, "/export/conversations.csv", client_gone=True)
        await asyncio.wait_for(gone.header_sent.wait(), 10)
        gone.resume.set()
        with contextlib.suppress(OSError):
            await gone.task
    response = await client.http.get("/export/conversations.csv")
    assert response.status_code == 200
    assert "e1" in response.text

"""IngestService against real SQLite and PostgreSQL: reports, de-duplication, re-measuring,
all-or-nothing uploads and the aggregate metrics over what was stored."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, func, select

from powerpulse.db import Database, create_engine, create_schema
from powerpulse.errors import InvalidUpload
from powerpulse.models import (
    AnalysisJob,
    AnalysisTask,
    Conversation,
    ConversationAgent,
    ConversationAnalysis,
    Message,
    ReplyEvent,
)
from powerpulse.repositories.conversations import ConversationRepository
from powerpulse.repositories.tenants import TenantRepository
from powerpulse.services import ingest as ingest_service
from powerpulse.services.analytics import AnalyticsService
from powerpulse.services.conversations import ConversationService
from powerpulse.services.filters import ConversationFilter, ConversationOrder, resolve_filter
from powerpulse.services.ingest import IngestService, UploadReport
from powerpulse.settings import Settings

T0 = datetime(2025, 8, 12, 9, 0, tzinfo=UTC)


# -- building exports ---------------------------------------------------------------------


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def at(minutes: float, start: datetime = T0) -> str:
    return iso(start + timedelta(minutes=minutes))


def customer(when: str, text: str | None = "hello", **extra: Any) -> dict[str, Any]:
    return {
        "DIRECTION": "to_company",
        "SOCIAL_CREATE_TIME": when,
        "MESSAGE_CONTENT": text,
        "UNIQUE_POST_ID": None,
        "AGENT_USERNAME": None,
        "AGENT_EMAIL": None,
        **extra,
    }


def agent(
    when: str, text: str | None = "how can I help?", name: str | None = "alice", **extra: Any
) -> dict[str, Any]:
    return {
        "DIRECTION": "to_client",
        "SOCIAL_CREATE_TIME": when,
        "MESSAGE_CONTENT": text,
        "UNIQUE_POST_ID": None,
        "AGENT_USERNAME": name,
        "AGENT_EMAIL": None,
        **extra,
    }


def bot(when: str, text: str | None = "Thanks for contacting us") -> dict[str, Any]:
    return {
        "DIRECTION": "to_client",
        "SOCIAL_CREATE_TIME": when,
        "MESSAGE_CONTENT": text,
        "UNIQUE_POST_ID": None,
        "AGENT_USERNAME": None,
        "AGENT_EMAIL": None,
    }


def export(chats: dict[str, list[Any]]) -> io.BytesIO:
    return io.BytesIO(json.dumps(chats).encode())


def export_pairs(pairs: list[tuple[str, list[Any]]]) -> io.BytesIO:
    """An export whose chat keys may repeat (json.dumps of a dict cannot say that)."""
    body = ", ".join(f"{json.dumps(key)}: {json.dumps(value)}" for key, value in pairs)
    return io.BytesIO(("{" + body + "}").encode())


# -- database -----------------------------------------------------------------------------


@dataclass
class Env:
    database: Database
    settings: Settings
    service: IngestService
    tenant_id: int

    async def ingest(self, stream: io.BytesIO) -> UploadReport:
        return await self.service.ingest(self.tenant_id, stream)

    async def conversation(self, chat_id: str) -> dict[str, Any]:
        async with self.database.read() as connection:
            row = await ConversationRepository(connection).get_by_chat_id(self.tenant_id, chat_id)
        assert row is not None, f"no conversation {chat_id!r}"
        return dict(row)

    async def count_rows(self, model: Any) -> int:
        table = model.__table__
        async with self.database.read() as connection:
            return int(
                (await connection.execute(select(func.count()).select_from(table))).scalar_one()
            )

    async def messages(self, chat_id: str) -> list[dict[str, Any]]:
        conversation = await self.conversation(chat_id)
        table = Message.__table__
        async with self.database.read() as connection:
            rows = await connection.execute(
                select(table)
                .where(table.c.conversation_id == conversation["id"])
                .order_by(table.c.sent_at, table.c.id)
            )
            return [dict(row) for row in rows.mappings()]

    async def reply_minutes(self, chat_id: str) -> list[float]:
        conversation = await self.conversation(chat_id)
        table = ReplyEvent.__table__
        async with self.database.read() as connection:
            rows = await connection.execute(
                select(table.c.response_minutes)
                .where(table.c.conversation_id == conversation["id"])
                .order_by(table.c.replied_at)
            )
            return [float(value) for (value,) in rows]

    async def totals(self, selection: ConversationFilter | None = None) -> Any:
        return await AnalyticsService(self.database, self.settings).metrics(
            self.tenant_id, selection
        )

    async def count(self, selection: ConversationFilter | None = None) -> int:
        return await ConversationService(self.database, self.settings).count(
            self.tenant_id, selection
        )


# Every upload of these tests is small: each runs once with uploads read in a thread, as
# small ones are, and once with every upload parsed in a process of its own, as big ones are.
PARSE_MODES = {
    "thread": {"ingest_parse_process": False},
    "process": {"ingest_parse_process": True, "ingest_process_min_mib": 0},
}


@pytest.fixture(params=PARSE_MODES)
def parse_mode(request: pytest.FixtureRequest) -> dict[str, Any]:
    return PARSE_MODES[request.param]


@pytest.fixture
async def make_env(
    settings_factory: Callable[..., Settings], parse_mode: dict[str, Any]
) -> AsyncIterator[Callable[..., Any]]:
    databases: list[Database] = []

    async def build(**overrides: Any) -> Env:
        settings = settings_factory(**{**parse_mode, **overrides})
        database = Database(create_engine(settings))
        databases.append(database)
        await create_schema(database.engine)
        async with database.write() as connection:
            tenant_id = await TenantRepository(connection).create("acme")
        service = IngestService(database, settings, analyzer_fingerprint="test-analyzer")
        return Env(database, settings, service, tenant_id)

    yield build
    for database in databases:
        await database.dispose()


@pytest.fixture
async def env(make_env: Callable[..., Any]) -> Env:
    return await make_env()  # type: ignore[no-any-return]


def assert_balanced(report: UploadReport) -> None:
    assert report.messages_received == (
        report.messages_stored
        + report.duplicates_skipped
        + report.autoresponses_filtered
        + report.invalid_records
    )


# -- reports ------------------------------------------------------------------------------


async def test_report_counts_every_received_record_once(env: Env) -> None:
    first = customer(at(0), "my bundle is not working")
    report = await env.ingest(
        export(
            {
                "chat-1": [
                    first,
                    bot(at(0.5), "Dial *977# to check your balance"),
                    {"SOCIAL_CREATE_TIME": at(1), "MESSAGE_CONTENT": "no direction"},
                    dict(first),  # the same record again
                    customer(at(2), None),  # a sticker: no text
                    agent(at(6), "Let me check"),
                    "not an object",
                ],
                "chat-2": [
                    customer(at(10), "hi"),
                    customer(at(11), "I dialed *977# already"),
                    agent(at(12), "Please dial *977# again", name=None, AGENT_EMAIL="c@x.io"),
                    customer("yesterday-ish", "bad time"),
                ],
            }
        )
    )
    assert report.conversations_received == 2
    assert report.messages_received == 11
    assert report.messages_stored == 6
    assert report.duplicates_skipped == 1
    assert report.autoresponses_filtered == 1
    assert report.invalid_records == 3
    assert report.conversations_created == 2
    assert report.conversations_updated == 0
    assert_balanced(report)
    errors = {(error.chat_id, error.index): error.message for error in report.errors}
    assert set(errors) == {("chat-1", 2), ("chat-1", 6), ("chat-2", 3)}
    assert "DIRECTION" in errors[("chat-1", 2)]
    assert "object" in errors[("chat-1", 6)]
    assert "SOCIAL_CREATE_TIME" in errors[("chat-2", 3)]
    assert not report.errors_truncated

    one = await env.conversation("chat-1")
    assert one["message_count"] == 3
    assert one["customer_message_count"] == 2
    assert one["agent_message_count"] == 1
    assert one["bot_message_count"] == 0
    assert one["first_response_time_minutes"] == 6.0
    assert [m["content"] for m in await env.messages("chat-1")] == [
        "my bundle is not working",
        None,
        "Let me check",
    ]
    two = await env.conversation("chat-2")
    assert two["message_count"] == 3
    assert two["agent_message_count"] == 1
    assert two["first_response_time_minutes"] == 2.0
    assert await env.count_rows(Message) == 6


async def test_reported_errors_are_capped_but_all_counted(make_env: Callable[..., Any]) -> None:
    env = await make_env(max_reported_errors=2)
    report = await env.ingest(export({"c": [{"bad": i} for i in range(5)] + [customer(at(0))]}))
    assert report.invalid_records == 5
    assert len(report.errors) == 2
    assert report.errors_truncated
    assert report.messages_stored == 1


async def test_chat_whose_records_are_all_invalid_creates_no_conversation(env: Env) -> None:
    report = await env.ingest(export({"empty": [], "junk": [1, {"DIRECTION": "up"}]}))
    assert report.conversations_received == 2
    assert report.invalid_records == 2
    assert report.conversations_created == 0
    assert await env.count_rows(Conversation) == 0


async def test_reuploading_the_same_file_stores_nothing_new(env: Env) -> None:
    data = json.dumps(
        {
            "a": [customer(at(0)), bot(at(1), "*977#"), agent(at(4)), {"x": 1}],
            "b": [customer(at(60), None), agent(at(90), name="bob")],
        }
    ).encode()
    first = await env.ingest(io.BytesIO(data))
    assert first.messages_stored == 4
    before = await env.conversation("a")

    again = await env.ingest(io.BytesIO(data))
    assert again.messages_stored == 0
    assert again.duplicates_skipped == 4
    assert again.autoresponses_filtered == 1
    assert again.invalid_records == 1
    assert again.conversations_created == 0
    assert again.conversations_updated == 0
    assert_balanced(again)
    assert await env.count_rows(Message) == 4
    assert await env.count_rows(Conversation) == 2
    assert await env.count_rows(ReplyEvent) == 2
    after = await env.conversation("a")
    assert after["first_response_time_minutes"] == before["first_response_time_minutes"] == 4.0
    assert after["updated_at"] == before["updated_at"]


async def test_post_id_decides_identity_when_present(env: Env) -> None:
    report = await env.ingest(
        export(
            {
                "a": [
                    customer(at(0), "first", UNIQUE_POST_ID="p-1"),
                    customer(at(5), "edited later", UNIQUE_POST_ID="p-1"),
                    customer(at(0), "first", UNIQUE_POST_ID="p-2"),
                ]
            }
        )
    )
    assert report.messages_stored == 2
    assert report.duplicates_skipped == 1


async def test_agent_resending_the_same_text_hours_apart_keeps_both(env: Env) -> None:
    report = await env.ingest(
        export(
            {
                "a": [
                    customer(at(0)),
                    agent(at(10), "Are you still there?"),
                    agent(at(190), "Are you still there?"),
                ]
            }
        )
    )
    assert report.messages_stored == 3
    assert report.duplicates_skipped == 0
    assert (await env.conversation("a"))["agent_message_count"] == 2


async def test_second_file_recomputes_metrics_from_old_and_new_messages(env: Env) -> None:
    day0 = datetime(2025, 8, 12, 10, 0, tzinfo=UTC)
    await env.ingest(export({"x": [customer(iso(day0)), agent(at(5, day0))]}))
    before = await env.conversation("x")
    assert before["first_response_time_minutes"] == 5.0
    assert before["contact_count"] == 1

    day2 = day0 + timedelta(days=2)
    report = await env.ingest(
        export(
            {
                "x": [
                    agent(at(5, day0)),  # already stored
                    customer(at(-60, day0), "earlier message found later"),
                    customer(iso(day2), "me again"),
                    agent(at(20, day2), name="bob"),
                ]
            }
        )
    )
    assert report.messages_stored == 3
    assert report.duplicates_skipped == 1
    assert report.conversations_created == 0
    assert report.conversations_updated == 1

    after = await env.conversation("x")
    # Time order: C 09:00, C 10:00, A 10:05 | 2 days | C 10:00, A 10:20
    assert after["message_count"] == 5
    assert after["customer_message_count"] == 3
    assert after["agent_message_count"] == 2
    assert after["first_message_at"] == day0 - timedelta(hours=1)
    assert after["last_message_at"] == day2 + timedelta(minutes=20)
    assert after["first_response_time_minutes"] == 65.0
    assert after["reply_count"] == 2
    assert after["avg_response_time_minutes"] == pytest.approx((65 + 20) / 2)
    assert after["contact_count"] == 2
    assert after["duration_minutes"] == 2 * 24 * 60 + 80
    assert await env.reply_minutes("x") == [65.0, 20.0]

    totals = await env.totals()
    assert totals.reply_count == 2
    assert totals.agent_count == 2
    assert totals.repeat_contact_conversations == 1


async def test_out_of_order_records_are_measured_in_time_order(env: Env) -> None:
    await env.ingest(
        export(
            {
                "a": [
                    agent(at(30), "second answer"),
                    customer(at(25), "follow-up"),
                    agent(at(5), "first answer"),
                    customer(at(0), "question"),
                ]
            }
        )
    )
    row = await env.conversation("a")
    assert row["first_message_at"] == T0
    assert row["last_message_at"] == T0 + timedelta(minutes=30)
    assert row["first_response_time_minutes"] == 5.0
    assert row["reply_count"] == 2
    assert row["avg_response_time_minutes"] == 5.0
    assert [m["content"] for m in await env.messages("a")] == [
        "question",
        "first answer",
        "follow-up",
        "second answer",
    ]


async def test_times_with_offsets_are_stored_in_utc(env: Env) -> None:
    await env.ingest(
        export(
            {
                "a": [
                    customer("2025-08-12T13:30:00+03:00"),
                    agent("2025-08-12 10:45:00"),
                    agent(1_755_000_000, "epoch"),  # 2025-08-12T12:00:00Z
                ]
            }
        )
    )
    sent = [m["sent_at"] for m in await env.messages("a")]
    assert sent == [
        datetime(2025, 8, 12, 10, 30, tzinfo=UTC),
        datetime(2025, 8, 12, 10, 45, tzinfo=UTC),
        datetime(2025, 8, 12, 12, 0, tzinfo=UTC),
    ]
    assert all(moment.utcoffset() == timedelta(0) for moment in sent)
    assert (await env.conversation("a"))["first_response_time_minutes"] == 15.0


async def test_the_chat_key_is_authoritative_and_extra_fields_ignored(env: Env) -> None:
    await env.ingest(
        export(
            {
                "real-key": [
                    customer(at(0), FB_CHAT_ID="another-id", NEW_FIELD={"a": [1]}),
                    agent(at(3)),
                ]
            }
        )
    )
    assert (await env.conversation("real-key"))["message_count"] == 2
    assert await env.count_rows(Conversation) == 1


async def test_configured_autoresponse_patterns_drop_only_bot_messages(
    make_env: Callable[..., Any],
) -> None:
    env = await make_env(autoresponse_patterns=["main menu", "*977#"])
    report = await env.ingest(
        export(
            {
                "a": [
                    customer(at(0), "Back to MAIN MENU please"),
                    bot(at(1), "Main Menu: reply 1 for data"),
                    bot(at(2), "dial *977#"),
                    bot(at(3), "An agent will be with you"),
                    agent(at(4), "the main menu is broken today"),
                ]
            }
        )
    )
    assert report.autoresponses_filtered == 2
    assert report.messages_stored == 3
    row = await env.conversation("a")
    assert row["bot_message_count"] == 1
    assert row["customer_message_count"] == 1
    assert row["agent_message_count"] == 1


@pytest.mark.parametrize("batch_chats", [1, 500])
async def test_duplicate_chat_keys_in_one_file_merge_into_one_conversation(
    make_env: Callable[..., Any], batch_chats: int
) -> None:
    env = await make_env(ingest_batch_chats=batch_chats)
    report = await env.ingest(
        export_pairs(
            [
                ("x", [customer(at(0)), agent(at(7))]),
                ("y", [customer(at(0))]),
                ("x", [customer(at(30)), agent(at(33), name="bob"), agent(at(7))]),
            ]
        )
    )
    assert report.conversations_received == 3
    assert report.messages_stored == 5
    assert report.duplicates_skipped == 1
    assert_balanced(report)
    assert await env.count_rows(Conversation) == 2
    row = await env.conversation("x")
    assert row["message_count"] == 4
    assert row["first_response_time_minutes"] == 7.0
    assert row["reply_count"] == 2
    assert row["avg_response_time_minutes"] == 5.0
    assert await env.reply_minutes("x") == [7.0, 3.0]


class _ChatLookups:
    """Counts the statements that look an upload's chats up among stored conversations."""

    def __init__(self, database: Database) -> None:
        self.count = 0
        self._engine = database.engine.sync_engine

    def _seen(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        lowered = " ".join(statement.split()).lower()
        if lowered.startswith("select") and "conversations.chat_id" in lowered:
            self.count += 1

    def __enter__(self) -> _ChatLookups:
        event.listen(self._engine, "before_cursor_execute", self._seen)
        return self

    def __exit__(self, *_: Any) -> None:
        event.remove(self._engine, "before_cursor_execute", self._seen)


async def test_a_tenants_first_upload_looks_up_only_the_chats_it_repeats(
    make_env: Callable[..., Any],
) -> None:
    """Into a tenant with no conversations, a chat is stored already only if the same upload
    created it: only repeated chat keys are looked up. Once the tenant has conversations,
    every chat is (another tenant's conversations do not count)."""
    env = await make_env(ingest_batch_chats=1)
    async with env.database.write() as connection:
        other = await TenantRepository(connection).create("other")
    await env.service.ingest(other, export({"a": [customer(at(-60))]}))

    with _ChatLookups(env.database) as lookups:
        report = await env.ingest(
            export_pairs(
                [
                    ("a", [customer(at(0)), agent(at(4))]),
                    ("b", [customer(at(0))]),
                    ("a", [customer(at(30), "again")]),
                    ("c", [customer(at(0))]),
                ]
            )
        )
    assert lookups.count == 1
    assert report.conversations_created == 3
    assert report.messages_stored == 5
    assert (await env.conversation("a"))["message_count"] == 3

    with _ChatLookups(env.database) as lookups:
        report = await env.ingest(
            export({"a": [customer(at(60), "later")], "d": [customer(at(0))]})
        )
    assert lookups.count == 2
    assert report.conversations_created == 1
    assert report.conversations_updated == 1
    assert (await env.conversation("a"))["message_count"] == 4
    assert await env.count_rows(Conversation) == 5  # "a" of the other tenant included


async def test_a_first_upload_stores_every_chat_when_its_set_answers_yes_for_all(
    make_env: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The set of chats a first upload created may answer yes for a chat it never held
    (a shared hash bit): such a chat is looked up, not found, and stored as new. Eight
    bits for forty chats: at most eight chats go unlooked-up."""
    monkeypatch.setattr(ingest_service._ChatSet, "_BITS", 8)
    env = await make_env(ingest_batch_chats=1)
    chats = {f"chat-{n}": [customer(at(n)), agent(at(n + 2))] for n in range(40)}
    with _ChatLookups(env.database) as lookups:
        report = await env.ingest(export(chats))
    assert lookups.count >= 32
    assert report.conversations_created == 40
    assert report.messages_stored == 80
    assert await env.count_rows(Conversation) == 40
    assert (await env.conversation("chat-39"))["first_response_time_minutes"] == 2.0


@pytest.mark.parametrize("batch_chats", [1, 500])
async def test_ties_across_repeated_chat_keys_keep_file_order(
    make_env: Callable[..., Any], batch_chats: int
) -> None:
    env = await make_env(ingest_batch_chats=batch_chats)
    # File order at 09:10 is customer (first array) then agent (second array): a reply.
    await env.ingest(
        export_pairs(
            [
                ("x", [bot(at(0)), customer(at(10), "question")]),
                ("x", [agent(at(10), "answer")]),
            ]
        )
    )
    row = await env.conversation("x")
    assert row["first_response_time_minutes"] == 0.0
    assert row["reply_count"] == 1
    assert row["avg_response_time_minutes"] == 0.0

    # Re-measuring from the stored messages must see the same order.
    await env.ingest(export({"x": [customer(at(100), "later")]}))
    row = await env.conversation("x")
    assert row["reply_count"] == 1
    assert await env.reply_minutes("x") == [0.0]


async def test_ties_within_one_array_keep_file_order(env: Env) -> None:
    await env.ingest(
        export(
            {
                "agent-first": [agent(at(0)), customer(at(0))],
                "cust-first": [customer(at(0)), agent(at(0))],
            }
        )
    )
    agent_first = await env.conversation("agent-first")
    customer_first = await env.conversation("cust-first")
    assert agent_first["reply_count"] == 0
    assert agent_first["avg_response_time_minutes"] is None
    assert customer_first["reply_count"] == 1
    assert customer_first["avg_response_time_minutes"] == 0.0


# -- broken files -------------------------------------------------------------------------

VALID_CHAT = '"good": ' + json.dumps([customer(at(0)), agent(at(5))])
BROKEN_FILES = {
    "truncated": "{" + VALID_CHAT + ', "bad": [{"DIRECTION": "to_company", "SOCIAL_CRE',
    "trailing garbage": "{" + VALID_CHAT + "} and then some",
    "chat is a string": "{" + VALID_CHAT + ', "bad": "oops"}',
    "chat is an object": "{" + VALID_CHAT + ', "bad": {"DIRECTION": "to_company"}}',
    "latin-1 later": "{" + VALID_CHAT + ', "bad": [{"MESSAGE_CONTENT": "caf\xe9"}]}',
}


@pytest.mark.parametrize("batch_chats", [1, 500])
@pytest.mark.parametrize("name", list(BROKEN_FILES))
async def test_a_broken_file_stores_nothing(
    make_env: Callable[..., Any], name: str, batch_chats: int
) -> None:
    env = await make_env(ingest_batch_chats=batch_chats)
    data = BROKEN_FILES[name].encode("latin-1")
    with pytest.raises(InvalidUpload):
        await env.ingest(io.BytesIO(data))
    assert await env.count() == 0
    for model in (
        Conversation,
        Message,
        ReplyEvent,
        ConversationAgent,
        ConversationAnalysis,
        AnalysisJob,
        AnalysisTask,
    ):
        assert await env.count_rows(model) == 0, model.__name__


async def test_a_broken_file_leaves_existing_conversations_untouched(
    make_env: Callable[..., Any],
) -> None:
    env = await make_env(ingest_batch_chats=1)
    await env.ingest(export({"good": [customer(at(0)), agent(at(5))]}))
    before = await env.conversation("good")

    more = json.dumps([customer(at(-30), "earlier"), agent(at(50), name="bob")])
    broken = '{"good": ' + more + ', "new": [' + json.dumps(customer(at(0)))
    with pytest.raises(InvalidUpload):
        await env.ingest(io.BytesIO(broken.encode()))

    after = await env.conversation("good")
    assert after == before
    assert await env.count_rows(Message) == 2
    assert await env.count_rows(Conversation) == 1
    assert await env.reply_minutes("good") == [5.0]
    assert (await env.totals()).agent_count == 1

    # The same database still takes a good upload afterwards.
    report = await env.ingest(export({"good": [customer(at(-30), "earlier")]}))
    assert report.messages_stored == 1
    assert (await env.conversation("good"))["first_response_time_minutes"] == 35.0


@pytest.mark.parametrize("data", [b"", b"[]", b'"text"', b"\xff\xfe{\x00}\x00", b"not json at all"])
async def test_a_file_that_is_not_an_object_of_arrays_is_rejected(env: Env, data: bytes) -> None:
    with pytest.raises(InvalidUpload):
        await env.ingest(io.BytesIO(data))
    assert await env.count_rows(Conversation) == 0


# -- aggregates ---------------------------------------------------------------------------


async def test_totals_on_an_empty_tenant(env: Env) -> None:
    totals = await env.totals()
    assert totals.total_conversations == 0
    assert totals.total_messages == 0
    assert totals.reply_count == 0
    assert totals.agent_count == 0
    assert totals.repeat_contact_conversations == 0
    assert totals.avg_first_response_time_minutes is None
    assert totals.median_first_response_time_minutes is None
    assert totals.p90_first_response_time_minutes is None
    assert totals.avg_response_time_minutes is None
    assert totals.median_response_time_minutes is None
    assert totals.p90_response_time_minutes is None


def aggregate_export() -> io.BytesIO:
    """Five chats; hand-computed figures are in the test below."""
    return export(
        {
            # FRT 10; events [10]
            "c4": [customer(at(0)), agent(at(10), name="bob")],
            # FRT 1; events [1]; a bot message that is not a response
            "c1": [customer(at(0)), bot(at(0.5)), agent(at(1))],
            # FRT 4; events [4, 20]
            "c3": [
                customer(at(0)),
                agent(at(4)),
                customer(at(10)),
                agent(at(30), name=None, AGENT_EMAIL="carol@example.com"),
            ],
            # FRT 2; events [2]
            "c2": [customer(at(0)), agent(at(2))],
            # no agent: no FRT, no events; a 25h silence makes it a repeat contact
            "c5": [customer(at(0)), customer(at(25 * 60))],
        }
    )


async def test_totals_with_interpolated_percentiles(env: Env) -> None:
    await env.ingest(aggregate_export())
    totals = await env.totals()
    assert totals.total_conversations == 5
    assert totals.total_messages == 13
    assert totals.customer_messages == 7
    assert totals.agent_messages == 5
    assert totals.bot_messages == 1
    assert totals.repeat_contact_conversations == 1
    assert totals.agent_count == 3  # alice, bob, carol@example.com
    # First response times over the 4 conversations that have one: 1, 2, 4, 10.
    assert totals.avg_first_response_time_minutes == pytest.approx(17 / 4)
    assert totals.median_first_response_time_minutes == pytest.approx(3.0)
    assert totals.p90_first_response_time_minutes == pytest.approx(4 + 0.7 * 6)
    # Reply events, event-weighted: 1, 2, 4, 10, 20.
    assert totals.reply_count == 5
    assert totals.avg_response_time_minutes == pytest.approx(37 / 5)
    assert totals.median_response_time_minutes == pytest.approx(4.0)
    assert totals.p90_response_time_minutes == pytest.approx(10 + 0.6 * 10)


async def test_percentiles_of_a_single_and_of_two_values(env: Env) -> None:
    await env.ingest(export({"only": [customer(at(0)), agent(at(6))]}))
    totals = await env.totals()
    assert totals.median_first_response_time_minutes == pytest.approx(6.0)
    assert totals.p90_first_response_time_minutes == pytest.approx(6.0)

    await env.ingest(export({"second": [customer(at(0)), agent(at(16))]}))
    totals = await env.totals()
    assert totals.median_first_response_time_minutes == pytest.approx(11.0)
    assert totals.p90_first_response_time_minutes == pytest.approx(6 + 0.9 * 10)
    assert totals.median_response_time_minutes == pytest.approx(11.0)


async def test_totals_follow_the_chat_ids_and_agent_filters(env: Env) -> None:
    await env.ingest(aggregate_export())
    chosen = await env.totals(ConversationFilter(chat_ids=("c1", "c3", "c5")))
    assert chosen.total_conversations == 3
    # FRT 1, 4 -> median 2.5, p90 1 + 0.9 * 3
    assert chosen.median_first_response_time_minutes == pytest.approx(2.5)
    assert chosen.p90_first_response_time_minutes == pytest.approx(3.7)
    # events 1, 4, 20
    assert chosen.reply_count == 3
    assert chosen.median_response_time_minutes == pytest.approx(4.0)
    assert chosen.avg_response_time_minutes == pytest.approx(25 / 3)
    assert chosen.agent_count == 2

    by_bob = await env.totals(ConversationFilter(agent="bob"))
    assert by_bob.total_conversations == 1
    assert by_bob.median_first_response_time_minutes == pytest.approx(10.0)


# -- date filters -------------------------------------------------------------------------

FIRST_MESSAGES = {
    "late-11th": datetime(2025, 8, 11, 23, 59, 59, tzinfo=UTC),
    "start-12th": datetime(2025, 8, 12, 0, 0, tzinfo=UTC),
    "night-12th": datetime(2025, 8, 12, 22, 30, tzinfo=UTC),
    "night-13th": datetime(2025, 8, 13, 21, 30, tzinfo=UTC),
    "start-14th": datetime(2025, 8, 14, 0, 0, tzinfo=UTC),
}


def dated_export() -> io.BytesIO:
    # Each chat also has a message two days later: selection is by the first message only.
    return export(
        {
            chat_id: [customer(iso(first)), agent(iso(first + timedelta(days=2, minutes=1)))]
            for chat_id, first in FIRST_MESSAGES.items()
        }
    )


async def chats_between(env: Env, start: date | None, end: date | None) -> set[str]:
    selection = ConversationFilter(start_date=start, end_date=end)
    criteria = resolve_filter(selection, env.settings.zone)
    async with env.database.read() as connection:
        rows, has_next, _ = await ConversationRepository(connection).page(
            env.tenant_id,
            criteria,
            order=ConversationOrder.FIRST_MESSAGE_ASC,
            first=100,
            after=None,
        )
        assert not has_next
        found = {row["chat_id"] for row in rows}
    assert await env.count(selection) == len(found)
    assert (await env.totals(selection)).total_conversations == len(found)
    return found


async def test_date_filter_in_utc_is_inclusive_of_both_days(env: Env) -> None:
    await env.ingest(dated_export())
    aug = lambda day: date(2025, 8, day)  # noqa: E731
    assert await chats_between(env, aug(12), aug(12)) == {"start-12th", "night-12th"}
    assert await chats_between(env, aug(12), aug(13)) == {
        "start-12th",
        "night-12th",
        "night-13th",
    }
    assert await chats_between(env, None, aug(11)) == {"late-11th"}
    assert await chats_between(env, aug(14), None) == {"start-14th"}
    assert await chats_between(env, aug(15), aug(20)) == set()
    assert await chats_between(env, None, None) == set(FIRST_MESSAGES)


async def test_date_filter_uses_the_configured_timezone(make_env: Callable[..., Any]) -> None:
    env = await make_env(timezone="Africa/Nairobi")  # UTC+3, no daylight saving
    await env.ingest(dated_export())
    aug = lambda day: date(2025, 8, day)  # noqa: E731
    # 2025-08-12T22:30Z is 01:30 on the 13th in Nairobi; 2025-08-13T21:30Z is the 14th.
    assert await chats_between(env, aug(13), aug(13)) == {"night-12th"}
    assert await chats_between(env, aug(12), aug(12)) == {"late-11th", "start-12th"}
    assert await chats_between(env, aug(14), aug(14)) == {"night-13th", "start-14th"}
    assert await chats_between(env, None, aug(11)) == set()


async def test_stored_messages_keep_every_value_of_the_file(env: Env) -> None:
    """Text in any script, with tabs, newlines and backslashes, microseconds and times long
    before 2000 reach the database unchanged: when first stored, and when a chat is
    re-measured (on PostgreSQL its rows are then read back from the COPY form they were
    packed in)."""
    early = datetime(1970, 1, 2, 3, 4, 5, 678_901, tzinfo=UTC)
    text = "Habari 👋 — token haijafika ✓ 你好\ttab\nnewline \\ backslash"
    first = [
        customer(iso(early), text, UNIQUE_POST_ID="post-ü-1"),
        agent(
            iso(early + timedelta(minutes=2)),
            "Karibu 😊",
            name="Zoë",
            AGENT_EMAIL="zoë@example.com",
        ),
    ]
    later = [customer(at(0), "tena 🙏")]
    expected = [
        ("CUSTOMER", text, early, "post-ü-1", None, None),
        ("AGENT", "Karibu 😊", early + timedelta(minutes=2), None, "Zoë", "zoë@example.com"),
        ("CUSTOMER", "tena 🙏", T0, None, None, None),
    ]

    async def stored() -> list[tuple[Any, ...]]:
        return [
            (
                row["sender"],
                row["content"],
                row["sent_at"],
                row["external_id"],
                row["agent_username"],
                row["agent_email"],
            )
            for row in await env.messages("chat-ü")
        ]

    # The chat's key repeats within the file: its two arrays are measured together.
    report = await env.ingest(export_pairs([("chat-ü", first), ("chat-ü", later)]))
    assert report.messages_stored == 3
    assert await stored() == expected
    # Again, with one message more: the stored ones are recognised, the new one is added.
    report = await env.ingest(export_pairs([("chat-ü", [*first, *later, customer(at(5), "sawa")])]))
    assert (report.messages_stored, report.duplicates_skipped) == (1, 3)
    assert await stored() == [
        *expected,
        ("CUSTOMER", "sawa", T0 + timedelta(minutes=5), None, None, None),
    ]
    conversation = await env.conversation("chat-ü")
    assert (conversation["message_count"], conversation["first_message_at"]) == (4, early)

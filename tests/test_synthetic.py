"""The synthetic export generator: deterministic, streamable, realistic; the demo cannot drift."""

from __future__ import annotations

import io
import json
import re
import statistics
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

import powerpulse
from powerpulse.db import Database, create_engine, create_schema
from powerpulse.ingest.records import InvalidRecord, normalise_record, parse_timestamp
from powerpulse.repositories.tenants import TenantRepository
from powerpulse.services.ingest import IngestService
from powerpulse.settings import Settings
from powerpulse.synthetic import (
    AUTORESPONSE_MARKER,
    DEMO_CHATS,
    DEMO_INVALID_RECORDS,
    demo_export,
    generate_export,
    iter_export,
    main,
    write_export,
)

DEMO_PATH = Path(powerpulse.__file__).parent / "data" / "demo_export.json"
KNOWN_FIELDS = {
    "FB_CHAT_ID",
    "MESSAGE_TYPE",
    "VIA",
    "PLATFORM",
    "MESSAGE_CONTENT",
    "DIRECTION",
    "UNIQUE_POST_ID",
    "SOCIAL_CREATE_TIME",
    "AGENT_USERNAME",
    "AGENT_EMAIL",
}
NAIVE_TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")
Export = dict[str, list[dict[str, Any]]]


def _bytes(**options: Any) -> bytes:
    buffer = io.BytesIO()
    write_export(buffer, **options)
    return buffer.getvalue()


def _is_customer(record: dict[str, Any]) -> bool:
    return record.get("DIRECTION") == "to_company"


def _is_agent(record: dict[str, Any]) -> bool:
    return record.get("DIRECTION") == "to_client" and bool(
        record.get("AGENT_USERNAME") or record.get("AGENT_EMAIL")
    )


def _is_bot(record: dict[str, Any]) -> bool:
    return record.get("DIRECTION") == "to_client" and not _is_agent(record)


def _mentions_ussd(record: dict[str, Any]) -> bool:
    return AUTORESPONSE_MARKER in (record.get("MESSAGE_CONTENT") or "")


def _valid(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    kept = []
    for index, record in enumerate(records):
        try:
            normalise_record("chat", index, record, max_message_chars=100_000)
        except InvalidRecord:
            continue
        kept.append(record)
    return kept


def _times(records: list[dict[str, Any]]) -> list[datetime]:
    return [parse_timestamp(record["SOCIAL_CREATE_TIME"]) for record in _valid(records)]


def _longest_gap(records: list[dict[str, Any]]) -> timedelta:
    times = sorted(_times(records))
    return max((b - a for a, b in pairwise(times)), default=timedelta(0))


@pytest.fixture(scope="module")
def large_export() -> Export:
    return generate_export(chats=5000, seed=11)


@pytest.fixture(scope="module")
def demo() -> Export:
    return json.loads(DEMO_PATH.read_bytes())


def test_same_seed_gives_the_same_bytes_and_another_seed_does_not() -> None:
    first = _bytes(chats=150, seed=3)
    assert first == _bytes(chats=150, seed=3)
    assert first != _bytes(chats=150, seed=4)
    assert _bytes(messages=800, seed=3) == _bytes(messages=800, seed=3)


def test_streamed_file_parses_and_equals_the_in_memory_export(tmp_path: Path) -> None:
    expected = generate_export(chats=120, seed=5, days=10, agents=12)
    streamed = json.loads(_bytes(chats=120, seed=5, days=10, agents=12))
    assert streamed == expected
    assert list(streamed) == list(expected)

    path = tmp_path / "export.json"
    summary = write_export(path, chats=120, seed=5, days=10, agents=12)
    assert json.loads(path.read_bytes()) == expected
    assert summary.chats == 120
    assert summary.messages == sum(len(records) for records in expected.values())


def test_empty_export_is_still_a_json_object() -> None:
    assert json.loads(_bytes(chats=0)) == {}
    assert json.loads(_bytes(messages=0)) == {}


@pytest.mark.parametrize("target", [1, 700, 6000])
def test_messages_target_overshoots_by_less_than_the_last_chat(target: int) -> None:
    sizes = [len(records) for _, records in iter_export(messages=target, seed=2)]
    total = sum(sizes)
    assert target <= total < target + sizes[-1]
    assert write_export(io.BytesIO(), messages=target, seed=2).messages == total


def test_bad_arguments_fail_before_a_file_is_written(tmp_path: Path) -> None:
    path = tmp_path / "never.json"
    cases: list[dict[str, Any]] = [
        {},
        {"chats": 3, "messages": 30},
        {"chats": -1},
        {"chats": 3, "agents": 0},
        {"chats": 3, "days": 0},
        {"chats": 3, "demo": True},
    ]
    for options in cases:
        with pytest.raises(ValueError):
            write_export(path, **options)
    assert not path.exists()


def test_messages_per_chat_have_a_long_tail(large_export: Export) -> None:
    sizes = [len(records) for records in large_export.values()]
    assert len(sizes) == 5000
    assert 4 <= statistics.median(sizes) <= 8
    assert max(sizes) >= 100


def test_generated_records_are_all_valid_and_never_collide(large_export: Export) -> None:
    # Outside the demo nothing is meant to be rejected or silently merged as a duplicate.
    for chat_id, records in large_export.items():
        assert len(chat_id) == 24 and int(chat_id, 16) >= 0
        keys = {
            normalise_record(chat_id, index, record, max_message_chars=100_000).message_key
            for index, record in enumerate(records)
        }
        assert len(keys) == len(records)


def test_large_export_has_the_realistic_mix(large_export: Export) -> None:
    chats = list(large_export.values())
    never_answered = [c for c in chats if not any(_is_agent(r) or _is_bot(r) for r in c)]
    bot_only = [
        c
        for c in chats
        if not any(_is_agent(r) for r in c) and any(_is_bot(r) and not _mentions_ussd(r) for r in c)
    ]
    multi_day = [c for c in chats if _longest_gap(c) > timedelta(hours=24)]
    agents = {
        r.get("AGENT_USERNAME") or r.get("AGENT_EMAIL") for c in chats for r in c if _is_agent(r)
    }
    assert never_answered and bot_only
    assert 0.03 < len(multi_day) / len(chats) < 0.3
    assert 30 <= len(agents) <= 36


def test_shipped_demo_file_is_what_the_generator_writes_now() -> None:
    # Regenerate with: python -m powerpulse.synthetic --demo -o src/powerpulse/data/demo_export.json
    shipped = DEMO_PATH.read_bytes()
    assert shipped == _bytes(demo=True)
    assert len(shipped) < 150_000
    assert json.loads(shipped) == demo_export()


def test_demo_contains_every_quirk(demo: Export) -> None:
    records = [record for chat in demo.values() for record in chat]
    assert len(demo) == DEMO_CHATS and 60 <= DEMO_CHATS <= 80
    assert 250 <= len(records) <= 600

    assert any(r.get("MESSAGE_CONTENT") is None for r in records)
    assert any(r.get("MESSAGE_CONTENT") == "" for r in records)
    assert any(_is_agent(r) and not r.get("UNIQUE_POST_ID") for r in records)
    assert any(_is_customer(r) and not r.get("UNIQUE_POST_ID") for r in records)
    assert any(_is_bot(r) and _mentions_ussd(r) for r in records)
    assert any(_is_customer(r) and _mentions_ussd(r) for r in records)
    assert any(_is_agent(r) and _mentions_ussd(r) for r in records)
    assert any(
        _is_agent(r) and r.get("AGENT_EMAIL") and not r.get("AGENT_USERNAME") for r in records
    )
    assert any("FB_CHAT_ID" not in r for r in records)
    assert any(set(r) - KNOWN_FIELDS for r in records)

    times = [r.get("SOCIAL_CREATE_TIME") for r in records]
    assert any(isinstance(t, str) and NAIVE_TIME.match(t) for t in times)
    assert any(isinstance(t, str) and t.endswith("+03:00") for t in times)
    assert any(isinstance(t, str) and re.search(r"\.\d{3}Z$", t) for t in times)

    chats = list(demo.values())
    assert any(_times(c) != sorted(_times(c)) for c in chats), "an out-of-order chat"
    assert any(_longest_gap(c) > timedelta(hours=24) for c in chats), "a multi-day chat"
    assert any(not any(_is_agent(r) or _is_bot(r) for r in c) for c in chats), "unanswered"
    assert any(
        not any(_is_agent(r) for r in c) and any(_is_bot(r) and not _mentions_ussd(r) for r in c)
        for c in chats
    ), "answered only by a bot"

    def resent(chat: list[dict[str, Any]]) -> bool:
        sent: dict[tuple[str, str], datetime] = {}
        for record in _valid(chat):
            if not _is_agent(record) or not record.get("MESSAGE_CONTENT"):
                continue
            key = (record.get("AGENT_USERNAME") or record["AGENT_EMAIL"], record["MESSAGE_CONTENT"])
            at = parse_timestamp(record["SOCIAL_CREATE_TIME"])
            if key in sent and abs(at - sent[key]) >= timedelta(hours=1):
                return True
            sent[key] = at
        return False

    assert any(resent(c) for c in chats), "an agent re-sending the same text hours apart"

    customer_text = " ".join(
        (r.get("MESSAGE_CONTENT") or "").lower() for r in records if _is_customer(r)
    )
    assert "asante" in customer_text
    assert any(
        phrase in customer_text for phrase in ("still not working", "third time", "bado haifanyi")
    )

    invalid = sum(len(c) - len(_valid(c)) for c in chats)
    assert invalid == DEMO_INVALID_RECORDS


async def test_demo_ingests_through_the_real_ingest_path(tmp_path: Path, demo: Export) -> None:
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/x.db", env="test")
    engine = create_engine(settings)
    try:
        await create_schema(engine)
        database = Database(engine)
        async with database.write() as connection:
            tenant_id = await TenantRepository(connection).create("demo")
        service = IngestService(database, settings, analyzer_fingerprint="synthetic-test")
        with DEMO_PATH.open("rb") as stream:
            report = await service.ingest(tenant_id, stream)
        with DEMO_PATH.open("rb") as stream:
            again = await service.ingest(tenant_id, stream)
    finally:
        await engine.dispose()

    records = [record for chat in demo.values() for record in chat]
    greetings = sum(1 for r in _valid(records) if _is_bot(r) and _mentions_ussd(r))
    assert report.conversations_received == DEMO_CHATS
    assert report.messages_received == len(records)
    assert report.invalid_records == DEMO_INVALID_RECORDS
    assert len(report.errors) == DEMO_INVALID_RECORDS
    assert report.autoresponses_filtered == greetings > 0
    assert report.duplicates_skipped == 0
    assert report.messages_stored == len(records) - greetings - DEMO_INVALID_RECORDS > 0
    assert report.conversations_created == DEMO_CHATS

    assert again.messages_stored == 0
    assert again.duplicates_skipped == report.messages_stored


def test_cli_writes_the_same_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "cli.json"
    assert main(["--chats", "25", "--seed", "3", "-o", str(path)]) == 0
    assert json.loads(path.read_bytes()) == generate_export(chats=25, seed=3)
    assert "25 chats" in capsys.readouterr().err

    demo_path = tmp_path / "demo.json"
    assert main(["--demo", "-o", str(demo_path)]) == 0
    assert demo_path.read_bytes() == DEMO_PATH.read_bytes()

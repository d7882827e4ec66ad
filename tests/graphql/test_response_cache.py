"""Whole responses to conversation reads are reused while a tenant's data is unchanged.

A kept response costs one statement (the tenant's data version) and runs no resolver. These
tests count the statements on the app's own engine, compare kept responses with responses
computed by an app that keeps nothing on the same database, and check that every write
that changes what a page shows (an upload, an analysis stored by another process, a
tenant's timezone) is seen by the very next request.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from chat_exports import SAMPLE, agent, customer, error_codes, export
from counting import JOB

import powerpulse.services.tenants as tenants_module
from powerpulse.graphql.responses import ResponseCache, keeps
from powerpulse.services.tenants import TenantAdmin
from powerpulse.settings import Settings

PAGE = """
query Page($first: Int!, $after: String, $filter: ConversationFilter) {
  conversations(first: $first, after: $after, filter: $filter) {
    totalCount
    pageInfo { hasNextPage endCursor }
    edges { cursor node {
      chatId messageCount firstMessageAt lastMessageAt firstResponseTimeMinutes agents
      analysisStatus analysis { satisfactionScore topics } csi { score }
    } }
  }
}
"""
CONVERSATION = """
query One($chatId: String!) {
  conversation(chatId: $chatId) {
    chatId analysisStatus agents
    messages(first: 3) { totalCount edges { cursor node { sender content sentAt } } }
  }
}
"""
FIRST_PAGE = {"first": 3, "after": None, "filter": None}
LATER = export(
    {
        "india": [
            customer("2025-03-10T08:00:00Z", "is the outage over?"),
            agent("2025-03-10T08:06:00Z", "Yes, power is back", username="mike"),
        ]
    }
)


async def test_a_page_is_answered_from_one_statement_until_an_upload(
    start: Any, lexicon: Settings
) -> None:
    app = await start(lexicon)
    await app.upload(SAMPLE)

    first, computing = await app.counted_body(PAGE, FIRST_PAGE)
    again, reusing = await app.counted_body(PAGE, FIRST_PAGE)
    assert "errors" not in first
    assert again == first
    assert first["data"]["conversations"]["totalCount"] == 7
    # The kept response costs the data-version read and nothing else.
    assert reusing == 1 and "data_version" in app.statements[0]
    assert computing > 2
    assert (app.state.responses.stats.hits, app.state.responses.stats.kept) == (1, 1)

    # Other variables are another question: the next page is computed, then kept too.
    cursor = first["data"]["conversations"]["pageInfo"]["endCursor"]
    second_page = {**FIRST_PAGE, "after": cursor}
    following, _ = await app.counted_body(PAGE, second_page)
    chat_ids = [edge["node"]["chatId"] for edge in following["data"]["conversations"]["edges"]]
    first_ids = [edge["node"]["chatId"] for edge in first["data"]["conversations"]["edges"]]
    assert len(chat_ids) == 3 and not set(chat_ids) & set(first_ids)
    assert app.state.responses.stats.kept == 2

    await app.upload(LATER)
    after, recomputing = await app.counted_body(PAGE, FIRST_PAGE)
    assert after["data"]["conversations"]["totalCount"] == 8
    # india's last message is the newest: it leads the page now.
    assert after["data"]["conversations"]["edges"][0]["node"]["chatId"] == "india"
    assert recomputing > 1


async def test_a_kept_response_is_the_response_an_app_keeping_nothing_gives(
    start: Any, lexicon: Settings, settings_factory: Any
) -> None:
    # Uploaded and analysed by one process; its worker's statements are not counted.
    worker = await start(lexicon, run_worker=True)
    job = (await worker.upload(SAMPLE))["job"]
    await worker.wait_for_job(job["id"])
    app = await start(settings_factory(analyzer="lexicon"))
    plain = await start(settings_factory(analyzer="lexicon", response_cache_mib=0))

    for query, variables in [
        (PAGE, FIRST_PAGE),
        (PAGE, {"first": 10, "filter": {"agent": "jane"}}),
        (CONVERSATION, {"chatId": "bravo"}),
        (CONVERSATION, {"chatId": "no such chat"}),
    ]:
        computed, _ = await app.counted_body(query, variables)
        kept, statements = await app.counted_body(query, variables)
        assert statements == 1, query
        assert kept == computed == (await plain.counted_body(query, variables))[0]
    assert len(plain.state.responses) == 0 and plain.state.responses.stats.hits == 0
    analysed = computed_page = (await app.counted_body(PAGE, FIRST_PAGE))[0]
    assert {
        edge["node"]["analysisStatus"] for edge in analysed["data"]["conversations"]["edges"]
    } == {"DONE"}
    assert computed_page["data"]["conversations"]["edges"][0]["node"]["csi"] is not None


async def test_an_analysis_stored_by_another_process_is_seen_at_once(
    start: Any, lexicon: Settings, settings_factory: Any
) -> None:
    """An API process with no worker keeps responses; a second process analyses."""
    api = await start(settings_factory(analyzer="lexicon"))
    job = (await api.upload(SAMPLE))["job"]
    pending, _ = await api.counted_body(PAGE, FIRST_PAGE)
    kept, statements = await api.counted_body(PAGE, FIRST_PAGE)
    assert kept == pending and statements == 1
    statuses = {
        edge["node"]["analysisStatus"] for edge in pending["data"]["conversations"]["edges"]
    }
    assert statuses == {"PENDING"}

    other = await start(lexicon, run_worker=True)
    await other.wait_for_job(job["id"])
    analysed, _ = await api.counted_body(PAGE, FIRST_PAGE)
    edges = analysed["data"]["conversations"]["edges"]
    assert {edge["node"]["analysisStatus"] for edge in edges} == {"DONE"}
    assert all(edge["node"]["analysis"] is not None for edge in edges)


async def test_a_changed_timezone_is_another_question(
    start: Any, lexicon: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tenants_module, "TENANT_CACHE_SECONDS", 0.0)
    app = await start(lexicon)
    await app.upload(SAMPLE)
    # delta opens 2025-03-05 23:30 UTC, which is already 2025-03-06 in Tokyo.
    one_day = {"first": 10, "filter": {"startDate": "2025-03-05", "endDate": "2025-03-05"}}
    utc, _ = await app.counted_body(PAGE, one_day)
    assert [edge["node"]["chatId"] for edge in utc["data"]["conversations"]["edges"]] == ["delta"]
    assert (await app.counted_body(PAGE, one_day))[0] == utc  # kept

    admin = TenantAdmin(app.state.database, app.state.settings)
    await admin.configure("default", timezone="Asia/Tokyo")
    tokyo, _ = await app.counted_body(PAGE, one_day)
    assert tokyo["data"]["conversations"]["edges"] == []
    assert tokyo["data"]["conversations"]["totalCount"] == 0


async def test_responses_with_errors_are_not_kept(start: Any, lexicon: Settings) -> None:
    app = await start(lexicon)
    await app.upload(SAMPLE)
    too_many = (
        'query { conversation(chatId: "alpha") { chatId messages(first: 100000) { totalCount } } }'
    )
    for _ in range(2):
        body, _ = await app.counted_body(too_many)
        assert error_codes(body) == ["BAD_USER_INPUT"]
        bad_page, _ = await app.counted_body(PAGE, {"first": 5000})
        assert error_codes(bad_page) == ["BAD_USER_INPUT"]
    responses = app.state.responses
    assert (len(responses), responses.stats.kept, responses.stats.hits) == (0, 0, 0)


async def test_only_reads_of_conversations_alone_are_kept(start: Any, lexicon: Settings) -> None:
    app = await start(lexicon)
    job = (await app.upload(SAMPLE))["job"]
    mixed = "query { conversations(first: 2) { totalCount } metrics { totalConversations } }"
    for query, variables in [(mixed, None), (JOB, {"id": job["id"]})]:
        for _ in range(2):
            body, _ = await app.counted_body(query, variables)
            assert "errors" not in body
    responses = app.state.responses
    assert (len(responses), responses.stats.hits, responses.stats.misses) == (0, 0, 0)


async def test_the_response_cache_can_be_switched_off(start: Any, settings_factory: Any) -> None:
    app = await start(settings_factory(analyzer="lexicon", response_cache_mib=0))
    await app.upload(SAMPLE)
    first, computing = await app.counted_body(PAGE, FIRST_PAGE)
    again, recomputing = await app.counted_body(PAGE, FIRST_PAGE)
    assert again == first
    # Read again every time: the page, its agents and the version its count is kept at.
    assert computing > recomputing >= 3
    responses = app.state.responses
    assert (responses.enabled, len(responses), responses.stats.misses) == (False, 0, 0)


async def test_requests_missing_the_same_response_together_compute_it_once(
    start: Any, lexicon: Settings
) -> None:
    """After a write, every viewer of a page misses it at once: one request computes the
    response, the others wait for it and answer with the same data."""
    app = await start(lexicon)
    await app.upload(SAMPLE)
    await app.counted_body(PAGE, FIRST_PAGE)
    # After a write, one request alone: what computing the page costs then.
    await app.upload(LATER)
    alone, computing = await app.counted_body(PAGE, FIRST_PAGE)
    assert "errors" not in alone and computing > 2
    # A pooled connection for each request below, as a busy process has: a request that
    # had to open one first could find the page computed and kept by then.
    async with contextlib.AsyncExitStack() as held:
        for _ in range(6):
            await held.enter_async_context(app.state.database.read())

    await app.upload(LATER.replace(b"india", b"juliett"))  # one more new chat, a new version
    app.statements.clear()
    bodies = await asyncio.gather(*(app.client.query(PAGE, FIRST_PAGE) for _ in range(6)))
    assert all(body == bodies[0] for body in bodies)
    assert "errors" not in bodies[0]
    assert bodies[0]["data"]["conversations"]["totalCount"] == 9
    stats = app.state.responses.stats
    assert (stats.shared, stats.kept, stats.hits) == (5, 3, 0)
    # One computation, and one version read for each of the five that waited for it.
    assert len(app.statements) == computing + 5


# -- the cache itself --------------------------------------------------------------------


async def test_a_claimed_response_is_given_to_the_requests_waiting_for_it() -> None:
    cache = ResponseCache(1 << 20)
    assert await cache.claim("k") == (None, True)
    waiting = [asyncio.create_task(cache.claim("k")) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(task.done() for task in waiting)
    leaving = waiting.pop()
    leaving.cancel()  # a waiter that goes away leaves the others waiting
    await asyncio.sleep(0)
    cache.settle("k", {"edges": [1, 2]})
    given = [await task for task in waiting]
    assert given == [({"edges": [1, 2]}, False)] * 2
    given[0][0]["edges"].append(3)  # each a copy of its own
    assert given[1][0] == {"edges": [1, 2]}
    assert await cache.claim("k") == ({"edges": [1, 2]}, False)  # and kept
    assert (cache.stats.shared, cache.stats.kept, cache.stats.hits) == (3, 1, 1)


async def test_requests_waiting_for_a_failed_response_compute_their_own() -> None:
    cache = ResponseCache(1 << 20)
    assert await cache.claim("k") == (None, True)
    waiting = asyncio.create_task(cache.claim("k"))
    await asyncio.sleep(0)
    cache.settle("k", None)
    assert await waiting == (None, False)
    assert len(cache) == 0
    # The next request claims it afresh.
    assert await cache.claim("k") == (None, True)


async def test_a_response_too_large_to_keep_is_still_given_to_those_waiting() -> None:
    cache = ResponseCache(8000)
    assert await cache.claim("big") == (None, True)
    waiting = asyncio.create_task(cache.claim("big"))
    await asyncio.sleep(0)
    cache.settle("big", {"text": "x" * 1200})
    assert await waiting == ({"text": "x" * 1200}, False)
    assert (len(cache), cache.stats.too_large) == (0, 1)


def test_the_memory_bound_drops_the_least_recently_used_responses() -> None:
    cache = ResponseCache(8000)
    page = {"conversations": {"edges": [{"node": {"chatId": "x" * 400}}]}}
    for name in "abc":
        cache.put((1, 1, name), page)
    assert cache.get((1, 1, "a")) == page  # a is now the most recently used
    for name in "defghijklmnopqrstuvwxyz":
        cache.put((1, 1, name), page)
        assert cache.used_bytes <= cache.max_bytes
    assert len(cache) < 26
    assert cache.get((1, 1, "b")) is None  # gone long ago
    assert cache.get((1, 1, "z")) == page


def test_a_response_too_large_for_its_share_is_not_kept() -> None:
    cache = ResponseCache(8000)
    cache.put((1, 1, "big"), {"text": "x" * 1200})
    assert (len(cache), cache.stats.too_large, cache.used_bytes) == (0, 1, 0)


def test_a_kept_response_is_a_copy_no_request_can_change() -> None:
    cache = ResponseCache(1 << 20)
    cache.put("k", {"edges": [1, 2]})
    taken = cache.get("k")
    taken["edges"].append(3)
    assert cache.get("k") == {"edges": [1, 2]}


def test_which_operations_are_kept() -> None:
    from graphql import parse

    assert keeps(parse("query { conversations { totalCount } }"), None)
    assert keeps(parse('{ a: conversation(chatId: "x") { chatId } __typename }'), None)
    assert not keeps(parse("{ conversations { totalCount } metrics { csi } }"), None)
    assert not keeps(parse("{ ...F } fragment F on Query { conversations { totalCount } }"), None)
    assert not keeps(parse("mutation { uploadChats(file: 1) { messagesStored } }"), None)
    two = parse("query A { conversations { totalCount } } query B { jobs { totalCount } }")
    assert keeps(two, "A") and not keeps(two, "B") and not keeps(two, None)

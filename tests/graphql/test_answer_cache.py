"""Analytics answers are reused while a tenant's data is unchanged, and never after.

Every upload and every stored analysis batch raises the tenant's data version; an answer is
kept under the version it was computed at, and the conversation facts it is computed from
follow the version by reading the rows changed since. These tests count SQL statements on
the app's own engine to see an answer being reused, and check that a write, made by the
same app or by another process on the same database, is visible to the very next request.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from chat_exports import SAMPLE, agent, customer, export

from powerpulse.services.cache import AnswerCache
from powerpulse.settings import Settings

METRICS = (
    "query($f: ConversationFilter) { metrics(filter: $f) { totalConversations totalMessages "
    "analyzedConversations medianFirstResponseTimeMinutes topTopics(limit: 3) { topic } } }"
)
AGENTS = "query { agents(first: 10) { totalCount edges { node { agent conversations } } } }"
EXTRA = export(
    {
        "hotel": [
            customer("2025-03-09T10:00:00Z", "my token did not arrive"),
            agent("2025-03-09T10:04:00Z", "Resent it", username="zara"),
        ]
    }
)


async def test_an_answer_is_reused_until_an_upload_changes_the_data(
    start: Any, lexicon: Settings
) -> None:
    app = await start(lexicon)
    await app.upload(SAMPLE)

    first, computing = await app.counted(METRICS)
    again, reusing = await app.counted(METRICS)
    assert again == first
    assert first["metrics"]["totalConversations"] == 7
    # Reusing costs a data-version read per answer (metrics, top topics), nothing else.
    assert reusing == 2
    assert all("data_version" in statement for statement in app.statements)
    assert computing > 6

    # Another question (another filter) is computed, not mistaken for the first.
    narrowed, _ = await app.counted(METRICS, {"f": {"startDate": "2025-03-05"}})
    assert narrowed["metrics"]["totalConversations"] == 4  # delta, echo, foxtrot, golf

    facts = app.state.facts.stats
    read_before = (facts.loads, facts.refreshes, facts.conversations_read)
    stored = await app.upload(EXTRA)
    assert stored["messagesStored"] == 2
    after, recomputing = await app.counted(METRICS)
    assert after["metrics"]["totalConversations"] == 8
    assert after["metrics"]["totalMessages"] == first["metrics"]["totalMessages"] + 2
    assert recomputing > reusing
    # The facts were brought up to date by reading the one new conversation, not all.
    assert (facts.loads, facts.refreshes, facts.conversations_read) == (
        read_before[0],
        read_before[1] + 1,
        read_before[2] + 1,
    )

    agents, _ = await app.counted(AGENTS)
    assert "zara" in [edge["node"]["agent"] for edge in agents["agents"]["edges"]]


async def test_a_conversation_count_is_kept_and_follows_uploads(
    start: Any, lexicon: Settings
) -> None:
    page = "query { conversations(first: 2) { totalCount edges { node { chatId } } } }"
    # Whole responses are kept too (test_response_cache): here only the count is.
    app = await start(lexicon.model_copy(update={"response_cache_mib": 0}))
    await app.upload(SAMPLE)
    first, computing = await app.counted(page)
    again, reusing = await app.counted(page)
    assert again == first
    assert first["conversations"]["totalCount"] == 7
    # The page itself is read again (one statement); the count is kept (a version read).
    assert computing > reusing == 2
    assert not any("count(" in statement.lower() for statement in app.statements)
    await app.upload(EXTRA)
    after, _ = await app.counted(page)
    assert after["conversations"]["totalCount"] == 8


async def test_writes_by_another_process_are_seen_at_once(
    start: Any, lexicon: Settings, settings_factory: Any
) -> None:
    """An API process with no worker caches; a second process uploads and analyses."""
    api = await start(settings_factory(analyzer="lexicon"))
    before, _ = await api.counted(METRICS)
    assert before["metrics"]["totalConversations"] == 0
    cached, reusing = await api.counted(METRICS)
    assert (cached, reusing) == (before, 2)

    # Uploaded through the other process: the API has no worker, so nothing is analysed yet.
    other = await start(lexicon)
    job = (await other.upload(SAMPLE))["job"]
    uploaded, _ = await api.counted(METRICS)
    assert uploaded["metrics"]["totalConversations"] == 7

    # The other process's worker stores judgements: the API's answer follows.
    await other.state.worker.start()
    await other.wait_for_job(job["id"])
    analysed, _ = await api.counted(METRICS)
    assert analysed["metrics"]["analyzedConversations"] == 7
    assert analysed["metrics"]["topTopics"], "the lexicon analyzer finds topics in SAMPLE"


async def test_the_cache_can_be_switched_off(start: Any, settings_factory: Any) -> None:
    app = await start(settings_factory(analyzer="lexicon", analytics_cache_entries=0))
    await app.upload(SAMPLE)
    await app.counted(METRICS)  # reads the tenant's facts
    first, _ = await app.counted(METRICS)
    again, _ = await app.counted(METRICS)
    assert again == first
    assert len(app.state.services.analytics._cache) == 0


# -- the cache itself --------------------------------------------------------------------


class Counter:
    def __init__(self) -> None:
        self.calls = 0

    def compute(self, value: Any) -> Any:
        async def run() -> Any:
            self.calls += 1
            if isinstance(value, Exception):
                raise value
            return value

        return run


async def test_least_recently_used_answers_go_first() -> None:
    cache = AnswerCache(2)
    counter = Counter()
    assert await cache.answer((1, 0, "a"), counter.compute("A")) == "A"
    assert await cache.answer((1, 0, "b"), counter.compute("B")) == "B"
    assert await cache.answer((1, 0, "a"), counter.compute("not used")) == "A"  # a is fresh
    assert await cache.answer((1, 0, "c"), counter.compute("C")) == "C"  # b goes
    assert len(cache) == 2
    assert await cache.answer((1, 0, "a"), counter.compute("not used")) == "A"
    assert await cache.answer((1, 0, "b"), counter.compute("B again")) == "B again"
    assert counter.calls == 4
    assert (cache.stats.hits, cache.stats.misses) == (2, 4)


async def test_versions_and_tenants_do_not_share_answers() -> None:
    cache = AnswerCache(10)
    counter = Counter()
    await cache.answer((1, 0, "q"), counter.compute("tenant 1, version 0"))
    assert await cache.answer((1, 1, "q"), counter.compute("v1")) == "v1"
    assert await cache.answer((2, 0, "q"), counter.compute("tenant 2")) == "tenant 2"
    assert counter.calls == 3


async def test_failures_are_not_kept() -> None:
    cache = AnswerCache(10)
    counter = Counter()
    with pytest.raises(ValueError, match="boom"):
        await cache.answer((1, 0, "q"), counter.compute(ValueError("boom")))
    assert await cache.answer((1, 0, "q"), counter.compute("fine")) == "fine"
    assert len(cache) == 1


async def test_zero_entries_keeps_nothing() -> None:
    cache = AnswerCache(0)
    counter = Counter()
    for _ in range(3):
        assert await cache.answer((1, 0, "q"), counter.compute("x")) == "x"
    assert (counter.calls, len(cache), cache.enabled) == (3, 0, False)
    with pytest.raises(ValueError):
        AnswerCache(-1)


async def test_one_computation_serves_everyone_asking_meanwhile() -> None:
    cache = AnswerCache(10)
    release = asyncio.Event()
    calls = 0

    async def slow() -> str:
        nonlocal calls
        calls += 1
        await release.wait()
        return "answer"

    waiting = [asyncio.create_task(cache.answer((1, 0, "q"), slow)) for _ in range(5)]
    await asyncio.sleep(0.01)
    # The first asker goes away: the others still get the answer it started.
    waiting[0].cancel()
    release.set()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError)
    assert results[1:] == ["answer"] * 4
    assert calls == 1
    assert (cache.stats.misses, cache.stats.shared) == (1, 4)
    assert await cache.answer((1, 0, "q"), slow) == "answer"  # kept
    assert calls == 1


async def test_a_failed_computation_fails_its_waiters_and_is_retried() -> None:
    cache = AnswerCache(10)
    release = asyncio.Event()

    async def failing() -> str:
        await release.wait()
        raise RuntimeError("database gone")

    waiting = [asyncio.create_task(cache.answer((1, 0, "q"), failing)) for _ in range(3)]
    await asyncio.sleep(0.01)
    release.set()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(result, RuntimeError) for result in results)
    counter = Counter()
    assert await cache.answer((1, 0, "q"), counter.compute("back")) == "back"
    assert counter.calls == 1


# -- answers within the staleness window -------------------------------------------------


async def test_a_recent_answer_is_given_for_a_newer_version_within_the_tolerance() -> None:
    cache = AnswerCache(10, tolerance=60)
    counter = Counter()
    assert await cache.answer((1, 0, "q"), counter.compute("v0")) == "v0"
    # Newer data, but the answer is seconds old: given again, nothing computed.
    assert await cache.answer((1, 1, "q"), counter.compute("v1")) == "v0"
    assert (counter.calls, cache.stats.recent) == (1, 1)
    # Exact questions compute; and the newest answer then serves later versions.
    assert await cache.answer((1, 1, "q"), counter.compute("v1"), exact=True) == "v1"
    assert await cache.answer((1, 2, "q"), counter.compute("v2")) == "v1"
    # Other questions and other tenants never borrow an answer.
    assert await cache.answer((1, 2, "other"), counter.compute("o")) == "o"
    assert await cache.answer((2, 2, "q"), counter.compute("t2")) == "t2"
    assert counter.calls == 4


async def test_past_the_tolerance_a_newer_version_is_computed() -> None:
    cache = AnswerCache(10, tolerance=0.05)
    counter = Counter()
    await cache.answer((1, 0, "q"), counter.compute("v0"))
    await asyncio.sleep(0.06)
    assert await cache.answer((1, 1, "q"), counter.compute("v1")) == "v1"
    assert counter.calls == 2
    none = AnswerCache(10)  # no tolerance: every version computes
    await none.answer((1, 0, "q"), counter.compute("a"))
    assert await none.answer((1, 1, "q"), counter.compute("b")) == "b"


async def test_analytics_trail_a_write_by_at_most_the_staleness_window(
    start: Any, settings_factory: Any
) -> None:
    app = await start(settings_factory(analyzer="lexicon", analytics_staleness_seconds=1.0))
    await app.upload(SAMPLE)
    page = "query { conversations(first: 1) { totalCount } }"
    asked = time.monotonic()
    before, _ = await app.counted(METRICS)
    answered = time.monotonic()  # its computation began between `asked` and now
    count_before = (await app.data(page))["conversations"]["totalCount"]
    await app.upload(EXTRA)
    soon = await app.data(METRICS)
    if time.monotonic() - asked < 1.0:  # the first answer is younger than the window
        assert soon == before
    # A list's count is exact: it goes with rows read from the database at the same moment.
    assert (await app.data(page))["conversations"]["totalCount"] == count_before + 1
    await asyncio.sleep(max(0.0, 1.05 - (time.monotonic() - answered)))
    later = await app.data(METRICS)
    assert later["metrics"]["totalConversations"] == before["metrics"]["totalConversations"] + 1

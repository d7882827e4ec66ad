"""The conversation facts held in memory follow the database exactly, by version.

Facts brought up to date by reading only the rows changed since the version held must
equal facts read whole, after every kind of write: new chats, more messages for stored
chats, analysis, failed analysis, forced re-analysis. On PostgreSQL, the tenant's writes
commit in version order, so a reader can never skip a row stamped with a version it has
already passed.
"""

from __future__ import annotations

import asyncio
import io
import json
import threading
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select

from powerpulse.app import AppState, open_state
from powerpulse.db import Database, create_engine
from powerpulse.models import Conversation
from powerpulse.repositories.tenants import TenantRepository
from powerpulse.services.base import csi_parameters
from powerpulse.services.facts import (
    AGENT_COLUMNS,
    CONVERSATION_COLUMNS,
    REPLY_COLUMNS,
    TOPIC_COLUMNS,
    ConversationFacts,
    FactStore,
)
from powerpulse.settings import Settings
from powerpulse.synthetic import generate_export

conversations = Conversation.__table__


@pytest.fixture
async def state(settings_factory: Any) -> AsyncIterator[AppState]:
    app_state = await open_state(settings_factory(analyzer="lexicon"), migrate=True)
    try:
        yield app_state
    finally:
        await app_state.close()


async def upload(state: AppState, exported: dict[str, Any], *, force: bool = False) -> None:
    report = await state.services.ingest.ingest(
        state.default_tenant_id, io.BytesIO(json.dumps(exported).encode()), force_reprocess=force
    )
    assert not report.errors


async def version(state: AppState) -> int:
    async with state.database.read() as connection:
        return await TenantRepository(connection).data_version(state.default_tenant_id)


def fresh_store(state: AppState, *, full_reload_share: float = 0.25, **options: Any) -> FactStore:
    return FactStore(
        state.database,
        csi_parameters(state.settings),
        memory_bytes=1 << 30,
        full_reload_share=full_reload_share,
        **options,
    )


def canonical(facts: ConversationFacts) -> dict[str, Any]:
    """Every fact keyed by conversation id and names, independent of positions and codes."""
    ids = facts.ids
    agents = facts.vocabularies.agents.names
    languages = facts.vocabularies.languages.names
    found: dict[str, Any] = {}
    for name in CONVERSATION_COLUMNS:
        values = getattr(facts, name)
        if name == "first_response_agent":
            column = [agents[code] if code >= 0 else None for code in values]
        elif name == "language":
            column = [languages[code] if code >= 0 else None for code in values]
        else:
            column = [None if isinstance(v, float) and np.isnan(v) else v for v in values.tolist()]
        found[name] = dict(zip(ids.tolist(), column, strict=True))
    topics = facts.vocabularies.topics.names
    for table, vocabulary in (
        (REPLY_COLUMNS, agents),
        (AGENT_COLUMNS, agents),
        (TOPIC_COLUMNS, topics),
    ):
        owner, code, *rest = list(table)
        rows = zip(
            ids[getattr(facts, owner)].tolist(),
            [vocabulary[value] for value in getattr(facts, code)],
            *(getattr(facts, name).tolist() for name in rest),
            strict=True,
        )
        found[owner] = sorted(rows)
    return found


DERIVED = ("answered_by_first_response", "replies_by_minutes", "done")


def computed_orders(facts: ConversationFacts) -> dict[str, np.ndarray]:
    return {name: getattr(facts, name) for name in DERIVED}


def assert_orders_hold(facts: ConversationFacts, label: str) -> None:
    """Sorted orders a refresh shared with the version before equal orders computed anew
    from these facts' own columns."""
    anew = ConversationFacts(facts.version, facts.vocabularies, dict(facts._columns))
    for name, values in computed_orders(facts).items():
        assert np.array_equal(values, getattr(anew, name)), f"{label}: {name}"


def extended(exported: dict[str, list[dict[str, Any]]], every: int) -> dict[str, Any]:
    """Every `every`-th chat again with one more customer message a day later."""
    more: dict[str, Any] = {}
    for index, (chat_id, records) in enumerate(sorted(exported.items())):
        if index % every:
            continue
        last = max(
            (record for record in records if isinstance(record.get("SOCIAL_CREATE_TIME"), str)),
            key=lambda record: record["SOCIAL_CREATE_TIME"],
            default=None,
        )
        if last is None:
            continue
        more[chat_id] = [
            {
                "DIRECTION": "to_company",
                "SOCIAL_CREATE_TIME": "2025-09-15T10:00:00Z",
                "MESSAGE_CONTENT": "still waiting for my token, please help",
                "UNIQUE_POST_ID": f"{chat_id}-later",
            }
        ]
    return more


async def test_facts_brought_up_to_date_equal_facts_read_whole(state: AppState) -> None:
    tenant = state.default_tenant_id
    # Never read whole once held, however much changed (the default reads whole beyond 25%).
    store = fresh_store(state, full_reload_share=float("inf"))
    first = generate_export(chats=120, seed=11)
    await upload(state, first)
    loaded = await store.current(tenant, await version(state))
    assert loaded.size == len({chat_id for chat_id in first})

    steps = [
        ("new chats", lambda: upload(state, generate_export(chats=60, seed=12))),
        ("more messages for stored chats", lambda: upload(state, extended(first, 4))),
        ("analysis", state.worker.run_until_idle),
        ("a stored chat extended after analysis", lambda: upload(state, extended(first, 7))),
        ("forced re-analysis queued", lambda: upload(state, first, force=True)),
        ("re-analysis", state.worker.run_until_idle),
    ]
    current = loaded
    for label, step in steps:
        before = store.stats.loads
        computed_orders(current)  # computed on the version before: a refresh may share them
        await step()
        current = await store.current(tenant, await version(state))
        whole = await fresh_store(state).current(tenant, await version(state))
        assert canonical(current) == canonical(whole), label
        assert_orders_hold(current, label)
        assert store.stats.loads == before, f"{label}: read whole instead of by changes"
        assert current.version == whole.version == await version(state)
    assert store.stats.refreshes == len(steps)
    assert int(current.done.sum()) == current.size  # every conversation judged in the end


async def test_facts_read_a_few_conversations_at_a_time_equal_facts_read_at_once(
    state: AppState,
) -> None:
    """Reads go a batch of conversations at a time (one batch of rows held at once); the
    batches' edges must lose or repeat nothing, and another tenant's conversations, whose
    ids lie between this tenant's, must not leak into its ranges."""
    async with state.database.write() as connection:
        other = await TenantRepository(connection).create("neighbour")
    tenant = state.default_tenant_id
    first = generate_export(chats=40, seed=31)
    for index in range(4):  # the two tenants' ids interleave
        await upload(state, generate_export(chats=9, seed=40 + index))
        report = await state.services.ingest.ingest(
            other, io.BytesIO(json.dumps(generate_export(chats=7, seed=50 + index)).encode())
        )
        assert not report.errors
    await upload(state, first)
    await state.worker.run_until_idle()

    whole = await fresh_store(state).current(tenant, await version(state))
    batched = fresh_store(state, batch=5, full_reload_share=float("inf"))
    in_batches = await batched.current(tenant, await version(state))
    assert in_batches.size == whole.size == 76
    assert canonical(in_batches) == canonical(whole)
    assert len(whole.topic_code) and len(whole.reply_minutes) and len(whole.agent_code)

    # A refresh by changed ids, in batches too.
    await upload(state, extended(first, 3))
    await upload(state, generate_export(chats=12, seed=60))
    refreshed = await batched.current(tenant, await version(state))
    assert batched.stats.refreshes == 1
    assert canonical(refreshed) == canonical(
        await fresh_store(state).current(tenant, await version(state))
    )


async def test_an_unchanged_version_reads_nothing_and_a_refresh_only_changes(
    state: AppState,
) -> None:
    tenant = state.default_tenant_id
    store = state.facts
    await upload(state, generate_export(chats=50, seed=3))
    facts = await store.current(tenant, await version(state))
    again = await store.current(tenant, await version(state))
    assert again is facts
    read = store.stats.conversations_read
    await upload(state, generate_export(chats=5, seed=4))
    newer = await store.current(tenant, await version(state))
    assert store.stats.conversations_read == read + 5
    assert newer.size == facts.size + 5
    # The older facts are untouched: a computation still reading them is unaffected.
    assert facts.size == 50


async def test_an_analysis_batch_shares_what_it_does_not_change(state: AppState) -> None:
    """Analysis changes judgements and topics, not measurements, reply events or agents:
    the refreshed facts hold the same arrays as the version before for those, and the same
    sorted orders, rather than copies; what it does change is new."""
    tenant = state.default_tenant_id
    store = fresh_store(state, full_reload_share=float("inf"))
    await upload(state, generate_export(chats=80, seed=21))
    before = await store.current(tenant, await version(state))
    orders = computed_orders(before)
    await state.worker.run_until_idle()
    after = await store.current(tenant, await version(state))
    assert after.version > before.version and store.stats.refreshes == 1
    assert int(after.done.sum()) == after.size and not before.done.any()

    shared = ["ids", "first_us", "messages", "first_response", *REPLY_COLUMNS, *AGENT_COLUMNS]
    for name in shared:
        assert getattr(after, name) is getattr(before, name), name
    for name in ("status", "satisfaction", *TOPIC_COLUMNS):
        assert getattr(after, name) is not getattr(before, name), name
    assert after.replies_by_minutes is orders["replies_by_minutes"]
    assert after.answered_by_first_response is orders["answered_by_first_response"]
    assert after.done is not orders["done"]  # the statuses changed
    assert_orders_hold(after, "analysis")
    # Shared arrays cannot be changed through either version.
    with pytest.raises(ValueError, match="read-only"):
        after.first_response[0] = 0.0
    with pytest.raises(ValueError, match="read-only"):
        before.status[0] = 0


async def test_a_small_refresh_reads_in_place_and_a_large_one_on_the_connection_thread(
    tmp_path: Any,
) -> None:
    """On SQLite, a refresh of a few conversations (after an analysis batch, say) runs its
    reads on the event loop's thread, as quick reads do; reading every fact, or many
    changed ones, stays on the connection's thread, where it holds up no other request."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'facts.db'}"
    state = await open_state(
        Settings(database_url=url, analyzer="lexicon", analytics_preload=False), migrate=True
    )
    # The store reads through a database of one connection, whose statements are traced
    # with the thread that runs each.
    reader = Database(create_engine(Settings(database_url=url, db_pool_size=1, db_max_overflow=0)))
    traced: list[tuple[int, str]] = []
    try:
        async with reader.read() as connection:
            raw = await connection.get_raw_connection()
            sqlite_connection = raw.driver_connection._connection  # type: ignore[union-attr]
            sqlite_connection.set_trace_callback(
                lambda sql: traced.append((threading.get_ident(), sql))
            )
        store = FactStore(
            reader,
            csi_parameters(state.settings),
            memory_bytes=1 << 30,
            full_reload_share=float("inf"),
            quick_refresh=10,
        )
        loop_thread = threading.get_ident()
        tenant = state.default_tenant_id

        def reply_reads() -> set[bool]:
            """For each read of reply events since the last call: on the loop's thread?"""
            found = {thread == loop_thread for thread, sql in traced if "FROM reply_events" in sql}
            traced.clear()
            return found

        await upload(state, generate_export(chats=40, seed=71))
        await store.current(tenant, await version(state))
        assert reply_reads() == {False}  # every fact read
        await upload(state, generate_export(chats=6, seed=72))
        small = await store.current(tenant, await version(state))
        assert reply_reads() == {True} and small.size == 46
        await upload(state, generate_export(chats=14, seed=73))
        large = await store.current(tenant, await version(state))
        assert reply_reads() == {False} and large.size == 60
        assert store.stats.refreshes == 2
        # Read in place or not, the same facts as a read of everything.
        whole = await fresh_store(state).current(tenant, await version(state))
        assert canonical(large) == canonical(whole)
    finally:
        await reader.dispose()
        await state.close()


async def test_the_least_recently_asked_tenant_goes_beyond_the_memory_limit(
    state: AppState,
) -> None:
    async with state.database.write() as connection:
        second = await TenantRepository(connection).create("second")
    await upload(state, generate_export(chats=30, seed=5))
    await state.services.ingest.ingest(
        second, io.BytesIO(json.dumps(generate_export(chats=30, seed=6)).encode())
    )
    store = FactStore(state.database, csi_parameters(state.settings), memory_bytes=1)
    first = await store.current(state.default_tenant_id, 1)
    assert store.held(state.default_tenant_id) is first  # kept: the one just asked for
    await store.current(second, 1)
    assert store.held(state.default_tenant_id) is None
    assert store.held(second) is not None


@pytest.mark.postgres
async def test_writes_of_a_tenant_commit_in_version_order(
    postgres_url: str,
) -> None:
    """A writer holds its version until commit: a second one waits and takes the next."""
    settings = Settings(database_url=postgres_url, env="test", auth_disabled=True)
    state = await open_state(settings, migrate=True)
    try:
        tenant = state.default_tenant_id
        await upload(state, generate_export(chats=10, seed=8))
        start = await version(state)
        holding = asyncio.Event()
        release = asyncio.Event()

        async def first_writer() -> int:
            async with state.database.write() as connection:
                stamp = await TenantRepository(connection).begin_change(tenant)
                await connection.execute(
                    conversations.update()
                    .where(conversations.c.tenant_id == tenant)
                    .values(message_count=conversations.c.message_count, data_version=stamp)
                )
                holding.set()
                await release.wait()
                return stamp

        async def second_writer() -> int:
            await holding.wait()
            async with state.database.write() as connection:
                return await TenantRepository(connection).begin_change(tenant)

        first = asyncio.create_task(first_writer())
        second = asyncio.create_task(second_writer())
        await holding.wait()
        await asyncio.sleep(0.3)
        assert not second.done(), "the second writer must wait for the first to commit"
        # A reader meanwhile sees the committed version and none of the uncommitted rows.
        store = fresh_store(state, full_reload_share=float("inf"))
        facts = await store.current(tenant, start)
        assert facts.version == start
        release.set()
        assert (await first, await second) == (start + 1, start + 2)
        refreshed = await store.current(tenant, await version(state))
        assert refreshed.version == start + 2
        async with state.database.read() as connection:
            stamps = set(
                (
                    await connection.execute(
                        select(conversations.c.data_version).where(
                            conversations.c.tenant_id == tenant
                        )
                    )
                ).scalars()
            )
        assert stamps == {start + 1}
        assert (store.stats.refreshes, store.stats.conversations_read) == (1, 20)
    finally:
        await state.close()


async def test_a_starting_app_reads_the_facts_ahead_of_the_first_question(
    app_client_factory: Any, settings_factory: Any
) -> None:
    writer = await app_client_factory(settings_factory(), run_worker=False)
    response = await writer.upload(json.dumps(generate_export(chats=40, seed=9)).encode())
    assert response.status_code == 200, response.text

    reader = await app_client_factory(settings_factory(analytics_preload=True), run_worker=False)
    state = reader.state
    for _ in range(200):
        if state.facts.held(state.default_tenant_id) is not None:
            break
        await asyncio.sleep(0.02)
    facts = state.facts.held(state.default_tenant_id)
    assert facts is not None and facts.size == 40
    assert state.facts.stats.loads == 1
    answer = await reader.data("{ metrics { totalConversations } }")
    assert answer["metrics"]["totalConversations"] == 40
    assert state.facts.stats.loads == 1  # the question used the facts read ahead

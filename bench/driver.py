"""Measurement drivers, each run as its own process: `python -m bench.driver COMMAND ...`.

Each driver times only the work itself (not interpreter start-up, imports or migrations),
reads its own peak RSS with getrusage(RUSAGE_SELF), and writes a JSON result to --result.

    ingest   open_state + IngestService.ingest of a file (optionally then analyse it all)
    analyse  start the AnalysisWorker on a prepared database and time until its jobs finish
    floor    parse the file with the app's own normaliser first, then time only the raw
             driver insert of the same message rows (sqlite3.executemany / asyncpg COPY)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def _rss() -> int:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _settings(database_url: str) -> Any:
    from powerpulse.settings import Settings

    # Everything else (analyzer, concurrency, batch size, ...) comes from the environment.
    return Settings(database_url=database_url)


async def _scalar(state: Any, sql: str) -> Any:
    from sqlalchemy import text

    async with state.database.read() as connection:
        return (await connection.execute(text(sql))).scalar()


async def _job_totals(state: Any) -> dict[str, Any]:
    from sqlalchemy import text

    async with state.database.read() as connection:
        row = (
            await connection.execute(
                text(
                    "SELECT count(*), coalesce(sum(total), 0), coalesce(sum(analyzed), 0), "
                    "coalesce(sum(cached), 0), coalesce(sum(failed), 0), "
                    "coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0), "
                    "coalesce(sum(cost_usd), 0), "
                    "sum(CASE WHEN finished_at IS NULL THEN 1 ELSE 0 END), "
                    "max(error), max(status) FROM analysis_jobs"
                )
            )
        ).one()
    keys = (
        "jobs",
        "total",
        "analyzed",
        "cached",
        "failed",
        "input_tokens",
        "output_tokens",
        "cost_usd",
        "unfinished",
        "error",
        "status",
    )
    values = dict(zip(keys, row, strict=True))
    for key in keys[:-2]:
        values[key] = float(values[key] or 0) if key == "cost_usd" else int(values[key] or 0)
    return values


async def _analyse_all(state: Any, *, limit: float, poll: float = 0.02) -> dict[str, Any]:
    """Start the worker's lanes (as `serve` does) and time until no job is unfinished."""
    pending = int(await _scalar(state, "SELECT count(*) FROM analysis_tasks WHERE state <> 'DONE'"))
    started = time.perf_counter()
    await state.worker.start()
    finished = False
    while time.perf_counter() - started < limit:
        unfinished = int(
            await _scalar(state, "SELECT count(*) FROM analysis_jobs WHERE finished_at IS NULL")
        )
        if unfinished == 0:
            finished = True
            break
        await asyncio.sleep(poll)
    elapsed = time.perf_counter() - started
    totals = await _job_totals(state)
    return {
        "tasks": pending,
        "analyse_seconds": elapsed,
        "finished": finished,
        "analyzer": state.analyzer.fingerprint.key(),
        **{f"job_{key}": value for key, value in totals.items()},
    }


async def _vacuum(database_url: str) -> float | None:
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    if not url.drivername.startswith("postgresql"):
        return None
    import asyncpg

    started = time.perf_counter()
    connection = await asyncpg.connect(
        url.set(drivername="postgresql").render_as_string(hide_password=False)
    )
    try:
        await connection.execute("VACUUM ANALYZE")
    finally:
        await connection.close()
    return time.perf_counter() - started


async def cmd_ingest(args: argparse.Namespace) -> dict[str, Any]:
    from powerpulse.app import open_state, settle_heap

    settings = _settings(args.db)
    state = await open_state(settings, migrate=True)
    settle_heap()  # as `powerpulse serve` and `powerpulse ingest` do once set up
    result: dict[str, Any] = {}
    try:
        rss_before = _rss()
        from .common import descendants_peak_rss

        # An upload's parsing process, if it has one, lives only as long as the upload.
        stop = asyncio.Event()
        watcher = asyncio.ensure_future(descendants_peak_rss(os.getpid(), stop))
        started = time.perf_counter()
        try:
            with open(args.file, "rb") as stream:  # noqa: ASYNC230 - as the CLI reads it
                report = await state.services.ingest.ingest(state.default_tenant_id, stream)
            result["ingest_seconds"] = time.perf_counter() - started
        finally:
            stop.set()
            result["parse_peak_rss_bytes"] = await watcher
        result["rss_before_bytes"] = rss_before
        result["peak_rss_after_ingest_bytes"] = _peak_rss()
        for name in (
            "conversations_received",
            "messages_received",
            "messages_stored",
            "duplicates_skipped",
            "autoresponses_filtered",
            "invalid_records",
            "conversations_created",
            "conversations_updated",
            "analysis_queued",
        ):
            result[name] = getattr(report, name)
        if args.analyse:
            result.update(await _analyse_all(state, limit=args.timeout))
    finally:
        await state.close()
    if args.vacuum:
        result["vacuum_seconds"] = await _vacuum(args.db)
    result["peak_rss_bytes"] = _peak_rss()
    return result


async def cmd_analyse(args: argparse.Namespace) -> dict[str, Any]:
    from powerpulse.app import open_state, settle_heap

    state = await open_state(_settings(args.db), migrate=None)
    settle_heap()
    try:
        result = await _analyse_all(state, limit=args.timeout)
    finally:
        await state.close()
    result["peak_rss_bytes"] = _peak_rss()
    return result


def _parse_rows(path: str, settings: Any) -> tuple[dict[str, list[Any]], int]:
    """Chat id -> the messages ingest would store, by the app's own parser and normaliser."""
    from powerpulse.ingest.records import InvalidRecord, is_autoresponse, normalise_record
    from powerpulse.ingest.stream import iter_chats

    try:
        from powerpulse.ingest.records import clean_text
    except ImportError:  # pragma: no cover - older layouts

        def clean_text(value: str) -> str:
            return value

    chats: dict[str, list[Any]] = {}
    seen: dict[str, set[str]] = {}
    received = 0
    patterns = list(settings.autoresponse_patterns)
    with open(path, "rb") as stream:
        for raw_chat_id, records in iter_chats(stream):
            received += len(records)
            chat_id = clean_text(raw_chat_id).strip()
            if not chat_id or len(chat_id) > 255:
                continue
            kept = chats.setdefault(chat_id, [])
            keys = seen.setdefault(chat_id, set())
            for index, record in enumerate(records):
                try:
                    message = normalise_record(
                        chat_id, index, record, max_message_chars=settings.max_message_chars
                    )
                except InvalidRecord:
                    continue
                if is_autoresponse(message, patterns) or message.message_key in keys:
                    continue
                keys.add(message.message_key)
                kept.append(message)
    return {chat_id: messages for chat_id, messages in chats.items() if messages}, received


def _sqlite_text(value: datetime) -> str:
    """A timestamp as the app stores it in SQLite: naive UTC text."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _insert_sqlite(path: str, columns: tuple[str, ...], records: list[tuple[Any, ...]]) -> float:
    """Seconds to insert the rows with one executemany in one transaction."""
    import sqlite3

    connection = sqlite3.connect(path, isolation_level=None)
    try:
        # The same pragmas the app's engine sets on every connection.
        for pragma in (
            "journal_mode=WAL",
            "synchronous=NORMAL",
            "cache_size=-65536",
            "temp_store=MEMORY",
            "foreign_keys=ON",
        ):
            connection.execute(f"PRAGMA {pragma}")
        statement = (
            f"INSERT INTO messages ({', '.join(columns)}) "
            f"VALUES ({', '.join('?' for _ in columns)})"
        )
        started = time.perf_counter()
        connection.execute("BEGIN")
        connection.executemany(statement, records)
        connection.execute("COMMIT")
        return time.perf_counter() - started
    finally:
        connection.close()


async def _insert_postgres(
    dsn: str, columns: tuple[str, ...], records: list[tuple[Any, ...]]
) -> float:
    """Seconds to COPY the rows in one transaction."""
    import asyncpg

    connection = await asyncpg.connect(dsn)
    try:
        started = time.perf_counter()
        async with connection.transaction():
            await connection.copy_records_to_table(
                "messages", records=records, columns=list(columns)
            )
        return time.perf_counter() - started
    finally:
        await connection.close()


async def cmd_floor(args: argparse.Namespace) -> dict[str, Any]:
    from sqlalchemy import insert, select
    from sqlalchemy.engine import make_url

    from powerpulse.db import create_engine
    from powerpulse.migrate import upgrade
    from powerpulse.models import Conversation, Tenant, utcnow
    from powerpulse.repositories.messages import INSERT_COLUMNS

    settings = _settings(args.db)
    parse_started = time.perf_counter()
    chats, received = _parse_rows(args.file, settings)
    parse_seconds = time.perf_counter() - parse_started

    # The real schema, one tenant, one conversation row per chat: all before timing.
    engine = create_engine(settings)
    conversations = Conversation.__table__  # type: ignore[attr-defined]
    tenants = Tenant.__table__  # type: ignore[attr-defined]
    try:
        await upgrade(engine)
        now = utcnow()
        async with engine.begin() as connection:
            existing = (
                await connection.execute(select(tenants.c.id).where(tenants.c.name == "default"))
            ).scalar()
            if existing is None:
                await connection.execute(insert(tenants).values(name="default", created_at=now))
            tenant_id = (
                await connection.execute(select(tenants.c.id).where(tenants.c.name == "default"))
            ).scalar_one()
            rows = []
            for chat_id, messages in chats.items():
                times = [m.sent_at for m in messages]
                rows.append(
                    {
                        "tenant_id": tenant_id,
                        "chat_id": chat_id,
                        "message_count": len(messages),
                        "customer_message_count": 0,
                        "agent_message_count": 0,
                        "bot_message_count": 0,
                        "first_message_at": min(times),
                        "last_message_at": max(times),
                        "duration_minutes": 0.0,
                        "reply_count": 0,
                        "contact_count": 1,
                        "updated_at": now,
                    }
                )
            for start in range(0, len(rows), 5000):
                await connection.execute(insert(conversations), rows[start : start + 5000])
            ids: dict[str, int] = dict(
                (
                    await connection.execute(
                        select(conversations.c.chat_id, conversations.c.id).where(
                            conversations.c.tenant_id == tenant_id
                        )
                    )
                ).all()
            )
    finally:
        await engine.dispose()

    columns = ("tenant_id", *INSERT_COLUMNS)
    is_sqlite = settings.is_sqlite
    records: list[tuple[Any, ...]] = []
    for chat_id, messages in chats.items():
        conversation_id = ids[chat_id]
        for m in messages:
            values = {
                "conversation_id": conversation_id,
                "message_key": m.message_key,
                "external_id": m.external_id,
                "sender": m.sender.value,
                "content": m.content,
                "sent_at": _sqlite_text(m.sent_at) if is_sqlite else m.sent_at,
                "agent_username": m.agent_username,
                "agent_email": m.agent_email,
                "message_type": m.message_type,
                "via": m.via,
            }
            records.append((tenant_id, *(values[column] for column in INSERT_COLUMNS)))
    del chats

    url = make_url(settings.database_url)
    if is_sqlite:
        import sqlite3

        insert_seconds = _insert_sqlite(str(url.database), columns, records)
        driver = f"sqlite3.executemany (SQLite {sqlite3.sqlite_version})"
    else:
        dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        insert_seconds = await _insert_postgres(dsn, columns, records)
        driver = "asyncpg copy_records_to_table"
    return {
        "messages_received": received,
        "rows": len(records),
        "conversations": len(ids),
        "parse_seconds": parse_seconds,
        "insert_seconds": insert_seconds,
        "driver": driver,
        "peak_rss_bytes": _peak_rss(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.driver")
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("ingest", "analyse", "floor"):
        command = commands.add_parser(name)
        command.add_argument("--db", required=True, help="database URL")
        command.add_argument("--result", required=True, help="JSON file to write")
        command.add_argument("--timeout", type=float, default=6 * 3600)
        if name in ("ingest", "floor"):
            command.add_argument("--file", required=True)
        if name == "ingest":
            command.add_argument("--analyse", action="store_true")
            command.add_argument("--vacuum", action="store_true", help="VACUUM ANALYZE (PG)")
    args = parser.parse_args(argv)
    handler = {"ingest": cmd_ingest, "analyse": cmd_analyse, "floor": cmd_floor}[args.command]
    result = asyncio.run(handler(args))
    Path(args.result).write_text(json.dumps(result, default=str))
    print(json.dumps(result, default=str), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

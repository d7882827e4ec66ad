"""Section 2: GraphQL and CSV latency in-process (ASGI), and SQL statements per request."""

from __future__ import annotations

import statistics
from typing import Any

from . import report as r
from .common import Context, StatementCounter, inprocess_client
from .workload import QUERIES, Params, execute, prepare_params

WARMUP = 2
CSV_MAX_RUNS = 10


async def measure(
    ctx: Context, database_url: str, names: list[str], *, runs: int, deep_pages: int
) -> tuple[dict[str, dict[str, Any]], Params]:
    """Time each named request `runs` times (after a warm-up) through the in-process app."""
    results: dict[str, dict[str, Any]] = {}
    async with inprocess_client(database_url) as (client, state):
        params = await prepare_params(client, database_url, deep_pages=deep_pages)
        counter = StatementCounter(state.database.engine)
        try:
            for name in names:
                count = min(runs, CSV_MAX_RUNS) if name == "csv_export" else runs
                times: list[float] = []
                statements: list[int] = []
                sizes: list[int] = []
                error = None
                for index in range(WARMUP + count):
                    counter.count = 0
                    outcome = await execute(client, name, params)
                    if not outcome.ok:
                        error = outcome.error
                        break
                    if index >= WARMUP:
                        times.append(outcome.seconds)
                        statements.append(counter.count)
                        sizes.append(outcome.bytes)
                results[name] = {
                    "times": times,
                    "summary": r.summarise(times),
                    "statements": statements,
                    "bytes": statistics.median(sizes) if sizes else None,
                    "error": error,
                }
        finally:
            counter.close()
    return results, params


def statements_cell(values: list[int]) -> str:
    if not values:
        return r.MISSING
    low, high = min(values), max(values)
    return str(low) if low == high else f"{low}–{high}"


async def run(ctx: Context, section: r.Section) -> None:
    options = ctx.options
    if note := ctx.skipped_engines_note():
        section.note(f"_{note}_")
    section.note(
        f"Dataset: `write_export(chats={options.query_chats:,}, seed={options.seed})` ingested "
        "and analysed with the lexicon analyzer (a driver subprocess: `open_state` + "
        "`IngestService.ingest`, then the `AnalysisWorker`); PostgreSQL is `VACUUM ANALYZE`d "
        "afterwards, as autovacuum would soon do. Requests go through the ASGI app in this "
        "process (httpx `ASGITransport`, app lifespan run, no worker), so times include "
        "GraphQL parsing, validation, resolvers, SQL and JSON, but no network. "
        f"{WARMUP} warm-up requests, then {options.runs} timed runs each (the CSV export: "
        f"at most {CSV_MAX_RUNS}). SQL statements are counted with a SQLAlchemy "
        "`before_cursor_execute` listener on the app's engine."
    )
    dataset_rows: list[list[Any]] = []
    tables: list[str] = []
    try:
        for engine in ctx.engines():
            try:
                dataset = await ctx.dataset(engine)
            except Exception as exc:
                section.error(f"{engine} dataset build", exc)
                continue
            build = dataset["build"]
            size = await ctx.database_size(engine, dataset["url"])
            dataset_rows.append(
                [
                    engine,
                    r.num(build["conversations_created"]),
                    r.num(build["messages_stored"]),
                    r.secs(build["ingest_seconds"]),
                    r.rate(build["messages_stored"], build["ingest_seconds"]),
                    r.secs(build.get("analyse_seconds")),
                    r.rate(build.get("job_analyzed"), build.get("analyse_seconds")),
                    r.mib(size),
                ]
            )
            ctx.log(f"queries: timing requests on {engine}")
            try:
                results, params = await measure(
                    ctx,
                    dataset["url"],
                    list(QUERIES),
                    runs=options.runs,
                    deep_pages=options.deep_pages,
                )
            except Exception as exc:
                section.error(f"{engine} queries", exc)
                continue
            rows = []
            for name, result in results.items():
                summary = result["summary"]
                if result["error"]:
                    section.error(f"{engine} {name}", result["error"])
                rows.append(
                    [
                        QUERIES[name][0],
                        summary["n"],
                        r.ms(summary["p50"]),
                        r.ms(summary["p95"]),
                        r.ms(summary["max"]),
                        statements_cell(result["statements"]),
                        r.num(result["bytes"] / 1024 if result["bytes"] else None),
                    ]
                )
            tables.append(
                f"**{engine}** — agent `{params.agent}`; chat `{params.chat_id}` with "
                f"{params.chat_messages} messages; deep page = page {params.deep_page} of "
                f"{PAGE_NOTE}:\n\n"
                + r.table(
                    [
                        "Request",
                        "Runs",
                        "p50 (ms)",
                        "p95 (ms)",
                        "max (ms)",
                        "SQL statements",
                        "Response (KiB)",
                    ],
                    rows,
                )
            )
    finally:
        if dataset_rows:
            section.add(
                r.table(
                    [
                        "Engine",
                        "Conversations",
                        "Messages",
                        "Ingest (s)",
                        "Messages/s",
                        "Lexicon analysis (s)",
                        "Conversations/s",
                        "Database (MiB)",
                    ],
                    dataset_rows,
                )
            )
        for block in tables:
            section.add(block)


PAGE_NOTE = "20 conversations, reached by following `endCursor`"

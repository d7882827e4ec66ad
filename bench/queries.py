"""Section 2: GraphQL and CSV latency in-process (ASGI), and SQL statements per request."""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

import httpx

from . import report as r
from .common import Context, StatementCounter, inprocess_client, proc_status, reset_peak_rss, serve
from .workload import QUERIES, Params, execute, prepare_params, upload

WARMUP = 2
CSV_MAX_RUNS = 10


async def measure(
    ctx: Context,
    database_url: str,
    names: list[str],
    *,
    runs: int,
    deep_pages: int,
    keep_answers: bool = True,
) -> tuple[dict[str, dict[str, Any]], Params]:
    """Time each named request `runs` times (after a warm-up) through the in-process app.

    Without `keep_answers` the app computes every answer afresh (its analytics answer cache
    and its kept conversation responses are off), as it must after every write: the cost of
    a dashboard's first look.
    """
    results: dict[str, dict[str, Any]] = {}
    overrides = {} if keep_answers else {"analytics_cache_entries": 0, "response_cache_mib": 0}
    async with inprocess_client(database_url, **overrides) as (client, state):
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


REFRESH_CHATS = 200


async def facts_costs(ctx: Context, engine: str, database_url: str) -> dict[str, Any]:
    """What the in-memory conversation facts cost: reading them all (the first analytics
    question after a start), their memory, and bringing them up to date after an upload.

    Measured on a clone (the upload changes it), with the answer cache off.
    """
    clone = await ctx.clone_database(engine, database_url, "facts")
    try:
        export = await ctx.export(chats=REFRESH_CHATS, seed=ctx.options.seed + 2)
        # Not read ahead at start-up: the first question reads them, and is timed.
        overrides = {"analytics_cache_entries": 0, "analytics_preload": False}
        async with inprocess_client(clone, **overrides) as (client, state):
            params = Params()
            # Peak memory of this process while the first question reads every fact.
            rss_before = proc_status(os.getpid()).get("VmRSS")
            reset = reset_peak_rss(os.getpid())
            first = await execute(client, "metrics_all", params)
            peak = proc_status(os.getpid()).get("VmHWM") if reset else None
            facts = state.facts.held(state.default_tenant_id)
            steady = [(await execute(client, "metrics_all", params)).seconds for _ in range(5)]
            read_before = state.facts.stats.conversations_read
            upload_seconds, _ = await upload(client, export["path"])
            after = await execute(client, "metrics_all", params)
            read = state.facts.stats.conversations_read - read_before
            # Then those chats analysed (lexicon, batches of 200): judgements and topics
            # change, measurements, reply events and agents do not.
            await state.worker.run_until_idle()
            read_before = state.facts.stats.conversations_read
            analysed = await execute(client, "metrics_all", params)
            read_analysed = state.facts.stats.conversations_read - read_before
        return {
            "first": first.seconds if first.ok else None,
            "read_growth": peak - rss_before if peak and rss_before else None,
            "conversations": facts.size if facts is not None else None,
            "bytes": facts.nbytes if facts is not None else None,
            "steady": statistics.median(steady),
            "upload": upload_seconds,
            "after_upload": after.seconds if after.ok else None,
            "read_after_upload": read,
            "after_analysis": analysed.seconds if analysed.ok else None,
            "read_after_analysis": read_analysed,
            "error": first.error or after.error or analysed.error,
        }
    finally:
        await ctx.drop_database(engine, clone)


EXPORT_PATHS = ("/export/conversations.csv", "/export/messages.csv")


async def export_memory(ctx: Context, database_url: str) -> list[dict[str, Any]]:
    """Peak RSS growth of `powerpulse serve` while it streams each full CSV export once."""
    measured = []
    async with (
        # Nothing read ahead at start-up (analytics facts), so the growth is the export's.
        serve(
            ctx,
            database_url,
            label="csv-memory",
            worker=False,
            env_extra={"POWERPULSE_ANALYTICS_PRELOAD": "false"},
        ) as (service, base_url),
        httpx.AsyncClient(base_url=base_url, timeout=3600) as client,
    ):
        for path in EXPORT_PATHS:
            before = proc_status(service.pid)
            reset = reset_peak_rss(service.pid)
            started = time.perf_counter()
            lines = size = 0
            async with client.stream("GET", path) as response:
                response.raise_for_status()
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    lines += chunk.count(b"\n")
            after = proc_status(service.pid)
            measured.append(
                {
                    "path": path,
                    "lines": lines,  # header included; a message with line breaks adds one
                    "bytes": size,
                    "seconds": time.perf_counter() - started,
                    "rss_before": before.get("VmRSS"),
                    "peak": after.get("VmHWM") if reset else None,
                }
            )
    return measured


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
        "`before_cursor_execute` listener on the app's engine. Each request is timed twice: "
        "**computed**, with the analytics answer cache and the kept conversation responses "
        "off (every request computes its answer, as the first request after an upload or an "
        "analysis batch does), and **kept**, with both on (the default: while the data is "
        "unchanged, an analytics answer costs one data-version read, and a page of "
        "conversations or a conversation is answered from its kept response after one "
        "data-version read). The CSV export is never kept: its two columns differ by noise. "
        "Analytics are computed from the tenant's conversation facts held in memory "
        "(services/facts.py); in both columns they are current, read once when the app "
        "starts (the facts table below gives that cost and the cost after a write)."
    )
    dataset_rows: list[list[Any]] = []
    facts_rows: list[list[Any]] = []
    export_rows: list[list[Any]] = []
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
            ctx.log(f"queries: conversation facts on {engine}")
            try:
                costs = await facts_costs(ctx, engine, dataset["url"])
                if costs["error"]:
                    section.error(f"{engine} facts", costs["error"])
                facts_rows.append(
                    [
                        engine,
                        r.num(costs["conversations"]),
                        r.mib(costs["bytes"]),
                        r.ms(_milliseconds(costs["first"])),
                        r.mib(costs["read_growth"]),
                        r.ms(_milliseconds(costs["steady"])),
                        r.secs(costs["upload"]),
                        r.num(costs["read_after_upload"]),
                        r.ms(_milliseconds(costs["after_upload"])),
                        r.num(costs["read_after_analysis"]),
                        r.ms(_milliseconds(costs["after_analysis"])),
                    ]
                )
            except Exception as exc:
                section.error(f"{engine} facts", exc)
            ctx.log(f"queries: CSV export memory on {engine}")
            try:
                for found in await export_memory(ctx, dataset["url"]):
                    growth = (
                        found["peak"] - found["rss_before"]
                        if found["peak"] and found["rss_before"]
                        else None
                    )
                    export_rows.append(
                        [
                            engine,
                            f"`{found['path']}`",
                            r.num(found["lines"]),
                            r.mib(found["bytes"]),
                            r.secs(found["seconds"]),
                            r.mib(found["rss_before"]),
                            r.mib(found["peak"]),
                            r.mib(growth),
                        ]
                    )
            except Exception as exc:
                section.error(f"{engine} CSV export memory", exc)
            ctx.log(f"queries: timing requests on {engine}")
            try:
                computed, params = await measure(
                    ctx,
                    dataset["url"],
                    list(QUERIES),
                    runs=options.runs,
                    deep_pages=options.deep_pages,
                    keep_answers=False,
                )
                kept, _ = await measure(
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
            for name, result in computed.items():
                summary = result["summary"]
                again = kept[name]
                for label, measured in (("", result), (" (kept answers)", again)):
                    if measured["error"]:
                        section.error(f"{engine} {name}{label}", measured["error"])
                rows.append(
                    [
                        QUERIES[name][0],
                        summary["n"],
                        r.ms(summary["p50"]),
                        r.ms(summary["p95"]),
                        r.ms(summary["max"]),
                        statements_cell(result["statements"]),
                        r.ms(again["summary"]["p50"]),
                        r.ms(again["summary"]["p95"]),
                        statements_cell(again["statements"]),
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
                        "computed p50 (ms)",
                        "computed p95 (ms)",
                        "computed max (ms)",
                        "SQL statements",
                        "kept p50 (ms)",
                        "kept p95 (ms)",
                        "SQL statements (kept)",
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
        if facts_rows:
            section.add(
                "Conversation facts (services/facts.py), on a copy of the dataset with the "
                "answer cache off and nothing read ahead at start-up: `metrics` (all time) as "
                "the first question after the app starts (it reads every fact of the tenant; "
                "a serving process reads them in the background as it starts), the facts' "
                "memory, how far the benchmark process's peak RSS rose during that read (rows "
                "are read a batch of conversations at a time), the same "
                f"question again, then after an upload of {REFRESH_CHATS} new chats (the "
                "facts read only the conversations that upload changed), and after those "
                "chats are analysed (judgements and topics change; the measurements, reply "
                "events and agents, and the orders sorted from them, are shared with the "
                "facts before).\n\n"
                + r.table(
                    [
                        "Engine",
                        "Conversations",
                        "Facts (MiB)",
                        "First question (ms)",
                        "Peak memory growth while reading (MiB)",
                        "Again (ms)",
                        "Upload (s)",
                        "Conversations read after it",
                        "Question after the upload (ms)",
                        "Conversations read after their analysis",
                        "Question after the analysis (ms)",
                    ],
                    facts_rows,
                )
            )
        for block in tables:
            section.add(block)
        if export_rows:
            section.add(
                "CSV export memory: `powerpulse serve --no-worker` on the same dataset streams "
                "each full export once to an httpx client on loopback; the server's VmHWM is "
                "reset just before, and it reads no analytics facts ahead at start-up "
                "(`POWERPULSE_ANALYTICS_PRELOAD=false`), so the growth is what streaming the "
                "export cost.\n\n"
                + r.table(
                    [
                        "Engine",
                        "Export",
                        "Lines",
                        "Size (MiB)",
                        "Time (s)",
                        "RSS before (MiB)",
                        "Peak RSS (MiB)",
                        "Growth (MiB)",
                    ],
                    export_rows,
                )
            )


def _milliseconds(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


PAGE_NOTE = "20 conversations, reached by following `endCursor`"

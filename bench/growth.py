"""Section 5: how ingest time and query latency grow with the amount of data."""

from __future__ import annotations

from typing import Any

from . import report as r
from .common import Context
from .queries import measure

NAMES = ["metrics_all", "conversations_first"]


async def _database(ctx: Context, engine: str, size: int) -> dict[str, Any]:
    """The database the ingest section kept for this size, or a new ingest of it."""
    kept = ctx.kept.pop((engine, size), None)
    if kept is not None:
        return kept
    export = await ctx.export(messages=size)
    url = await ctx.create_database(engine, f"growth{size}")
    try:
        result = await ctx.driver("ingest", "--db", url, "--file", str(export["path"]))
    except BaseException:
        await ctx.drop_database(engine, url)
        raise
    return {"url": url, "ingest": result, "export": export}


async def run(ctx: Context, section: r.Section) -> None:
    options = ctx.options
    if note := ctx.skipped_engines_note():
        section.note(f"_{note}_")
    section.note(
        "For each size: ingest time of the in-process driver (`IngestService.ingest` on an "
        "empty database; the section-1 run when it ran), then in-process query latency over "
        f"{options.runs} runs, unanalysed data (PostgreSQL `VACUUM ANALYZE`d first), with "
        "the analytics answer cache off, so every run computes. "
        "“Growth” columns compare each size with the previous one: the data grew by the "
        "first factor, the time by the others (linear scaling = the same factor)."
    )
    rows: list[list[Any]] = []
    try:
        for engine in ctx.engines():
            previous: dict[str, float] | None = None
            for size in options.sizes:
                ctx.log(f"growth: {engine} {size:,} messages")
                try:
                    info = await _database(ctx, engine, size)
                except Exception as exc:
                    section.error(f"{engine} {size:,} ingest", exc)
                    previous = None
                    continue
                url = info["url"]
                try:
                    await ctx.vacuum(engine, url)
                    db_size = await ctx.database_size(engine, url)
                    results, _ = await measure(
                        ctx, url, NAMES, runs=options.runs, deep_pages=0, keep_answers=False
                    )
                except Exception as exc:
                    section.error(f"{engine} {size:,} queries", exc)
                    continue
                finally:
                    await ctx.drop_database(engine, url)
                ingest = info["ingest"]
                for name in NAMES:
                    if results[name]["error"]:
                        section.error(f"{engine} {size:,} {name}", results[name]["error"])
                current = {
                    "messages": float(ingest["messages_stored"] or 0),
                    "ingest": ingest["ingest_seconds"],
                    "metrics": results["metrics_all"]["summary"]["p95"] or 0.0,
                    "page": results["conversations_first"]["summary"]["p95"] or 0.0,
                }

                def factor(
                    key: str,
                    now: dict[str, float] = current,
                    before: dict[str, float] | None = previous,
                ) -> str:
                    if before is None or not before[key]:
                        return r.MISSING
                    return f"{now[key] / before[key]:.1f}×"

                rows.append(
                    [
                        r.num(size),
                        engine,
                        r.num(ingest["conversations_created"]),
                        r.num(ingest["messages_stored"]),
                        r.mib(db_size),
                        r.secs(ingest["ingest_seconds"]),
                        r.rate(ingest["messages_stored"], ingest["ingest_seconds"]),
                        r.ms(results["metrics_all"]["summary"]["p50"]),
                        r.ms(results["metrics_all"]["summary"]["p95"]),
                        r.ms(results["conversations_first"]["summary"]["p50"]),
                        r.ms(results["conversations_first"]["summary"]["p95"]),
                        " / ".join(
                            factor(key) for key in ("messages", "ingest", "metrics", "page")
                        ),
                    ]
                )
                previous = current
    finally:
        if rows:
            section.add(
                r.table(
                    [
                        "Messages",
                        "Engine",
                        "Conversations",
                        "Stored",
                        "Database (MiB)",
                        "Ingest (s)",
                        "Messages/s",
                        "metrics p50 (ms)",
                        "metrics p95 (ms)",
                        "page p50 (ms)",
                        "page p95 (ms)",
                        "Growth: data / ingest / metrics p95 / page p95",
                    ],
                    rows,
                    align="rlrrrrrrrrrl",
                )
            )

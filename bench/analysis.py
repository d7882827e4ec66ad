"""Section 4: analysis throughput against the fake OpenAI server, and the lexicon analyzer."""

from __future__ import annotations

from typing import Any

import httpx

from . import report as r
from .common import FAKE_OPENAI, Context, Service

BUCKETS = (100, 200, 500, 1000, 2000)


def default_batch_size() -> int:
    from powerpulse.settings import Settings

    return int(Settings.model_fields["analysis_batch_size"].default)


def conversations_for(latency: float, concurrency: int, batch: int, target_seconds: float) -> int:
    """About `target_seconds` of work at the ideal rate, rounded down to a bucket (≥ 100)."""
    ideal = concurrency * batch / latency * target_seconds
    fitting = [bucket for bucket in BUCKETS if bucket <= ideal]
    return fitting[-1] if fitting else BUCKETS[0]


def _openai_env(ctx: Context, base_url: str, **extra: str) -> dict[str, str]:
    return ctx.env(
        POWERPULSE_ANALYZER="openai",
        OPENAI_API_KEY="x",
        OPENAI_BASE_URL=base_url,
        # Nothing may fail over in the benchmark: a slow reply is still an answer.
        POWERPULSE_ANALYSIS_TIMEOUT_SECONDS="120",
        POWERPULSE_SHUTDOWN_GRACE_SECONDS="5",
        **extra,
    )


async def _prepared(
    ctx: Context, cache: dict[Any, str], key: Any, chats: int, env: dict[str, str]
) -> str:
    """A SQLite database with `chats` ingested (analysis queued, not run); one per key."""
    if key not in cache:
        export = await ctx.export(chats=chats)
        url = await ctx.create_database("sqlite", f"analysis{chats}")
        await ctx.driver("ingest", "--db", url, "--file", str(export["path"]), env=env)
        cache[key] = url
    return cache[key]


async def run(ctx: Context, section: r.Section) -> None:
    options = ctx.options
    default_batch = default_batch_size()
    time_box = 20 if options.quick else 60
    section.note(
        "A driver subprocess opens the app state (`open_state`) on a SQLite copy of a "
        "prepared database whose upload queued every conversation for analysis, starts the "
        "`AnalysisWorker` lanes (as `serve` does) and times until the job is finished, or "
        f"stops the clock after {time_box} s (“stopped”: conversations/s are then those "
        "analysed so far, and requests per conversation include the requests in flight). "
        "The conversation count aims at "
        f"about {r.secs(options.analysis_seconds_target)} s at the ideal rate "
        "(concurrency × batch ÷ latency). "
        "OpenAI runs use `POWERPULSE_ANALYZER=openai`, `OPENAI_API_KEY=x`, "
        "`OPENAI_BASE_URL` = the fake server (`tests/fakes/openai_server.py`, a separate "
        "process on loopback, answering after a fixed latency), "
        "`POWERPULSE_ANALYSIS_CONCURRENCY` and `POWERPULSE_ANALYSIS_BATCH_SIZE` as listed "
        f"(default batch size: {default_batch}). Requests come from the fake server's "
        "`/_fake/stats`; tokens from the job's counters (the fake counts 4 characters per "
        "token). The fake server shares the machine's cores with the worker."
    )
    rows: list[list[Any]] = []
    prepared: dict[Any, str] = {}
    fake: Service | None = None
    try:
        fake = Service(
            "fake-openai",
            [
                ctx.python,
                str(FAKE_OPENAI),
                "--port",
                "0",
                "--latency",
                str(options.analysis_latencies[0] if options.analysis_latencies else 0.3),
            ],
            env=ctx.env(),
            cwd=ctx.run_dir,
            log=ctx.log_path("fake-openai"),
            stdout_pipe=True,
        )
        base_url = await fake.read_first_line(60)
        control = base_url.removesuffix("/").removesuffix("/v1")
        async with httpx.AsyncClient(base_url=control, timeout=30) as fake_client:
            for latency in options.analysis_latencies:
                for concurrency in options.analysis_concurrency:
                    for batch in options.analysis_batches:
                        size = batch or default_batch
                        chats = conversations_for(
                            latency, concurrency, size, options.analysis_seconds_target
                        )
                        label = (
                            f"openai {latency * 1000:.0f}ms c{concurrency} b{batch or 'default'}"
                        )
                        ctx.log(f"analysis: {label}, {chats} conversations")
                        try:
                            env = _openai_env(ctx, base_url)
                            base = await _prepared(ctx, prepared, ("openai", chats), chats, env)
                            copy = await ctx.clone_database("sqlite", base, "analysis")
                            try:
                                (await fake_client.post("/_fake/reset")).raise_for_status()
                                (
                                    await fake_client.post(
                                        "/_fake/latency", json={"latency": latency}
                                    )
                                ).raise_for_status()
                                extra = {"POWERPULSE_ANALYSIS_CONCURRENCY": str(concurrency)}
                                if batch is not None:
                                    extra["POWERPULSE_ANALYSIS_BATCH_SIZE"] = str(batch)
                                result = await ctx.driver(
                                    "analyse",
                                    "--db",
                                    copy,
                                    "--timeout",
                                    str(time_box),
                                    env=_openai_env(ctx, base_url, **extra),
                                )
                                stats = (await fake_client.get("/_fake/stats")).json()
                            finally:
                                await ctx.drop_database("sqlite", copy)
                        except Exception as exc:
                            section.error(label, exc)
                            continue
                        rows.append(
                            _row(
                                "openai (fake)",
                                latency,
                                concurrency,
                                f"{size}" if batch else f"{size} (default)",
                                result,
                                stats,
                            )
                        )
                        if result["job_failed"]:
                            section.error(
                                label,
                                f"{result['job_failed']} conversations failed: "
                                f"{result.get('job_error')}",
                            )
    except Exception as exc:
        section.error("fake OpenAI server", exc)
    finally:
        if fake is not None:
            await fake.stop(grace=10)
        try:
            chats = options.lexicon_conversations
            ctx.log(f"analysis: lexicon, {chats} conversations")
            base = await _prepared(ctx, prepared, ("lexicon", chats), chats, ctx.env())
            copy = await ctx.clone_database("sqlite", base, "lexicon")
            try:
                result = await ctx.driver(
                    "analyse", "--db", copy, "--timeout", "1800", env=ctx.env()
                )
            finally:
                await ctx.drop_database("sqlite", copy)
            rows.append(_row("lexicon", None, 1, "200 per claim", result, None))
        except Exception as exc:
            section.error("lexicon analyzer", exc)
        for url in prepared.values():
            await ctx.drop_database("sqlite", url)
        if rows:
            section.add(
                r.table(
                    [
                        "Analyzer",
                        "Latency (ms)",
                        "Concurrency",
                        "Batch size",
                        "Conversations",
                        "Time (s)",
                        "Conversations/s",
                        "Requests",
                        "Requests/conversation",
                        "Input tokens/conversation",
                        "Output tokens/conversation",
                        "Peak requests in flight",
                        "Failed",
                    ],
                    rows,
                    align="lrrlrrrrrrrrr",
                )
            )


def _row(
    analyzer: str,
    latency: float | None,
    concurrency: int,
    batch: str,
    result: dict[str, Any],
    stats: dict[str, Any] | None,
) -> list[Any]:
    analysed = result["job_analyzed"]
    seconds = result["analyse_seconds"]
    requests = stats["requests"] if stats else None

    def per(value: float | None) -> str:
        return r.num(value / analysed, 2) if value is not None and analysed else r.MISSING

    return [
        analyzer,
        r.num(latency * 1000, 0) if latency is not None else r.MISSING,
        concurrency,
        batch,
        r.num(result["job_total"])
        if result["finished"]
        else f"{result['job_analyzed']:,} of {result['job_total']:,} (stopped)",
        r.secs(seconds),
        r.rate(analysed, seconds),
        r.num(requests),
        per(requests),
        per(result["job_input_tokens"]) if stats else r.MISSING,
        per(result["job_output_tokens"]) if stats else r.MISSING,
        r.num(stats["peak_concurrency"]) if stats else r.MISSING,
        r.num(result["job_failed"]),
    ]

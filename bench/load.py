"""Section 3: concurrent clients against `powerpulse serve` while an upload is ingested."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
import time
from typing import Any

import httpx

from . import report as r
from .common import Context, reset_tree_peak_rss, serve, tree_peak_rss
from .workload import JOB, QUERIES, Params, execute, graphql, prepare_params, upload


async def _drive(
    ctx: Context,
    base_url: str,
    params: Params,
    upload_path: Any,
    *,
    seconds: float,
    clients: int,
    export_every: float,
    analysis_cap: float,
) -> dict[str, Any]:
    names = [name for name, (_, weight) in QUERIES.items() if weight]
    weights = [QUERIES[name][1] for name in names]
    records: list[tuple[str, float, float, bool, str | None]] = []
    stop = asyncio.Event()
    upload_info: dict[str, Any] = {}
    started = time.perf_counter()

    async def client_loop(index: int) -> None:
        rng = random.Random(ctx.options.seed * 1000 + index)
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(base_url=base_url, timeout=120, limits=limits) as client:
            while not stop.is_set():
                name = rng.choices(names, weights)[0]
                at = time.perf_counter() - started
                outcome = await execute(client, name, params)
                records.append((name, at, outcome.seconds, outcome.ok, outcome.error))

    async def uploader() -> None:
        async with httpx.AsyncClient(base_url=base_url, timeout=None) as client:
            try:
                seconds_taken, payload = await upload(client, upload_path)
            except Exception as exc:
                upload_info["error"] = f"{type(exc).__name__}: {exc}"[:300]
                return
            upload_info["upload_seconds"] = seconds_taken
            upload_info["stored"] = payload["messagesStored"]
            upload_info["queued"] = payload["analysisQueued"]
            job_id = payload["job"]["id"]
            while time.perf_counter() - started < seconds + analysis_cap:
                try:
                    job = (await graphql(client, JOB, {"id": job_id}))["job"]
                except Exception as exc:
                    upload_info["job_error"] = f"{type(exc).__name__}: {exc}"[:300]
                    await asyncio.sleep(1)
                    continue
                upload_info["job"] = job
                if job["finishedAt"] is not None:
                    upload_info["analysis_done_at"] = time.perf_counter() - started
                    return
                await asyncio.sleep(0.5)

    async def one_export(client: httpx.AsyncClient) -> None:
        at = time.perf_counter() - started
        outcome = await execute(client, "csv_export", params)
        records.append(("csv_export", at, outcome.seconds, outcome.ok, outcome.error))

    async def exporter() -> None:
        """A full export every `export_every` seconds, whether the last one finished or not."""
        exports: list[asyncio.Task[None]] = []
        async with httpx.AsyncClient(base_url=base_url, timeout=300) as client:
            while not stop.is_set():
                exports.append(asyncio.create_task(one_export(client)))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), export_every)
            await asyncio.gather(*exports)

    upload_task = asyncio.create_task(uploader())
    tasks = [asyncio.create_task(client_loop(index)) for index in range(clients)]
    if export_every > 0:
        tasks.append(asyncio.create_task(exporter()))
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.wait(tasks, timeout=180)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    finished = time.perf_counter() - started
    try:
        await asyncio.wait_for(upload_task, timeout=max(0.0, seconds + analysis_cap - finished) + 5)
    except TimeoutError:
        upload_info.setdefault("note", "analysis still running when the benchmark stopped waiting")
    return {"records": records, "elapsed": finished, "upload": upload_info}


TIMELINE_STEP = 10.0


def _timeline(
    engine: str,
    records: list[tuple[str, float, float, bool, str | None]],
    upload: dict[str, Any],
    *,
    seconds: float,
) -> list[list[Any]]:
    """p50/p95 of the requests started in each window, and what the upload was doing."""
    stored_at = upload.get("upload_seconds")
    analysed_at = upload.get("analysis_done_at")
    rows = []
    start = 0.0
    while start < seconds:
        end = start + TIMELINE_STEP
        window = [rec for rec in records if start <= rec[1] < end]
        stats = r.summarise([rec[2] for rec in window])
        if stored_at is not None and start < stored_at:
            phase = "storing"
        elif analysed_at is None or start < analysed_at:
            phase = "analysing"
        else:
            phase = "done"
        rows.append(
            [
                engine,
                r.num(start),
                r.num(len(window)),
                r.ms(stats["p50"]),
                r.ms(stats["p95"]),
                r.num(sum(1 for rec in window if not rec[3])),
                phase,
            ]
        )
        start = end
    return rows


async def run(ctx: Context, section: r.Section) -> None:
    options = ctx.options
    if note := ctx.skipped_engines_note():
        section.note(f"_{note}_")
    mix = ", ".join(
        f"{QUERIES[name][0]} ×{weight}" for name, (_, weight) in QUERIES.items() if weight
    )
    exports = (
        f" One more client starts a full CSV export of every conversation every "
        f"{r.secs(options.load_export_every)} s, whether the previous one has finished or "
        f"not; its times are in the per-request table and in the totals."
        if options.load_export_every > 0
        else ""
    )
    section.note(
        f"{options.load_clients} concurrent clients (one keep-alive connection each, in the "
        f"benchmark process) send a weighted random mix of the section-2 requests for "
        f"{r.secs(options.load_seconds)} s to `powerpulse serve --processes "
        f"{options.load_processes}` on loopback (a copy of the "
        f"section-2 dataset; in-process lexicon worker; `POWERPULSE_AUTH_DISABLED=1`; "
        f"`POWERPULSE_RATE_LIMIT_PER_MINUTE=0` and `POWERPULSE_UPLOAD_RATE_LIMIT_PER_HOUR=0` "
        f"turn the rate limits off). At the start, another client uploads a "
        f"{options.load_upload_messages:,}-message export (new chats), which the server "
        f"stores and then analyses while the queries run. Requests per second count every "
        f"request completed, over the time until the last client finished. An error is any "
        f"non-200 answer, GraphQL error or failed connection. Mix weights: {mix}.{exports}"
    )
    summary_rows: list[list[Any]] = []
    upload_rows: list[list[Any]] = []
    per_query_rows: list[list[Any]] = []
    timeline_rows: list[list[Any]] = []
    try:
        for engine in ctx.engines():
            try:
                dataset = await ctx.dataset(engine)
                upload_export = await ctx.export(
                    messages=options.load_upload_messages, seed=options.seed + 1
                )
                clone = await ctx.clone_database(engine, dataset["url"], "load")
            except Exception as exc:
                section.error(f"{engine} preparation", exc)
                continue
            try:
                async with serve(
                    ctx,
                    clone,
                    label=f"load-{engine}",
                    worker=True,
                    processes=options.load_processes,
                ) as (
                    service,
                    base_url,
                ):
                    async with httpx.AsyncClient(base_url=base_url, timeout=300) as client:
                        params = await prepare_params(client, clone, deep_pages=options.deep_pages)
                    reset_tree_peak_rss(service.pid)
                    ctx.log(
                        f"load: {options.load_clients} clients for {options.load_seconds:.0f}s "
                        f"on {engine}"
                    )
                    outcome = await _drive(
                        ctx,
                        base_url,
                        params,
                        upload_export["path"],
                        seconds=options.load_seconds,
                        clients=options.load_clients,
                        export_every=options.load_export_every,
                        analysis_cap=180 if options.quick else 900,
                    )
                    peak = tree_peak_rss(service.pid)
                    alive = service.alive()
            except Exception as exc:
                section.error(f"{engine} load run", exc)
                continue
            finally:
                await ctx.drop_database(engine, clone)
            records = outcome["records"]
            times = [rec[2] for rec in records]
            errors = [rec for rec in records if not rec[3]]
            overall = r.summarise(times)
            summary_rows.append(
                [
                    engine,
                    options.load_clients,
                    r.secs(outcome["elapsed"]),
                    r.num(len(records)),
                    r.rate(len(records), outcome["elapsed"]),
                    r.ms(overall["p50"]),
                    r.ms(overall["p95"]),
                    r.ms(overall["p99"]),
                    r.num(len(errors)),
                    r.mib(peak),
                ]
            )
            if not alive:
                section.error(engine, "the server was not running at the end of the load")
            for message, count in collections.Counter(rec[4] for rec in errors).most_common(5):
                section.error(f"{engine} request error ×{count}", str(message))
            info = outcome["upload"]
            job = info.get("job") or {}
            upload_rows.append(
                [
                    engine,
                    r.num(upload_export["messages"]),
                    r.secs(info.get("upload_seconds")),
                    r.num(info.get("stored")),
                    r.num(info.get("queued")),
                    r.num(job.get("processed")),
                    job.get("status", r.MISSING),
                    r.secs(info.get("analysis_done_at")),
                ]
            )
            for key in ("error", "job_error", "note"):
                if key in info:
                    section.error(f"{engine} upload", info[key])
            by_name: dict[str, list[tuple[str, float, float, bool, str | None]]] = (
                collections.defaultdict(list)
            )
            for rec in records:
                by_name[rec[0]].append(rec)
            timeline_rows.extend(_timeline(engine, records, info, seconds=options.load_seconds))
            for name in QUERIES:
                items = by_name.get(name, [])
                stats = r.summarise([rec[2] for rec in items])
                per_query_rows.append(
                    [
                        engine,
                        QUERIES[name][0],
                        r.num(len(items)),
                        r.ms(stats["p50"]),
                        r.ms(stats["p95"]),
                        r.ms(stats["max"]),
                        r.num(sum(1 for rec in items if not rec[3])),
                    ]
                )
    finally:
        if summary_rows:
            section.add(
                r.table(
                    [
                        "Engine",
                        "Clients",
                        "Time (s)",
                        "Requests",
                        "Requests/s",
                        "p50 (ms)",
                        "p95 (ms)",
                        "p99 (ms)",
                        "Errors",
                        "Server peak RSS, all processes (MiB)",
                    ],
                    summary_rows,
                )
            )
        if upload_rows:
            section.add(
                "The upload during the load (times in seconds from the start of the load):\n\n"
                + r.table(
                    [
                        "Engine",
                        "Upload messages",
                        "Upload (s)",
                        "Stored",
                        "Queued for analysis",
                        "Analysed",
                        "Job status",
                        "Analysis finished at (s)",
                    ],
                    upload_rows,
                )
            )
        if timeline_rows:
            section.add(
                f"Over time (requests started in each {TIMELINE_STEP:g} s window; the upload "
                "is stored from 0 s until its answer, then analysed until the job finishes):"
                "\n\n"
                + r.table(
                    ["Engine", "From (s)", "Requests", "p50 (ms)", "p95 (ms)", "Errors", "Upload"],
                    timeline_rows,
                    align="lrrrrrl",
                )
            )
        if per_query_rows:
            section.add(
                "Per request type:\n\n"
                + r.table(
                    ["Engine", "Request", "Count", "p50 (ms)", "p95 (ms)", "max (ms)", "Errors"],
                    per_query_rows,
                    align="llrrrrr",
                )
            )

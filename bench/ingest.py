"""Section 1: ingest throughput by the CLI, in-process, over HTTP, against the raw insert floor."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from . import report as r
from .common import (
    ENGINES,
    BenchError,
    Context,
    descendants_peak_rss,
    proc_status,
    reset_peak_rss,
    serve,
    tail,
)
from .workload import upload

_STORED = re.compile(r"messages stored\s*\S\s*([\d,]+)")


async def _cli_startup(ctx: Context, engine: str) -> float:
    """Wall time of `powerpulse ingest` of a one-chat file on an upgraded database."""
    tiny = await ctx.export(chats=1)
    times = []
    for _ in range(2 if ctx.options.quick else 3):
        async with ctx.fresh_database(engine, "startup") as url:
            env = ctx.env(url)
            (await ctx.run("db-upgrade", [*ctx.powerpulse(), "db", "upgrade"], env=env)).check(
                "powerpulse db upgrade"
            )
            measured = await ctx.run(
                "cli-ingest-tiny",
                [*ctx.powerpulse(), "ingest", str(tiny["path"]), "--no-wait", "--quiet"],
                env=env,
            )
            measured.check("powerpulse ingest (one chat)")
            times.append(measured.wall_seconds)
    return min(times)


async def _driver(ctx: Context, engine: str, export: dict[str, Any], keep: bool) -> dict[str, Any]:
    url = await ctx.create_database(engine, f"ingest{export['messages']}")
    try:
        result = await ctx.driver("ingest", "--db", url, "--file", str(export["path"]))
    except BaseException:
        await ctx.drop_database(engine, url)
        raise
    if keep:
        ctx.kept[(engine, export["target"])] = {"url": url, "ingest": result, "export": export}
    else:
        await ctx.drop_database(engine, url)
    return result


async def _cli(ctx: Context, engine: str, export: dict[str, Any]) -> dict[str, Any]:
    async with ctx.fresh_database(engine, "cli") as url:
        env = ctx.env(url)
        (await ctx.run("db-upgrade", [*ctx.powerpulse(), "db", "upgrade"], env=env)).check(
            "powerpulse db upgrade"
        )
        measured = await ctx.run(
            "cli-ingest",
            [*ctx.powerpulse(), "ingest", str(export["path"]), "--no-wait", "--quiet"],
            env=env,
        )
        measured.check("powerpulse ingest")
        # The same file again: every message is already stored, so every chat is read back
        # and re-measured against what is stored, and nothing new is written.
        again = await ctx.run(
            "cli-reupload",
            [*ctx.powerpulse(), "ingest", str(export["path"]), "--no-wait", "--quiet"],
            env=env,
        )
        again.check("powerpulse ingest (the same file again)")
        return {
            "wall_seconds": measured.wall_seconds,
            "max_rss_bytes": measured.max_rss_bytes,
            "messages_stored": _stored(measured.log.read_text(errors="replace")),
            "again_wall_seconds": again.wall_seconds,
            "again_max_rss_bytes": again.max_rss_bytes,
            "again_messages_stored": _stored(again.log.read_text(errors="replace")),
        }


def _stored(log: str) -> int | None:
    match = _STORED.search(log)
    return int(match.group(1).replace(",", "")) if match else None


async def _http(ctx: Context, engine: str, export: dict[str, Any]) -> dict[str, Any]:
    async with (
        ctx.fresh_database(engine, "http") as url,
        serve(ctx, url, label="ingest", worker=False) as (service, base_url),
    ):
        before = proc_status(service.pid)
        reset = reset_peak_rss(service.pid)
        stop = asyncio.Event()
        watcher = asyncio.ensure_future(descendants_peak_rss(service.pid, stop))
        try:
            async with httpx.AsyncClient(base_url=base_url, timeout=None) as client:
                elapsed, payload = await upload(client, export["path"])
        finally:
            stop.set()
            parse_peak = await watcher
        after = proc_status(service.pid)
        if not service.alive():
            raise BenchError(f"the server died during the upload: {tail(service.log)}")
        return {
            "seconds": elapsed,
            "messages_stored": payload["messagesStored"],
            "rss_before_bytes": before.get("VmRSS"),
            "peak_rss_bytes": after.get("VmHWM"),
            "parse_peak_rss_bytes": parse_peak,
            "peak_reset": reset,
        }


async def _floor(ctx: Context, engine: str, export: dict[str, Any]) -> dict[str, Any]:
    async with ctx.fresh_database(engine, "floor") as url:
        return await ctx.driver("floor", "--db", url, "--file", str(export["path"]))


async def run(ctx: Context, section: r.Section) -> None:
    options = ctx.options
    engines = ctx.engines()
    if note := ctx.skipped_engines_note():
        section.note(f"_{note}_")
    keep = "growth" in options.sections
    section.note(
        "Each method starts from a fresh, empty database (a SQLite file, or a PostgreSQL "
        "database created and dropped by the benchmark) holding the real schema. "
        "**Driver**: a subprocess calls `open_state` + `IngestService.ingest` and times only "
        "the ingest (peak RSS from `getrusage`). **CLI**: `powerpulse ingest FILE --no-wait "
        "--quiet` as a subprocess, wall time minus the wall time of ingesting a one-chat file "
        "(interpreter start-up, imports, report); peak RSS from `wait4`. **CLI again**: the "
        "same command with the same file right after it, into the same database: every "
        "message is already stored, so each chat is read back and re-measured, no message is "
        "written, and the chats not yet analysed are queued again. **HTTP**: the "
        "`uploadChats` multipart mutation, streamed by httpx to `powerpulse serve "
        "--no-worker` on loopback; RSS is the server's (`/proc/PID/status`, VmHWM reset "
        "before the upload). **Parsing process**: an upload of "
        "`POWERPULSE_INGEST_PROCESS_MIN_MIB` (8) MiB or more is parsed by a child process "
        "of its own; its peak RSS is its own `getrusage` (driver) or its VmHWM sampled every "
        "0.1 s (HTTP). The CLI's peak from `wait4` is the larger of the command's and its "
        "parsing process's. **Floor**: the same message rows, parsed and normalised by the "
        "app's own code before timing, inserted into the empty `messages` table by the raw "
        "driver in one transaction (`sqlite3.executemany` / asyncpg `copy_records_to_table`). "
        "“× floor” is a method's time divided by the floor's."
    )

    startup: dict[str, float | None] = {}
    for engine in engines:
        try:
            ctx.log(f"ingest: CLI start-up baseline on {engine}")
            startup[engine] = await _cli_startup(ctx, engine)
        except Exception as exc:
            startup[engine] = None
            section.error(f"{engine} CLI start-up baseline", exc)

    export_rows: list[list[Any]] = []
    rows: list[list[Any]] = []
    round_rows: list[list[Any]] = []
    try:
        for size in options.sizes:
            try:
                export = await ctx.export(messages=size)
            except Exception as exc:
                section.error(f"export of {size:,} messages", exc)
                continue
            export["target"] = size
            export_rows.append(
                [
                    r.num(size),
                    r.num(export["chats"]),
                    r.num(export["messages"]),
                    r.mib(export["bytes"]),
                    "cached" if export["cached"] else r.secs(export["generate_seconds"]),
                ]
            )
            # Each round runs every method on every engine; the engine that goes first
            # alternates, so a slow spell of the machine is shared out between them.
            by_engine: dict[str, list[dict[str, Any]]] = {engine: [] for engine in engines}
            for number in range(options.rounds):
                order = engines if number % 2 == 0 else engines[::-1]
                for engine in order:
                    label = f"{engine} {size:,}" + (
                        f" (round {number + 1} of {options.rounds})" if options.rounds > 1 else ""
                    )
                    by_engine[engine].append(
                        await _round(ctx, section, engine, export, label, keep and number == 0)
                    )
            for engine in engines:
                rows += _rows(size, engine, _median_round(by_engine[engine]), startup.get(engine))
            round_rows += _round_rows(size, by_engine, startup)
    finally:
        if export_rows:
            section.add(
                "**Exports** (synthetic, `powerpulse.synthetic.write_export(messages=N, "
                f"seed={options.seed})`, cached in `{options.cache_dir}`):\n\n"
                + r.table(
                    ["Target messages", "Chats", "Records", "File (MiB)", "Generated (s)"],
                    export_rows,
                )
            )
        if rows:
            section.add(
                r.table(
                    [
                        "Messages",
                        "Engine",
                        "Method",
                        "Stored",
                        "Time (s)",
                        "Messages/s",
                        "Peak RSS (MiB)",
                        "RSS growth (MiB)",
                        "Parsing process peak RSS (MiB)",
                        "× floor",
                    ],
                    rows,
                    align="rllrrrrrrr",
                )
            )
        if round_rows:
            section.add(_rounds_table(ctx, round_rows))
        base = [f"{e}: {r.secs(s)} s" for e, s in startup.items() if s is not None]
        if base:
            section.note(
                "CLI start-up baseline (wall time of `powerpulse ingest` of a one-chat file, "
                "the fastest of a few runs, subtracted from the CLI rows; “–” where start-up "
                "noise exceeds the ingest itself): " + "; ".join(base) + "."
            )


async def _round(
    ctx: Context,
    section: r.Section,
    engine: str,
    export: dict[str, Any],
    label: str,
    keep: bool,
) -> dict[str, Any]:
    """Every method once on one engine: method -> its result (absent where it failed)."""
    results: dict[str, Any] = {}
    for method, action in (
        ("floor", lambda: _floor(ctx, engine, export)),
        ("driver", lambda: _driver(ctx, engine, export, keep)),
        ("cli", lambda: _cli(ctx, engine, export)),
        ("http", lambda: _http(ctx, engine, export)),
    ):
        ctx.log(f"ingest: {method} on {label} messages")
        started = time.monotonic()
        try:
            results[method] = await action()
        except Exception as exc:
            section.error(f"{label} {method}", exc)
        ctx.log(f"ingest: {method} on {label} took {time.monotonic() - started:.1f}s")
    return results


# The paths compared round by round: (label, method, its time in seconds from a result
# and the engine's CLI start-up).
_PATHS: tuple[tuple[str, str, Callable[[dict[str, Any], float | None], float | None]], ...] = (
    ("floor", "floor", lambda result, _startup: result["insert_seconds"]),
    ("in-process", "driver", lambda result, _startup: result["ingest_seconds"]),
    ("CLI", "cli", lambda result, startup: _net(result["wall_seconds"], startup)),
    ("CLI again", "cli", lambda result, startup: _net(result["again_wall_seconds"], startup)),
    ("HTTP", "http", lambda result, _startup: result["seconds"]),
)


def _median_of(rounds: Sequence[dict[str, Any]], method: str, key: str) -> dict[str, Any] | None:
    """The result of `method` whose `key` is the median of the rounds' (the lower of the
    two middle ones for an even count); None if it failed in every round."""
    done = sorted(
        (result[method] for result in rounds if result.get(method) is not None),
        key=lambda result: result[key],
    )
    return done[(len(done) - 1) // 2] if done else None


def _median_round(rounds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Each method's median round, as one round's results. The CLI's second command
    (the same file again) is its own median, so it may come from another round."""
    results: dict[str, Any] = {}
    for method, key in (
        ("floor", "insert_seconds"),
        ("driver", "ingest_seconds"),
        ("cli", "wall_seconds"),
        ("http", "seconds"),
    ):
        median = _median_of(rounds, method, key)
        if median is not None:
            results[method] = dict(median)
    again = _median_of(rounds, "cli", "again_wall_seconds")
    if again is not None and "cli" in results:
        results["cli"].update({k: v for k, v in again.items() if k.startswith("again_")})
    return results


def _median_time(times: Sequence[float | None]) -> float | None:
    """The median as `_median_round` picks it; None (a CLI time lost in start-up noise,
    the shortest) sorts first."""
    if not times:
        return None
    ordered = sorted(times, key=lambda value: float("-inf") if value is None else value)
    return ordered[(len(ordered) - 1) // 2]


def _round_rows(
    size: int, by_engine: dict[str, list[dict[str, Any]]], startup: dict[str, float | None]
) -> list[list[Any]]:
    """Per path: every round's time on each engine, and their medians; with both engines,
    the rounds PostgreSQL was the faster in (round i against round i)."""
    rows: list[list[Any]] = []
    for label, method, seconds_of in _PATHS:
        times: dict[str, list[float | None]] = {}
        for engine, rounds in by_engine.items():
            times[engine] = [
                seconds_of(result[method], startup.get(engine)) if method in result else None
                for result in rounds
            ]
        row: list[Any] = [r.num(size), label]
        for engine in ENGINES:
            if engine not in times:
                row += [r.MISSING, r.MISSING]
                continue
            row.append(", ".join(r.secs(value) for value in times[engine]))
            row.append(r.secs(_median_time(times[engine])))
        if set(ENGINES) <= set(times):
            pairs = [
                (lite, pg)
                for lite, pg in zip(times["sqlite"], times["postgres"], strict=True)
                if lite is not None and pg is not None
            ]
            won = sum(1 for lite, pg in pairs if pg <= lite)
            row.append(f"{won} of {len(pairs)}" if pairs else r.MISSING)
        else:
            row.append(r.MISSING)
        rows.append(row)
    return rows


def _rounds_table(ctx: Context, rows: list[list[Any]]) -> str:
    return (
        f"**Round by round** ({ctx.options.rounds} round(s) per size; in each, every method "
        "ran once on each engine, the engine that went first alternating from round to "
        "round). Times in seconds, in round order; the CLI's are net of start-up (“–” where "
        "start-up noise exceeded the ingest). The table above shows each method's median "
        "round (with an even count of rounds, the faster of the two middle ones). "
        "**PostgreSQL at least as fast** counts the rounds in which PostgreSQL's time "
        "was at most SQLite's on the same path.\n\n"
        + r.table(
            [
                "Messages",
                "Path",
                "SQLite rounds (s)",
                "SQLite median (s)",
                "PostgreSQL rounds (s)",
                "PostgreSQL median (s)",
                "PostgreSQL at least as fast",
            ],
            rows,
            align="rllrlrr",
        )
    )


def _rows(
    size: int, engine: str, results: dict[str, Any], startup: float | None
) -> list[list[Any]]:
    floor = results.get("floor")
    floor_seconds = floor["insert_seconds"] if floor else None
    rows: list[list[Any]] = []
    if floor:
        rows.append(
            [
                r.num(size),
                engine,
                f"floor: {floor['driver']}",
                r.num(floor["rows"]),
                r.secs(floor_seconds),
                r.rate(floor["rows"], floor_seconds),
                r.mib(floor["peak_rss_bytes"]),
                r.MISSING,
                r.MISSING,
                "1.0×",
            ]
        )
    driver = results.get("driver")
    if driver:
        seconds = driver["ingest_seconds"]
        rows.append(
            [
                r.num(size),
                engine,
                "driver: IngestService.ingest",
                r.num(driver["messages_stored"]),
                r.secs(seconds),
                r.rate(driver["messages_stored"], seconds),
                r.mib(driver["peak_rss_after_ingest_bytes"]),
                r.mib(driver["peak_rss_after_ingest_bytes"] - driver["rss_before_bytes"]),
                r.mib(driver.get("parse_peak_rss_bytes")),
                r.ratio(seconds, floor_seconds),
            ]
        )
    cli = results.get("cli")
    if cli:
        net = _net(cli["wall_seconds"], startup)
        again = _net(cli["again_wall_seconds"], startup)
        stored = cli["messages_stored"]
        # Both rates count the messages of the first run: the second checks the same ones.
        for label, count, seconds, rss in (
            (
                f"CLI: wall {r.secs(cli['wall_seconds'])} s − start-up {r.secs(startup)} s",
                stored,
                net,
                cli["max_rss_bytes"],
            ),
            (
                f"CLI again, the same file (nothing new; rate over the {r.num(stored)} "
                f"messages checked): wall {r.secs(cli['again_wall_seconds'])} s",
                cli["again_messages_stored"],
                again,
                cli["again_max_rss_bytes"],
            ),
        ):
            rows.append(
                [
                    r.num(size),
                    engine,
                    label,
                    r.num(count),
                    r.secs(seconds),
                    r.rate(stored, seconds),
                    r.mib(rss),
                    r.MISSING,
                    r.MISSING,
                    r.ratio(seconds, floor_seconds),
                ]
            )
    http = results.get("http")
    if http:
        growth = (
            http["peak_rss_bytes"] - http["rss_before_bytes"]
            if http["peak_rss_bytes"] and http["rss_before_bytes"]
            else None
        )
        rows.append(
            [
                r.num(size),
                engine,
                "HTTP: uploadChats to serve",
                r.num(http["messages_stored"]),
                r.secs(http["seconds"]),
                r.rate(http["messages_stored"], http["seconds"]),
                r.mib(http["peak_rss_bytes"]),
                r.mib(growth),
                r.mib(http.get("parse_peak_rss_bytes")),
                r.ratio(http["seconds"], floor_seconds),
            ]
        )
    return rows


def _net(wall: float, startup: float | None) -> float | None:
    """A CLI run's wall time less the command's start-up; None where start-up noise
    exceeds the ingest itself, or start-up is unknown."""
    if startup is None or wall - startup <= 0:
        return None
    return wall - startup

"""`python -m bench`: run the benchmark sections and write a Markdown report."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import report as r
from .common import (
    DEFAULT_POSTGRES_ADMIN_URL,
    ENGINES,
    REPO,
    Context,
    Options,
    kill_leftover_processes,
)

SECTIONS = {
    "ingest": (1, "Ingest"),
    "queries": (2, "Queries"),
    "load": (3, "Load"),
    "analysis": (4, "Analysis"),
    "growth": (5, "Growth"),
}
# Growth right after ingest, so the databases ingest keeps for it are dropped early.
EXECUTION_ORDER = ("ingest", "growth", "queries", "load", "analysis")


def _count(text: str) -> int:
    text = text.strip().lower().replace("_", "")
    factor = 1
    if text.endswith("k"):
        factor, text = 1000, text[:-1]
    elif text.endswith("m"):
        factor, text = 1_000_000, text[:-1]
    value = int(float(text) * factor)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return value


def _list(parse: Any) -> Any:
    def parser(text: str) -> list[Any]:
        try:
            return [parse(part) for part in text.split(",") if part.strip()]
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    return parser


def _choices(allowed: tuple[str, ...] | list[str]) -> Any:
    def parser(text: str) -> list[str]:
        names = [part.strip().lower() for part in text.split(",") if part.strip()]
        unknown = [name for name in names if name not in allowed]
        if unknown or not names:
            raise argparse.ArgumentTypeError(
                f"unknown {', '.join(unknown) or '(empty)'}; choose from {', '.join(allowed)}"
            )
        return names

    return parser


def _setting(text: str) -> tuple[str, str]:
    name, equals, value = text.partition("=")
    if not equals or not name.startswith("POWERPULSE_"):
        raise argparse.ArgumentTypeError(f"{text!r} is not POWERPULSE_NAME=VALUE")
    return name, value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="PowerPulse benchmarks: ingest, queries, load, analysis, growth. "
        "Writes a Markdown report and prints it. Numbers are measurements, never assertions.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes and short runs (a few minutes on 2 cores)"
    )
    parser.add_argument(
        "--only",
        type=_choices(list(SECTIONS)),
        default=None,
        help=f"comma-separated sections: {','.join(SECTIONS)}",
    )
    parser.add_argument(
        "--engines",
        type=_choices(ENGINES),
        default=list(ENGINES),
        help="comma-separated: sqlite,postgres (default both)",
    )
    parser.add_argument(
        "--sizes",
        type=_list(_count),
        default=None,
        help="message counts for ingest and growth, e.g. 10000,100k,1M "
        "(default 10k,100k,1M; --quick 10k,50k)",
    )
    parser.add_argument(
        "--runs", type=int, default=None, help="timed runs per query (default 30; --quick 10)"
    )
    parser.add_argument(
        "--rounds",
        type=_count,
        default=None,
        help="ingest rounds per size: every method on every engine, the engine that goes "
        "first alternating; tables show each method's median round (default 3; --quick 1)",
    )
    parser.add_argument(
        "--query-chats",
        type=_count,
        default=None,
        help="chats in the query/load dataset (default 100k; --quick 10k)",
    )
    parser.add_argument(
        "--load-seconds", type=float, default=None, help="load duration (default 60; --quick 10)"
    )
    parser.add_argument("--clients", type=int, default=20, help="concurrent load clients")
    parser.add_argument(
        "--load-processes",
        type=int,
        default=2,
        help="API processes of the server under load (serve --processes; default 2)",
    )
    parser.add_argument(
        "--load-export-every",
        type=float,
        default=10.0,
        help="seconds between full CSV exports during the load, 0 for none (default 10)",
    )
    parser.add_argument(
        "--load-upload",
        type=_count,
        default=None,
        help="messages uploaded during the load (default 100k; --quick 10k)",
    )
    parser.add_argument(
        "--latencies",
        type=_list(float),
        default=None,
        help="fake OpenAI latencies in seconds (default 0.1,0.3,1; --quick 0.3)",
    )
    parser.add_argument(
        "--concurrency",
        type=_list(int),
        default=None,
        help="analysis concurrency values (default 16,64; --quick 16)",
    )
    parser.add_argument("--seed", type=int, default=7, help="synthetic data seed")
    parser.add_argument(
        "--output",
        type=Path,
        default=REPO / "bench" / "results" / "latest.md",
        help="report file (default bench/results/latest.md)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "powerpulse-bench-cache",
        help="where generated exports are cached by size+seed+generator",
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("POWERPULSE_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_ADMIN_URL),
        help="admin URL used to create and drop the benchmark's PostgreSQL databases",
    )
    parser.add_argument(
        "--keep-temp",
        action="store_true",
        help="keep the run's temporary directory (logs, SQLite files)",
    )
    parser.add_argument(
        "--reuse-datasets",
        action="store_true",
        help="keep the analysed query/load datasets between runs (in --cache-dir and as "
        "pp_bench_keep_* PostgreSQL databases) and reuse them while the generator, ingest, "
        "analysis and schema code are unchanged; for iterating on queries, not for results",
    )
    parser.add_argument(
        "--setting",
        action="append",
        type=_setting,
        default=[],
        metavar="NAME=VALUE",
        help="a POWERPULSE_* setting for every PowerPulse process the benchmark starts, e.g. "
        "POWERPULSE_INGEST_PARSE_PROCESS=false (repeatable; for comparing a setting's effect)",
    )
    parser.add_argument("--no-print", action="store_true", help="do not print the report")
    return parser


def options_from(args: argparse.Namespace, argv: list[str]) -> Options:
    quick = args.quick
    return Options(
        quick=quick,
        sections=args.only or list(SECTIONS),
        engines=args.engines,
        sizes=args.sizes or ([10_000, 50_000] if quick else [10_000, 100_000, 1_000_000]),
        seed=args.seed,
        runs=args.runs or (10 if quick else 30),
        rounds=args.rounds or (1 if quick else 3),
        load_seconds=args.load_seconds or (10.0 if quick else 60.0),
        load_clients=args.clients,
        load_export_every=args.load_export_every,
        load_processes=args.load_processes,
        load_upload_messages=args.load_upload or (10_000 if quick else 100_000),
        query_chats=args.query_chats or (10_000 if quick else 100_000),
        deep_pages=50,
        analysis_latencies=args.latencies or ([0.3] if quick else [0.1, 0.3, 1.0]),
        analysis_concurrency=args.concurrency or ([16] if quick else [16, 64]),
        analysis_batches=[1, None],
        analysis_seconds_target=4.0 if quick else 15.0,
        lexicon_conversations=2_000 if quick else 20_000,
        output=args.output,
        cache_dir=args.cache_dir,
        postgres_admin_url=args.postgres_url,
        keep_temp=args.keep_temp,
        reuse_datasets=args.reuse_datasets,
        settings=dict(args.setting),
        command=shlex.join([sys.executable, "-m", "bench", *argv]),
    )


# ---------------------------------------------------------------------------- machine


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _meminfo(key: str) -> int | None:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return None


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def machine(
    ctx: Context, start_load: tuple[float, float, float], start_available: int | None
) -> list[tuple[str, str]]:
    cpu_model = next(
        (
            line.split(":", 1)[1].strip()
            for line in _read("/proc/cpuinfo").splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    rows = [
        ("CPUs (nproc)", f"{usable} usable of {os.cpu_count()}"),
        ("CPU model", cpu_model),
        (
            "Memory",
            f"{r.num((_meminfo('MemTotal') or 0) / 1024**3)} GiB total, "
            f"{r.num((start_available or 0) / 1024**3)} GiB available at start",
        ),
        ("Load average at start (1/5/15 min)", " / ".join(f"{v:.2f}" for v in start_load)),
        ("OS", platform.platform()),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("SQLite", sqlite3.sqlite_version),
        (
            "PostgreSQL",
            ctx.postgres_version
            or (ctx.postgres_reason and f"unavailable ({ctx.postgres_reason})")
            or "not used",
        ),
    ]
    with contextlib.suppress(Exception):
        import powerpulse

        rows.append(("PowerPulse", getattr(powerpulse, "__version__", "?")))
    with contextlib.suppress(Exception):
        import ijson

        rows.append(("ijson backend", str(ijson.backend)))
    commit = _git("rev-parse", "--short", "HEAD")
    if commit:
        dirty = _git("status", "--porcelain", "--untracked-files=no")
        rows.append(
            ("Git commit", commit + (" (working tree has uncommitted changes)" if dirty else ""))
        )
    return rows


# ---------------------------------------------------------------------------- running


async def _run_sections(ctx: Context, sections: dict[str, r.Section]) -> None:
    from . import analysis, growth, ingest, load, queries

    runners = {
        "ingest": ingest.run,
        "queries": queries.run,
        "load": load.run,
        "analysis": analysis.run,
        "growth": growth.run,
    }
    await ctx.check_postgres()
    if ctx.postgres_reason:
        ctx.log(f"PostgreSQL unavailable: {ctx.postgres_reason}")
    try:
        for key in EXECUTION_ORDER:
            if key not in ctx.options.sections:
                continue
            section = sections[key]
            ctx.log(f"section {section.number}: {section.title}")
            started = time.monotonic()
            try:
                await runners[key](ctx, section)
            except Exception as exc:
                ctx.log(f"section {section.title} failed: {exc!r}")
                section.fail(exc)
            except (KeyboardInterrupt, asyncio.CancelledError):
                section.error("run", "interrupted while this section was running")
                raise
            finally:
                section.seconds = time.monotonic() - started
            if key == "growth":
                for (engine, _), info in list(ctx.kept.items()):
                    await ctx.drop_database(engine, info["url"])
                ctx.kept.clear()
    finally:
        kill_leftover_processes()
        await ctx.drop_all()


def render(
    ctx: Context,
    sections: dict[str, r.Section],
    machine_rows: list[tuple[str, str]],
    *,
    started_at: datetime,
    wall: float,
    interrupted: bool,
) -> str:
    options = ctx.options
    end_load = " / ".join(f"{v:.2f}" for v in os.getloadavg())
    lines = [
        "# PowerPulse benchmark report",
        "",
        f"Generated {started_at.strftime('%Y-%m-%d %H:%M:%S UTC')} · mode: "
        f"**{'quick' if options.quick else 'full'}** · total wall time {r.secs(wall)} s"
        + (" · **interrupted: partial results**" if interrupted else ""),
        "",
        f"Command: `{options.command}` (in `{Path.cwd()}`)",
        "",
        r.table(
            ["Machine", ""],
            [*machine_rows, ("Load average at end (1/5/15 min)", end_load)],
            align="ll",
        ),
        "",
        r.table(
            ["Setting", "Value"],
            [
                ("Sections", ", ".join(options.sections)),
                ("Engines", ", ".join(options.engines)),
                ("Ingest/growth sizes (messages)", ", ".join(f"{s:,}" for s in options.sizes)),
                ("Query dataset (chats)", f"{options.query_chats:,}"),
                ("Timed runs per query", str(options.runs)),
                (
                    "Load",
                    f"{options.load_clients} clients × {r.secs(options.load_seconds)} s, "
                    f"upload of {options.load_upload_messages:,} messages",
                ),
                (
                    "Analysis",
                    "latencies "
                    + ", ".join(f"{x * 1000:.0f} ms" for x in options.analysis_latencies)
                    + "; "
                    + f"concurrency {', '.join(map(str, options.analysis_concurrency))}",
                ),
                ("Seed", str(options.seed)),
            ],
            align="ll",
        ),
        "",
        "Benchmarks are measurements, not tests: nothing here asserts on time. Everything "
        "ran on this one machine (clients, servers, databases, fake model server), so "
        "other load on it shows up in the numbers — compare the load averages above.",
        "",
    ]
    for key in sorted(SECTIONS, key=lambda k: SECTIONS[k][0]):
        section = sections[key]
        if key not in options.sections:
            continue
        if interrupted and section.seconds is None and not section.blocks:
            section.skipped = "interrupted before it ran"
        lines.append(section.render())
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    options = options_from(args, argv)
    started_at = datetime.now(UTC)
    started = time.monotonic()
    start_load = os.getloadavg()
    start_available = _meminfo("MemAvailable")
    ctx = Context(options)
    sections = {key: r.Section(number, key, title) for key, (number, title) in SECTIONS.items()}
    ctx.log(f"run directory {ctx.run_dir}; report → {options.output}")

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    interrupted = False
    try:
        asyncio.run(_run_sections(ctx, sections))
    except KeyboardInterrupt:
        interrupted = True
        ctx.log("interrupted: cleaning up")
    finally:
        signal.signal(signal.SIGTERM, previous)
        kill_leftover_processes()
        if ctx.databases:
            with contextlib.suppress(Exception):
                asyncio.run(ctx.drop_all())
    machine_rows = machine(ctx, start_load, start_available)
    text = render(
        ctx,
        sections,
        machine_rows,
        started_at=started_at,
        wall=time.monotonic() - started,
        interrupted=interrupted,
    )
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text(text)
    if not options.keep_temp:
        shutil.rmtree(ctx.run_dir, ignore_errors=True)
    else:
        ctx.log(f"kept {ctx.run_dir}")
    if not args.no_print:
        sys.stdout.write(text)
        sys.stdout.flush()
    ctx.log(f"report written to {options.output}")
    return 130 if interrupted else 0

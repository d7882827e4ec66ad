"""The `powerpulse` command: serve the API, ingest exports, print the schema."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import os
import signal
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .errors import PowerPulseError
from .settings import Settings

DEMO_EXPORT = "demo_export.json"


def _load_settings() -> Settings:
    try:
        settings = Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'settings'}: {error['msg']}"
            for error in exc.errors()
        )
        raise SystemExit(f"powerpulse: invalid configuration: {problems}") from None
    logging.getLogger().setLevel(settings.log_level.upper())
    return settings


def _print_job(job: Any, console: Any, *, waited: bool) -> None:
    if job is None:
        return
    console.print(
        f"analysis job {job['id']}: {job['status']} — {job['total']} conversations, "
        f"{job['analyzed']} analysed, {job['cached']} cached, {job['failed']} failed, "
        f"{job['input_tokens'] + job['output_tokens']:,} tokens, ${job['cost_usd']:.4f}"
    )
    if job["error"]:
        console.print(f"[red]analysis stopped:[/] {job['error']}")
    if not waited and job["finished_at"] is None:
        console.print("analysis continues in the next `powerpulse serve` (or worker) process")


def _print_report(report: Any, console: Any) -> None:
    from rich.table import Table

    table = Table(title="Upload report", show_header=False)
    for label, value in (
        ("conversations received", report.conversations_received),
        ("messages received", report.messages_received),
        ("messages stored", report.messages_stored),
        ("duplicates skipped", report.duplicates_skipped),
        ("autoresponses filtered", report.autoresponses_filtered),
        ("invalid records", report.invalid_records),
        ("conversations created", report.conversations_created),
        ("conversations updated", report.conversations_updated),
        ("queued for analysis", report.analysis_queued),
        ("analysis still current", report.analysis_cached),
        ("forced re-analysis", report.analysis_forced),
    ):
        table.add_row(label, f"{value:,}")
    console.print(table)
    for error in report.errors[:20]:
        where = f"chat {error.chat_id!r}" if error.chat_id else "chat ?"
        if error.index is not None:
            where += f" record {error.index}"
        console.print(f"[yellow]skipped[/] {where}: {error.message}")
    hidden = report.invalid_records - min(len(report.errors), 20)
    if hidden > 0:
        console.print(f"[yellow]… and {hidden:,} more invalid records[/]")


def _progress(console: Any, *, enabled: bool) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not enabled,
    )


async def _ingest_stream(
    settings: Settings,
    stream: Any,
    *,
    name: str,
    size: int,
    show_progress: bool,
    wait: bool,
    force: bool = False,
    migrate: bool | None = None,
    tenant: str | None = None,
) -> tuple[Any, Any]:
    """Store an export, then (with `wait`) analyse it in this process, showing progress."""
    from rich.console import Console

    from .app import open_state, settle_heap

    console = Console(stderr=True)
    state = await open_state(settings, migrate=migrate)
    settle_heap()
    try:
        tenant_id = state.default_tenant_id
        if tenant is not None:
            from .services.tenants import TenantAdmin

            tenant_id = await TenantAdmin(state.database, settings).tenant_id(tenant)
        with _progress(console, enabled=show_progress) as progress:
            task = progress.add_task(f"storing {name} (bytes)", total=size)

            def advance(_report: Any) -> None:
                progress.update(task, completed=stream.tell())

            report = await state.services.ingest.ingest(
                tenant_id, stream, force_reprocess=force, progress=advance
            )
            progress.update(task, completed=size)
        job = await state.services.jobs.get(tenant_id, report.job_id)
        if wait and job is not None and job["finished_at"] is None:
            job = await _wait_for_job(state, tenant_id, report.job_id, console, show_progress)
    finally:
        await state.close()
    return report, job


async def _wait_for_job(
    state: Any, tenant_id: int, job_id: int, console: Any, show_progress: bool
) -> Any:
    from .services.analysis import WorkerBusy

    try:
        await state.worker.start()
    except WorkerBusy:
        console.print(
            "another PowerPulse process is analysing this database; following its progress"
        )
    with _progress(console, enabled=show_progress) as progress:
        task = progress.add_task("analysing conversations", total=None)
        while True:
            job = await state.services.jobs.get(tenant_id, job_id)
            processed = job["analyzed"] + job["cached"] + job["failed"]
            progress.update(task, completed=processed, total=job["total"])
            if job["finished_at"] is not None:
                return job
            await asyncio.sleep(0.25)


def _ingest_path(settings: Settings, path: Path, **options: Any) -> tuple[Any, Any]:
    with path.open("rb") as stream:
        return asyncio.run(
            _ingest_stream(settings, stream, name=path.name, size=path.stat().st_size, **options)
        )


def cmd_ingest(args: argparse.Namespace) -> int:
    from rich.console import Console

    settings = _load_settings()
    path = Path(args.file)
    if not path.is_file():
        print(f"powerpulse: no such file: {path}", file=sys.stderr)
        return 2
    try:
        report, job = _ingest_path(
            settings,
            path,
            show_progress=not args.quiet,
            wait=not args.no_wait,
            force=args.force_reprocess,
            tenant=args.tenant,
        )
    except PowerPulseError as exc:
        print(f"powerpulse: {path} was not ingested: {exc.message}", file=sys.stderr)
        return 1
    console = Console()
    _print_report(report, console)
    _print_job(job, console, waited=not args.no_wait)
    return 0 if job is None or job["status"] != "FAILED" else 3


def _demo_path() -> Path:
    return Path(str(resources.files("powerpulse") / "data" / DEMO_EXPORT))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .app import create_app, favour_the_event_loop, settle_heap

    settings = _load_settings()
    if settings.auth_disabled and not _is_loopback(args.host):
        print(
            f"powerpulse: refusing to serve on {args.host} with POWERPULSE_AUTH_DISABLED set: "
            "without API keys anyone who can reach the port reads every conversation. "
            "Bind to a loopback address (127.0.0.1 or ::1), or create a tenant and API key "
            "(`powerpulse tenant create NAME`) and unset POWERPULSE_AUTH_DISABLED.",
            file=sys.stderr,
        )
        return 2
    migrate = True if args.migrate else None
    if args.demo:
        try:
            report, _ = _ingest_path(
                settings, _demo_path(), show_progress=False, wait=False, migrate=migrate
            )
        except PowerPulseError as exc:
            print(f"powerpulse: demo data could not be loaded: {exc.message}", file=sys.stderr)
            return 1
        logging.getLogger("powerpulse").info(
            "demo data: %d messages stored, %d already present",
            report.messages_stored,
            report.duplicates_skipped,
        )
    if args.processes > 1:
        return _serve_processes(args, settings, migrate=migrate)
    app = create_app(settings, run_worker=not args.no_worker, migrate=migrate)
    settle_heap()
    favour_the_event_loop()
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=settings.log_level.lower(),
        proxy_headers=args.proxy_headers,
        timeout_keep_alive=settings.keep_alive_seconds,
    )
    return 0


# Tells each API process started by `serve --processes N` whether to run an analysis worker.
SERVE_WORKER_ENV = "POWERPULSE_SERVE_WORKER"


def _serve_processes(args: argparse.Namespace, settings: Settings, *, migrate: bool | None) -> int:
    """`serve --processes N`: N API processes on one port (powerpulse.supervisor).

    The schema is brought up to date (or checked) once here, before any process starts, so
    the processes never migrate side by side. Each builds its own app (serving_app).
    """
    from .app import open_state
    from .supervisor import ServeOptions, Supervisor, can_share_port, claim_port

    if not can_share_port():
        print(
            "powerpulse: --processes needs SO_REUSEPORT, which this system does not have; "
            "run one process per port behind a load balancer instead",
            file=sys.stderr,
        )
        return 2

    async def prepare() -> None:
        state = await open_state(settings, migrate=migrate)
        await state.close()

    try:
        asyncio.run(prepare())
    except PowerPulseError as exc:
        print(f"powerpulse: {exc.message}", file=sys.stderr)
        return 1
    try:
        port = claim_port(args.host, args.port)
    except OSError as exc:
        print(
            f"powerpulse: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1
    os.environ[SERVE_WORKER_ENV] = "0" if args.no_worker else "1"
    options = ServeOptions(
        host=args.host,
        port=port,
        log_level=settings.log_level.lower(),
        proxy_headers=args.proxy_headers,
        keep_alive_seconds=settings.keep_alive_seconds,
    )
    logging.getLogger("powerpulse").info(
        "serving on %s:%d with %d processes", args.host, port, args.processes
    )
    return Supervisor(options, args.processes).run()


def serving_app() -> Any:
    """The app of one process of `serve --processes N` (settings from the environment)."""
    from .app import create_app, favour_the_event_loop, settle_heap

    settings = _load_settings()
    app = create_app(settings, run_worker=os.environ.get(SERVE_WORKER_ENV, "1") != "0")
    settle_heap()
    favour_the_event_loop()
    return app


async def _run_worker(settings: Settings, *, migrate: bool | None) -> None:
    from .app import open_state, settle_heap
    from .services.analysis import WorkerBusy

    log = logging.getLogger("powerpulse.worker")
    state = await open_state(settings, migrate=migrate)
    settle_heap()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        while not stop.is_set():
            try:
                await state.worker.start()
                break
            except WorkerBusy as exc:
                log.warning("%s; waiting for it to stop", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=5)
        if state.worker.running:
            log.info("analysing with %s", state.analyzer.fingerprint.key())
            await stop.wait()
            log.info("stopping: finishing in-flight analyses")
    finally:
        await state.close()


def cmd_worker(args: argparse.Namespace) -> int:
    settings = _load_settings()
    try:
        asyncio.run(_run_worker(settings, migrate=True if args.migrate else None))
    except PowerPulseError as exc:
        print(f"powerpulse: {exc.message}", file=sys.stderr)
        return 1
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    from .db import create_engine
    from .migrate import schema_state, upgrade

    settings = _load_settings()

    async def run() -> str:
        engine = create_engine(settings)
        try:
            if args.db_command == "upgrade":
                await upgrade(engine)
            state = await schema_state(engine)
        finally:
            await engine.dispose()
        status = "up to date" if state.up_to_date else f"behind (head is {state.head})"
        return f"schema revision {state.current or 'none'}: {status}"

    print(asyncio.run(run()))
    return 0


async def _with_admin(settings: Settings, action: Any) -> Any:
    from .db import Database, create_engine
    from .migrate import prepare_schema
    from .services.tenants import TenantAdmin

    database = Database(create_engine(settings))
    try:
        await prepare_schema(database.engine, migrate=None)
        return await action(TenantAdmin(database, settings))
    finally:
        await database.dispose()


def _admin(action: Any) -> Any:
    settings = _load_settings()
    return asyncio.run(_with_admin(settings, action))


def cmd_tenant(args: argparse.Namespace) -> int:
    if args.tenant_command == "create":
        tenant_id, key_id, key = _admin(lambda admin: admin.create_tenant(args.name))
        print(f"tenant {args.name} created with id {tenant_id}")
        print(f"API key {key_id} (read-write), shown only now; store it safely:")
        print(key)
        return 0
    if args.tenant_command == "list":
        for tenant in _admin(lambda admin: admin.tenants()):
            patterns = ",".join(tenant.autoresponse_patterns)
            print(
                f"{tenant.id}\t{tenant.name}\ttimezone={tenant.timezone}\t"
                f"session_gap_hours={tenant.session_gap_hours:g}\t"
                f"autoresponse_patterns={patterns}\ttopics_file={tenant.topics_file or '-'}"
            )
        return 0
    patterns = (
        [part for part in args.autoresponse_patterns.split(",")]
        if args.autoresponse_patterns is not None
        else None
    )
    tenant = _admin(
        lambda admin: admin.configure(
            args.name,
            timezone=args.timezone,
            autoresponse_patterns=patterns,
            topics_file=args.topics_file,
            session_gap_hours=args.session_gap_hours,
        )
    )
    print(
        f"tenant {tenant.name}: timezone={tenant.timezone} "
        f"session_gap_hours={tenant.session_gap_hours:g} "
        f"autoresponse_patterns={','.join(tenant.autoresponse_patterns)} "
        f"topics_file={tenant.topics_file or '-'}"
    )
    print("running servers pick the change up within a few seconds; new uploads use it")
    return 0


def cmd_apikey(args: argparse.Namespace) -> int:
    if args.apikey_command == "create":
        key_id, key = _admin(lambda admin: admin.create_key(args.tenant, read_only=args.read_only))
        kind = "read-only" if args.read_only else "read-write"
        print(f"API key {key_id} ({kind}) for {args.tenant}, shown only now; store it safely:")
        print(key)
        return 0
    if args.apikey_command == "list":
        for row in _admin(lambda admin: admin.keys(args.tenant)):
            state = "revoked" if row["revoked_at"] else "active"
            kind = "read-only" if row["read_only"] else "read-write"
            last = row["last_used_at"].isoformat() if row["last_used_at"] else "never"
            print(
                f"{row['id']}\t{row['tenant']}\t{row['prefix']}…\t{kind}\t{state}\t"
                f"created {row['created_at'].isoformat()}\tlast used {last}"
            )
        return 0
    _admin(lambda admin: admin.revoke_key(args.id))
    print(f"API key {args.id} revoked")
    return 0


def cmd_docs(args: argparse.Namespace) -> int:
    """Rewrite the generated metric table in docs/metrics.md (or print it)."""
    from .metric_definitions import markdown_table, with_table

    if args.path is None:
        sys.stdout.write(markdown_table() + "\n")
        return 0
    path = Path(args.path)
    document = path.read_text(encoding="utf-8") if path.exists() else "# Metrics\n"
    path.write_text(with_table(document), encoding="utf-8")
    print(f"updated {path}")
    return 0


def cmd_export_schema(args: argparse.Namespace) -> int:
    from .graphql.schema import build_schema

    sys.stdout.write(build_schema().as_str() + "\n")
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="powerpulse", description="Conversation analytics for customer-service chats."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the GraphQL API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--demo", action="store_true", help="load the bundled sample export before starting"
    )
    serve.add_argument(
        "--proxy-headers",
        action="store_true",
        help="trust X-Forwarded-* headers (behind a reverse proxy)",
    )
    serve.add_argument(
        "--no-worker",
        action="store_true",
        help="do not analyse conversations in this process",
    )
    serve.add_argument(
        "--migrate", action="store_true", help="apply pending schema migrations first"
    )
    serve.add_argument(
        "--processes",
        type=_positive_int,
        default=os.environ.get("POWERPULSE_PROCESSES") or "1",
        help="API processes sharing the port, about one per core (default 1, or "
        "POWERPULSE_PROCESSES); on SQLite one of them runs the analysis worker",
    )
    serve.set_defaults(handler=cmd_serve)

    worker = commands.add_parser("worker", help="run only the analysis worker")
    worker.add_argument(
        "--migrate", action="store_true", help="apply pending schema migrations first"
    )
    worker.set_defaults(handler=cmd_worker)

    db = commands.add_parser("db", help="database schema migrations")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    db_commands.add_parser("upgrade", help="apply pending migrations")
    db_commands.add_parser("status", help="show the schema revision")
    db.set_defaults(handler=cmd_db)

    ingest = commands.add_parser("ingest", help="ingest a grouped_chats JSON export")
    ingest.add_argument("file")
    ingest.add_argument("--quiet", action="store_true", help="no progress bar")
    ingest.add_argument("--tenant", help="tenant to ingest for (default: the default tenant)")
    ingest.add_argument("--no-wait", action="store_true", help="return once stored; analyse later")
    ingest.add_argument(
        "--force-reprocess",
        action="store_true",
        help="re-analyse every conversation of the file, even unchanged ones",
    )
    ingest.set_defaults(handler=cmd_ingest)

    tenant = commands.add_parser("tenant", help="tenants and their own settings")
    tenant_commands = tenant.add_subparsers(dest="tenant_command", required=True)
    create = tenant_commands.add_parser("create", help="create a tenant and its first API key")
    create.add_argument("name")
    tenant_commands.add_parser("list", help="list tenants and their effective settings")
    configure = tenant_commands.add_parser(
        "set", help="change a tenant's own settings ('' returns to the default)"
    )
    configure.add_argument("name")
    configure.add_argument("--timezone", help="IANA timezone, e.g. Africa/Nairobi")
    configure.add_argument(
        "--autoresponse-patterns", help="comma-separated substrings of bot autoresponses"
    )
    configure.add_argument("--topics-file", help="JSON keyword taxonomy for the lexicon analyzer")
    configure.add_argument(
        "--session-gap-hours", type=float, help="silence that starts a new contact (0 = default)"
    )
    tenant.set_defaults(handler=cmd_tenant)

    apikey = commands.add_parser("apikey", help="API keys")
    apikey_commands = apikey.add_subparsers(dest="apikey_command", required=True)
    key_create = apikey_commands.add_parser("create", help="create an API key for a tenant")
    key_create.add_argument("--tenant", required=True)
    key_create.add_argument(
        "--read-only", action="store_true", help="queries and exports only, no uploads"
    )
    key_list = apikey_commands.add_parser("list", help="list API keys (never their secrets)")
    key_list.add_argument("--tenant")
    key_revoke = apikey_commands.add_parser("revoke", help="revoke an API key")
    key_revoke.add_argument("id", type=int)
    apikey.set_defaults(handler=cmd_apikey)

    docs = commands.add_parser("docs", help="generated documentation")
    docs_commands = docs.add_subparsers(dest="docs_command", required=True)
    metrics_docs = docs_commands.add_parser(
        "metrics", help="write the metric definitions table into a Markdown file"
    )
    metrics_docs.add_argument(
        "path", nargs="?", help="file to update, e.g. docs/metrics.md (prints when omitted)"
    )
    docs.set_defaults(handler=cmd_docs)

    export = commands.add_parser("export-schema", help="print the GraphQL schema (SDL)")
    export.set_defaults(handler=cmd_export_schema)
    return parser


def configure_logging() -> None:
    """Log lines on standard error; the level follows POWERPULSE_LOG_LEVEL once settings load."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Alembic narrates every step at INFO; PowerPulse reports migrations itself.
    logging.getLogger("alembic").setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging()
    try:
        return int(args.handler(args))
    except PowerPulseError as exc:
        print(f"powerpulse: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())

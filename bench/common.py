"""Shared machinery: the run context, subprocesses, temporary databases, exports, drivers."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
FAKE_OPENAI = REPO / "tests" / "fakes" / "openai_server.py"
DEFAULT_POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
# Uploads in the benchmark are as large as the biggest export; the default limit is 50 MiB.
LARGE_UPLOAD_BYTES = 64 * 1024**3

ENGINES = ("sqlite", "postgres")


class BenchError(Exception):
    """A step failed in a way worth one line in the report."""


# ---------------------------------------------------------------------------- processes

_LIVE: dict[int, subprocess.Popen[Any]] = {}
_LIVE_LOCK = threading.Lock()


def _register(process: subprocess.Popen[Any]) -> None:
    with _LIVE_LOCK:
        _LIVE[process.pid] = process


def _unregister(process: subprocess.Popen[Any]) -> None:
    with _LIVE_LOCK:
        _LIVE.pop(process.pid, None)


def kill_leftover_processes() -> list[int]:
    """Terminate every child this run started that is still alive (by its own pid)."""
    with _LIVE_LOCK:
        processes = list(_LIVE.values())
    killed = []
    for process in processes:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(5)
            killed.append(process.pid)
        _unregister(process)
    return killed


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


@dataclass
class Measured:
    """A finished subprocess: exit status, wall time, its own peak RSS (from wait4)."""

    command: list[str]
    returncode: int
    wall_seconds: float
    max_rss_bytes: int
    log: Path
    timed_out: bool = False

    def check(self, what: str) -> Measured:
        if self.timed_out:
            raise BenchError(
                f"{what} timed out after {self.wall_seconds:.0f} s; log: {tail(self.log)}"
            )
        if self.returncode != 0:
            raise BenchError(f"{what} exited with {self.returncode}: {tail(self.log)}")
        return self


def run_measured(
    command: Sequence[str],
    *,
    env: dict[str, str],
    cwd: Path,
    log: Path,
    timeout: float,
) -> Measured:
    """Run a command to completion; wall time from spawn to exit, peak RSS via wait4.

    Blocking: call through asyncio.to_thread. Output goes to `log`.
    """
    with log.open("ab") as output:
        started = time.perf_counter()
        process = subprocess.Popen(
            list(command),
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        _register(process)
        timed_out = threading.Event()

        def on_timeout() -> None:
            timed_out.set()
            with contextlib.suppress(ProcessLookupError):
                process.kill()

        timer = threading.Timer(timeout, on_timeout)
        timer.daemon = True
        timer.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
        finally:
            timer.cancel()
            _unregister(process)
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
    return Measured(
        list(command),
        process.returncode,
        wall,
        usage.ru_maxrss * 1024,
        log,
        timed_out=timed_out.is_set(),
    )


class Service:
    """A long-running child process (server) stopped with SIGINT, then SIGKILL."""

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        *,
        env: dict[str, str],
        cwd: Path,
        log: Path,
        stdout_pipe: bool = False,
    ) -> None:
        self.name = name
        self.command = list(command)
        self.log = log
        self._log_handle = log.open("ab")
        self.process = subprocess.Popen(
            self.command,
            stdout=subprocess.PIPE if stdout_pipe else self._log_handle,
            stderr=self._log_handle,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        _register(self.process)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    async def read_first_line(self, wait_seconds: float) -> str:
        assert self.process.stdout is not None

        line = await asyncio.wait_for(asyncio.to_thread(self.process.stdout.readline), wait_seconds)
        if not line:
            raise BenchError(f"{self.name} printed nothing: {tail(self.log)}")
        return line.decode().strip()

    async def stop(self, grace: float = 30.0) -> int | None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGINT)
            try:
                await asyncio.to_thread(self.process.wait, grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(self.process.wait, 10)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._log_handle.close()
        _unregister(self.process)
        return self.process.returncode


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process in bytes (empty when it is gone)."""
    found: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    found[key] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return found


def reset_peak_rss(pid: int) -> bool:
    """Reset a process's VmHWM to its current RSS (Linux: write 5 to clear_refs)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def process_tree(pid: int) -> list[int]:
    """A process and all its descendants (serve --processes runs its API processes as
    children of a supervisor)."""
    found = [pid]
    for index in range(10_000):
        if index >= len(found):
            break
        parent = found[index]
        try:
            for task in os.listdir(f"/proc/{parent}/task"):
                with open(f"/proc/{parent}/task/{task}/children") as handle:
                    found.extend(int(child) for child in handle.read().split())
        except OSError:
            continue
    return found


def tree_peak_rss(pid: int) -> int | None:
    """The sum of the peak RSS (VmHWM) of a process and its descendants."""
    peaks = [proc_status(member).get("VmHWM") for member in process_tree(pid)]
    known = [peak for peak in peaks if peak]
    return sum(known) if known else None


async def descendants_peak_rss(pid: int, stop: asyncio.Event, interval: float = 0.1) -> int | None:
    """Until `stop` is set, the largest peak RSS (VmHWM) seen of any descendant of a process
    (the parsing process of an upload lives only as long as the upload: it is sampled)."""
    peak: int | None = None
    while True:
        for member in process_tree(pid)[1:]:
            seen = proc_status(member).get("VmHWM")
            if seen and (peak is None or seen > peak):
                peak = seen
        if stop.is_set():
            return peak
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)


def reset_tree_peak_rss(pid: int) -> None:
    for member in process_tree(pid):
        reset_peak_rss(member)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------------------- the run


@dataclass
class Options:
    quick: bool
    sections: list[str]
    engines: list[str]
    sizes: list[int]
    seed: int
    runs: int
    # Ingest rounds per size (each method on each engine once a round).
    rounds: int
    load_seconds: float
    load_clients: int
    load_export_every: float
    load_processes: int
    load_upload_messages: int
    query_chats: int
    deep_pages: int
    analysis_latencies: list[float]
    analysis_concurrency: list[int]
    analysis_batches: list[int | None]
    analysis_seconds_target: float
    lexicon_conversations: int
    output: Path
    cache_dir: Path
    postgres_admin_url: str
    keep_temp: bool
    reuse_datasets: bool
    command: str
    # POWERPULSE_* settings given to every PowerPulse process the benchmark starts.
    settings: dict[str, str] = field(default_factory=dict)


@dataclass
class Context:
    """Everything the sections share for one run, and what must be cleaned up after it."""

    options: Options
    run_dir: Path = field(init=False)
    started: float = field(default_factory=time.monotonic)
    postgres_ok: bool = False
    postgres_reason: str | None = None
    postgres_version: str | None = None
    databases: list[tuple[str, str]] = field(default_factory=list)  # (engine, url)
    # Databases kept by the ingest section for the growth section: (engine, messages) -> info
    kept: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    # Datasets for queries and load: engine -> info
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)
    _dataset_locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.run_dir = Path(tempfile.mkdtemp(prefix="powerpulse-bench-"))
        (self.run_dir / "logs").mkdir()

    # -- logging -------------------------------------------------------------------
    def log(self, message: str) -> None:
        elapsed = time.monotonic() - self.started
        print(f"[bench {elapsed:7.1f}s] {message}", file=sys.stderr, flush=True)

    def log_path(self, name: str) -> Path:
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
        return self.run_dir / "logs" / f"{safe}-{uuid.uuid4().hex[:6]}.log"

    # -- commands -------------------------------------------------------------------
    @property
    def python(self) -> str:
        return sys.executable

    def powerpulse(self) -> list[str]:
        script = Path(sys.executable).with_name("powerpulse")
        if script.exists():
            return [str(script)]
        return [sys.executable, "-m", "powerpulse"]

    def env(self, database_url: str | None = None, **extra: str) -> dict[str, str]:
        """The environment of PowerPulse processes: the caller's, minus what would interfere."""
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("POWERPULSE_")
            and key not in ("DATABASE_URL", "OPENAI_API_KEY", "OPENAI_BASE_URL")
        }
        env.update(
            PYTHONPATH=os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
            PYTHONUNBUFFERED="1",
            POWERPULSE_LOG_LEVEL="WARNING",
            POWERPULSE_ANALYZER="lexicon",
            POWERPULSE_AUTH_DISABLED="1",
            # Raised limits: the benchmark measures throughput, not the limiter.
            POWERPULSE_RATE_LIMIT_PER_MINUTE="0",
            POWERPULSE_UPLOAD_RATE_LIMIT_PER_HOUR="0",
            POWERPULSE_MAX_UPLOAD_BYTES=str(LARGE_UPLOAD_BYTES),
            POWERPULSE_REQUEST_TIMEOUT_SECONDS="3600",
        )
        env.update(self.options.settings)
        if database_url is not None:
            env["DATABASE_URL"] = database_url
        env.update(extra)
        return env

    async def run(
        self, name: str, command: Sequence[str], *, env: dict[str, str], limit: float = 3 * 3600
    ) -> Measured:
        """Run a command to completion in the run directory; killed after `limit` seconds."""
        log = self.log_path(name)
        return await asyncio.to_thread(
            run_measured, command, env=env, cwd=self.run_dir, log=log, timeout=limit
        )

    async def driver(
        self, command: str, *args: str, env: dict[str, str] | None = None, limit: float = 3 * 3600
    ) -> dict[str, Any]:
        """Run `python -m bench.driver COMMAND ...`; returns the JSON it wrote."""
        result_file = self.run_dir / f"result-{uuid.uuid4().hex}.json"
        measured = await self.run(
            f"driver-{command}",
            [self.python, "-m", "bench.driver", command, "--result", str(result_file), *args],
            env=env or self.env(),
            limit=limit,
        )
        measured.check(f"driver {command}")
        try:
            result: dict[str, Any] = json.loads(result_file.read_text())
        except (OSError, ValueError) as exc:
            raise BenchError(f"driver {command} wrote no result: {tail(measured.log)}") from exc
        finally:
            result_file.unlink(missing_ok=True)
        result["process_wall_seconds"] = measured.wall_seconds
        result["process_max_rss_bytes"] = measured.max_rss_bytes
        return result

    # -- databases ------------------------------------------------------------------
    def engines(self) -> list[str]:
        return [e for e in self.options.engines if e != "postgres" or self.postgres_ok]

    def skipped_engines_note(self) -> str | None:
        if "postgres" in self.options.engines and not self.postgres_ok:
            return f"PostgreSQL skipped: {self.postgres_reason}"
        return None

    def _admin_dsn(self) -> str:
        from sqlalchemy.engine import make_url

        url = make_url(self.options.postgres_admin_url).set(drivername="postgresql")
        return url.render_as_string(hide_password=False)

    def _postgres_url(self, name: str) -> str:
        from sqlalchemy.engine import make_url

        url = make_url(self.options.postgres_admin_url).set(
            drivername="postgresql+asyncpg", database=name
        )
        return url.render_as_string(hide_password=False)

    async def admin(self, statement: str) -> Any:
        import asyncpg

        connection = await asyncpg.connect(self._admin_dsn(), timeout=10)
        try:
            return await connection.fetchval(statement)
        finally:
            await connection.close()

    async def check_postgres(self) -> None:
        if "postgres" not in self.options.engines:
            return
        try:
            version = await self.admin("SHOW server_version")
        except Exception as exc:
            self.postgres_ok = False
            self.postgres_reason = f"{type(exc).__name__}: {exc}"
            return
        self.postgres_ok = True
        self.postgres_version = str(version)

    async def create_database(self, engine: str, label: str) -> str:
        """A new, empty database (no schema yet); dropped by drop_database or at exit."""
        name = f"pp_bench_{label}_{uuid.uuid4().hex[:8]}".lower()
        if engine == "sqlite":
            path = self.run_dir / f"{name}.db"
            url = f"sqlite+aiosqlite:///{path}"
        else:
            await self.admin(f'CREATE DATABASE "{name}"')
            url = self._postgres_url(name)
        self.databases.append((engine, url))
        return url

    async def clone_database(self, engine: str, url: str, label: str) -> str:
        """A copy of a database nobody is connected to."""
        name = f"pp_bench_{label}_{uuid.uuid4().hex[:8]}".lower()
        if engine == "sqlite":
            target = self.run_dir / f"{name}.db"
            await asyncio.to_thread(_copy_sqlite, sqlite_path(url), target)
            clone = f"sqlite+aiosqlite:///{target}"
        else:
            from sqlalchemy.engine import make_url

            template = make_url(url).database
            await self.admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
            clone = self._postgres_url(name)
        self.databases.append((engine, clone))
        return clone

    async def drop_database(self, engine: str, url: str) -> None:
        with contextlib.suppress(ValueError):
            self.databases.remove((engine, url))
        if engine == "sqlite":
            await asyncio.to_thread(_remove_sqlite, sqlite_path(url))
            return
        from sqlalchemy.engine import make_url

        name = make_url(url).database
        await self.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    async def database_size(self, engine: str, url: str) -> int | None:
        try:
            if engine == "sqlite":
                return await asyncio.to_thread(_sqlite_size, sqlite_path(url))
            from sqlalchemy.engine import make_url

            name = make_url(url).database
            return int(await self.admin(f"SELECT pg_database_size('{name}')"))
        except Exception:
            return None

    async def vacuum(self, engine: str, url: str) -> float | None:
        """VACUUM ANALYZE a PostgreSQL database (as autovacuum would soon after a bulk load)."""
        if engine != "postgres":
            return None
        import asyncpg
        from sqlalchemy.engine import make_url

        started = time.perf_counter()
        dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        connection = await asyncpg.connect(dsn, timeout=10)
        try:
            await connection.execute("VACUUM ANALYZE")
        finally:
            await connection.close()
        return time.perf_counter() - started

    @contextlib.asynccontextmanager
    async def fresh_database(self, engine: str, label: str) -> AsyncIterator[str]:
        url = await self.create_database(engine, label)
        try:
            yield url
        finally:
            await self.drop_database(engine, url)

    async def drop_all(self) -> list[str]:
        dropped = []
        for engine, url in list(self.databases):
            try:
                await self.drop_database(engine, url)
                dropped.append(url)
            except Exception as exc:  # keep cleaning up the others
                self.log(f"could not drop {url}: {exc}")
        return dropped

    # -- exports --------------------------------------------------------------------
    async def export(
        self, *, messages: int | None = None, chats: int | None = None, seed: int | None = None
    ) -> dict[str, Any]:
        """A synthetic export, generated once per (size, seed, generator version) and cached."""
        seed = self.options.seed if seed is None else seed
        kind, size = ("m", messages) if messages is not None else ("c", chats)
        assert size is not None
        self.options.cache_dir.mkdir(parents=True, exist_ok=True)
        stem = f"export-{kind}{size}-seed{seed}-gen{generator_version()}"
        path = self.options.cache_dir / f"{stem}.json"
        meta_path = self.options.cache_dir / f"{stem}.meta.json"
        if path.exists() and meta_path.exists():
            with contextlib.suppress(ValueError, OSError):
                meta = json.loads(meta_path.read_text())
                if meta.get("bytes") == path.stat().st_size:
                    return {**meta, "path": path, "cached": True}
        self.log(f"generating export {path.name}")
        from powerpulse.synthetic import write_export

        partial = path.with_suffix(".partial")
        started = time.perf_counter()
        summary = await asyncio.to_thread(
            write_export, partial, messages=messages, chats=chats, seed=seed
        )
        elapsed = time.perf_counter() - started
        partial.replace(path)
        meta = {
            "chats": summary.chats,
            "messages": summary.messages,
            "bytes": path.stat().st_size,
            "seed": seed,
            "generate_seconds": elapsed,
        }
        meta_path.write_text(json.dumps(meta))
        return {**meta, "path": path, "cached": False}

    # -- datasets for queries and load ----------------------------------------------
    async def dataset(self, engine: str) -> dict[str, Any]:
        """The analysed query dataset of an engine (query_chats chats), built once per run.

        With --reuse-datasets, a dataset built by an earlier run from the same code is used
        instead (and a new one is kept for the next run).
        """
        lock = self._dataset_locks.setdefault(engine, asyncio.Lock())
        async with lock:
            if engine in self.datasets:
                return self.datasets[engine]
            export = await self.export(chats=self.options.query_chats)
            kept = self._kept_dataset(engine, export) if self.options.reuse_datasets else None
            if kept is not None and kept["meta"].exists():
                self.log(f"reusing the {engine} query dataset {kept['url']}")
                info = {
                    "url": kept["url"],
                    "engine": engine,
                    "export": export,
                    "build": json.loads(kept["meta"].read_text()),
                    "reused": True,
                }
                self.datasets[engine] = info
                return info
            url = await self.create_database(engine, "dataset")
            self.log(
                f"building the {engine} query dataset: {export['chats']:,} chats, "
                f"{export['messages']:,} messages (ingest + lexicon analysis)"
            )
            result = await self.driver(
                "ingest",
                "--db",
                url,
                "--file",
                str(export["path"]),
                "--analyse",
                "--vacuum",
                env=self.env(),
            )
            if kept is not None:
                await self._keep_dataset(engine, url, kept)
                kept["meta"].write_text(json.dumps(result))
            info = {"url": url, "engine": engine, "export": export, "build": result}
            self.datasets[engine] = info
            return info

    def _kept_dataset(self, engine: str, export: dict[str, Any]) -> dict[str, Any]:
        """Where a reusable dataset of this export and this code lives."""
        digest = hashlib.sha256()
        source = Path(__file__).resolve().parents[1] / "src" / "powerpulse"
        writers = [
            *(source / "ingest").rglob("*.py"),
            *(source / "analysis").rglob("*.py"),
            *(source / "migrations").rglob("*.py"),
            source / "models.py",
            source / "services" / "ingest.py",
            source / "services" / "analysis.py",
            source / "services" / "conversation_metrics.py",
        ]
        for path in sorted(writers):
            digest.update(path.read_bytes())
        digest.update(f"{export['path'].name}".encode())
        key = digest.hexdigest()[:12]
        meta = self.options.cache_dir / f"dataset-{engine}-{key}.json"
        if engine == "sqlite":
            path = self.options.cache_dir / f"dataset-{key}.db"
            return {"url": f"sqlite+aiosqlite:///{path}", "meta": meta, "path": path}
        return {"url": self._postgres_url(f"pp_bench_keep_{key}"), "meta": meta}

    async def _keep_dataset(self, engine: str, url: str, kept: dict[str, Any]) -> None:
        if engine == "sqlite":
            await asyncio.to_thread(_copy_sqlite, sqlite_path(url), kept["path"])
            return
        from sqlalchemy.engine import make_url

        name = make_url(kept["url"]).database
        await self.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await self.admin(f'CREATE DATABASE "{name}" TEMPLATE "{make_url(url).database}"')


def sqlite_path(url: str) -> Path:
    from sqlalchemy.engine import make_url

    database = make_url(url).database
    if not database:
        raise BenchError(f"not a SQLite file URL: {url}")
    return Path(database)


def _copy_sqlite(source: Path, target: Path) -> None:
    shutil.copyfile(source, target)
    wal = Path(f"{source}-wal")
    if wal.exists():
        shutil.copyfile(wal, Path(f"{target}-wal"))


def _remove_sqlite(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal", ".worker.lock"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _sqlite_size(path: Path) -> int:
    return sum(
        Path(f"{path}{suffix}").stat().st_size
        for suffix in ("", "-wal")
        if Path(f"{path}{suffix}").exists()
    )


_GENERATOR_VERSION: str | None = None


def generator_version() -> str:
    """A short hash of the generator's source: a changed generator invalidates the cache."""
    global _GENERATOR_VERSION
    if _GENERATOR_VERSION is None:
        import powerpulse.synthetic as synthetic

        source = Path(synthetic.__file__).read_bytes()
        _GENERATOR_VERSION = hashlib.sha256(source).hexdigest()[:10]
    return _GENERATOR_VERSION


def bench_settings(database_url: str, **overrides: Any) -> Any:
    """Settings for an in-process app or state: no auth, lexicon, limits raised."""
    from powerpulse.settings import Settings

    values: dict[str, Any] = {
        "database_url": database_url,
        "auth_disabled": True,
        "analyzer": "lexicon",
        "log_level": "WARNING",
        "max_upload_bytes": LARGE_UPLOAD_BYTES,
        # Unknown names are ignored by Settings (extra="ignore"): harmless on older versions.
        "rate_limit_per_minute": 0,
        "upload_rate_limit_per_hour": 0,
        "request_timeout_seconds": 3600,
    }
    values.update(overrides)
    return Settings(**values)


@contextlib.asynccontextmanager
async def inprocess_client(database_url: str, **overrides: Any) -> AsyncIterator[tuple[Any, Any]]:
    """An httpx client bound to the ASGI app in this process (lifespan run), and its AppState."""
    import httpx
    from asgi_lifespan import LifespanManager

    from powerpulse.app import create_app

    app = create_app(bench_settings(database_url, **overrides), run_worker=False)
    async with LifespanManager(app, startup_timeout=300, shutdown_timeout=120) as manager:
        lifespan_state: dict[str, Any] = manager._state

        async def with_state(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] in ("http", "websocket"):
                # As uvicorn does: each request sees a shallow copy of the lifespan state.
                scope = {**scope, "state": dict(lifespan_state)}
            await app(scope, receive, send)

        transport = httpx.ASGITransport(app=with_state)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://bench.local", timeout=3600
        ) as client:
            yield client, lifespan_state["powerpulse"]


class StatementCounter:
    """Counts SQL statements sent through an engine (before_cursor_execute)."""

    def __init__(self, engine: Any) -> None:
        from sqlalchemy import event

        self.count = 0
        self._engine = engine.sync_engine if hasattr(engine, "sync_engine") else engine
        self._event = event
        event.listen(self._engine, "before_cursor_execute", self._before)

    def _before(self, *args: Any, **kwargs: Any) -> None:
        self.count += 1

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._event.remove(self._engine, "before_cursor_execute", self._before)


@contextlib.asynccontextmanager
async def serve(
    ctx: Context,
    database_url: str,
    *,
    label: str,
    worker: bool,
    env_extra: dict[str, str] | None = None,
    processes: int = 1,
) -> AsyncIterator[tuple[Service, str]]:
    """`powerpulse serve` on a free loopback port; yields (service, base URL); always stopped."""
    import httpx

    last_error: Exception | None = None
    for _attempt in range(3):
        port = free_port()
        command = [
            *ctx.powerpulse(),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--migrate",
        ]
        if not worker:
            command.append("--no-worker")
        if processes > 1:
            command.extend(["--processes", str(processes)])
        service = Service(
            f"serve-{label}",
            command,
            env=ctx.env(database_url, **(env_extra or {})),
            cwd=ctx.run_dir,
            log=ctx.log_path(f"serve-{label}"),
        )
        base_url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 300
            async with httpx.AsyncClient(base_url=base_url, timeout=5) as client:
                while True:
                    if not service.alive():
                        raise BenchError(
                            f"serve exited with {service.process.returncode}: {tail(service.log)}"
                        )
                    with contextlib.suppress(httpx.HTTPError):
                        if (await client.get("/health")).status_code == 200:
                            break
                    if time.monotonic() > deadline:
                        raise BenchError(f"serve did not become healthy: {tail(service.log)}")
                    await asyncio.sleep(0.1)
        except BenchError as exc:
            await service.stop(grace=5)
            last_error = exc
            if "address already in use" in str(exc).lower():
                continue
            raise
        try:
            yield service, base_url
        finally:
            await service.stop()
        return
    raise BenchError(f"could not start serve: {last_error}")

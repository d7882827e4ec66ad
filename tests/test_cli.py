"""The `powerpulse` command run as a user runs it: a subprocess with its own environment."""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from powerpulse.supervisor import STARTUP_SECONDS

pytestmark = pytest.mark.slow

READY_TIMEOUT_SECONDS = 45.0
COMMAND_TIMEOUT_SECONDS = 120.0

# Two chats, four stored messages; the bot's "*977#" message is an autoresponse.
EXPORT = {
    "chat-a": [
        {"DIRECTION": "to_company", "SOCIAL_CREATE_TIME": "2025-05-01T08:00:00Z",
         "MESSAGE_CONTENT": "my token did not arrive", "UNIQUE_POST_ID": "a-1"},
        {"DIRECTION": "to_client", "SOCIAL_CREATE_TIME": "2025-05-01T08:00:02Z",
         "MESSAGE_CONTENT": "Dial *977# to buy tokens"},
        {"DIRECTION": "to_client", "SOCIAL_CREATE_TIME": "2025-05-01T08:06:00Z",
         "MESSAGE_CONTENT": "Let me check that", "AGENT_USERNAME": "jane"},
    ],
    "chat-b": [
        {"DIRECTION": "to_company", "SOCIAL_CREATE_TIME": "2025-05-02T09:00:00Z",
         "MESSAGE_CONTENT": "hello"},
        {"DIRECTION": "to_client", "SOCIAL_CREATE_TIME": "2025-05-02T09:01:00Z",
         "MESSAGE_CONTENT": "hi", "AGENT_EMAIL": "bob@example.com"},
    ],
}  # fmt: skip


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    """The inherited environment minus PowerPulse settings, on a fresh SQLite file."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("POWERPULSE_", "OPENAI_")) and name != "DATABASE_URL"
    }
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'cli.db'}"
    env["POWERPULSE_ANALYZER"] = "lexicon"  # offline and deterministic
    env["POWERPULSE_AUTH_DISABLED"] = "1"  # the server binds to loopback only
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "powerpulse", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_SECONDS,
        check=False,
    )


def report_value(stdout: str, label: str) -> int:
    match = re.search(rf"{label}\W+([\d,]+)", stdout)
    assert match, f"no {label!r} in the report:\n{stdout}"
    return int(match.group(1).replace(",", ""))


# Uploads this small are read in a thread unless every upload is parsed in a process.
PARSE_MODES = {
    "thread": {"POWERPULSE_INGEST_PARSE_PROCESS": "false"},
    "process": {"POWERPULSE_INGEST_PROCESS_MIN_MIB": "0"},
}


@pytest.mark.parametrize("parse_env", PARSE_MODES.values(), ids=PARSE_MODES.keys())
def test_ingest_prints_the_report_and_exits_zero(
    tmp_path: Path, cli_env: dict[str, str], parse_env: dict[str, str]
) -> None:
    cli_env.update(parse_env)
    export = tmp_path / "export.json"
    export.write_text(json.dumps(EXPORT))

    first = run_cli("ingest", str(export), "--quiet", env=cli_env, cwd=tmp_path)

    assert first.returncode == 0, first.stderr
    assert "Upload report" in first.stdout
    assert report_value(first.stdout, "conversations received") == 2
    assert report_value(first.stdout, "messages received") == 5
    assert report_value(first.stdout, "messages stored") == 4
    assert report_value(first.stdout, "autoresponses filtered") == 1
    assert "Traceback" not in first.stderr

    # The data is in the database the environment names: a second run finds it there.
    second = run_cli("ingest", str(export), "--quiet", env=cli_env, cwd=tmp_path)

    assert second.returncode == 0, second.stderr
    assert report_value(second.stdout, "messages stored") == 0
    assert report_value(second.stdout, "duplicates skipped") == 4


@pytest.mark.parametrize("parse_env", PARSE_MODES.values(), ids=PARSE_MODES.keys())
def test_ingest_of_a_broken_file_exits_one_with_a_message_on_stderr(
    tmp_path: Path, cli_env: dict[str, str], parse_env: dict[str, str]
) -> None:
    cli_env.update(parse_env)
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(EXPORT)[:-25])

    result = run_cli("ingest", str(broken), "--quiet", env=cli_env, cwd=tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{broken} was not ingested" in result.stderr
    assert "not valid JSON" in result.stderr
    assert "Traceback" not in result.stderr
    assert "Upload report" not in result.stdout


def test_ingest_of_a_missing_file_says_so(tmp_path: Path, cli_env: dict[str, str]) -> None:
    result = run_cli("ingest", str(tmp_path / "nope.json"), env=cli_env, cwd=tmp_path)

    assert result.returncode != 0
    assert "no such file" in result.stderr
    assert "Traceback" not in result.stderr


def test_export_schema_prints_the_sdl(tmp_path: Path, cli_env: dict[str, str]) -> None:
    result = run_cli("export-schema", env=cli_env, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert "type Query" in result.stdout
    assert "uploadChats(" in result.stdout


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_until_healthy(
    process: subprocess.Popen[bytes], base_url: str, log: Path
) -> dict[str, str]:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"serve exited with {process.returncode}:\n{log.read_text()}")
        try:
            response = httpx.get(f"{base_url}/health", timeout=2)
            if response.status_code == 200:
                return response.json()  # type: ignore[no-any-return]
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    pytest.fail(f"serve was not healthy within {READY_TIMEOUT_SECONDS}s:\n{log.read_text()}")


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as handle:
            found.extend(int(child) for child in handle.read().split())
    return found


def _command_line(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process tree from /proc")
def test_serve_with_several_processes_shares_the_port_and_one_analyses(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "powerpulse", "serve", "--port", str(port), "--processes", "2"],
            env=cli_env,
            cwd=tmp_path,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_until_healthy(process, base_url, log)
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while log.read_text().count("Application startup complete") < 2:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        servers = [pid for pid in _children(process.pid) if "spawn_main" in _command_line(pid)]
        assert len(servers) == 2, [_command_line(pid) for pid in _children(process.pid)]
        # On SQLite exactly one of them analyses; the other says it serves without.
        assert log.read_text().count("serving without an analysis worker") == 1

        upload = httpx.post(
            f"{base_url}/graphql",
            data={
                "operations": json.dumps(
                    {
                        "query": "mutation($f: Upload!) { uploadChats(file: $f) "
                        "{ messagesStored job { id } } }",
                        "variables": {"f": None},
                    }
                ),
                "map": json.dumps({"0": ["variables.f"]}),
            },
            files={"0": ("export.json", json.dumps(EXPORT).encode(), "application/json")},
            headers={"Apollo-Require-Preflight": "true"},
            timeout=30,
        )
        assert upload.status_code == 200, upload.text
        job_id = upload.json()["data"]["uploadChats"]["job"]["id"]
        # Whichever process answers, every one sees the upload and its analysis.
        query = (
            "query($id: ID!) { job(id: $id) { status } "
            "metrics { totalConversations analyzedConversations } }"
        )
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while True:
            answers = [
                httpx.post(
                    f"{base_url}/graphql",
                    json={"query": query, "variables": {"id": job_id}},
                    timeout=10,
                ).json()["data"]
                for _ in range(6)
            ]
            # Analytics may trail the analysis by POWERPULSE_ANALYTICS_STALENESS_SECONDS.
            if all(
                answer["job"]["status"] == "SUCCEEDED"
                and answer["metrics"]["analyzedConversations"] == 2
                for answer in answers
            ):
                break
            assert time.monotonic() < deadline, answers
            time.sleep(0.2)
        assert {answer["metrics"]["totalConversations"] for answer in answers} == {2}
        assert {answer["metrics"]["analyzedConversations"] for answer in answers} == {2}

        process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=30)
        output = log.read_text()
        assert returncode in (0, -signal.SIGTERM), output
        assert output.count("Application shutdown complete") == 2
        assert "Traceback" not in output
        assert not any(Path(f"/proc/{pid}").exists() for pid in servers)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def test_serve_with_demo_data_answers_graphql_and_stops_on_sigterm(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "powerpulse", "serve", "--port", str(port), "--demo"],
            env=cli_env,
            cwd=tmp_path,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        health = _wait_until_healthy(process, base_url, log)
        assert health["status"] == "ok"
        assert health["database"] == "ok"

        response = httpx.post(
            f"{base_url}/graphql",
            json={"query": "{ metrics { totalConversations totalMessages } }"},
            timeout=10,
        )

        assert response.status_code == 200, response.text
        body = response.json()
        assert "errors" not in body, body
        assert body["data"]["metrics"]["totalConversations"] > 0
        assert body["data"]["metrics"]["totalMessages"] > 0

        process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=30)
        output = log.read_text()
        # Uvicorn shuts down gracefully, then re-raises the signal it caught.
        assert returncode in (0, -signal.SIGTERM), output
        assert "Application shutdown complete" in output
        assert "Traceback" not in output
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def _get_on(connection: socket.socket) -> bytes:
    """GET /health on an open keep-alive connection: the whole response, or b"" when the
    server has closed the connection."""
    received = b""
    try:
        connection.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        while True:
            head, separator, body = received.partition(b"\r\n\r\n")
            if separator:
                length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                if length and len(body) >= int(length.group(1)):
                    return received
            chunk = connection.recv(65536)
            if not chunk:
                return received
            received += chunk
    except (BrokenPipeError, ConnectionResetError):
        return b""


@pytest.mark.parametrize("processes", ["1", "2"])
def test_serve_keeps_idle_connections_for_the_configured_time(
    tmp_path: Path, cli_env: dict[str, str], processes: str
) -> None:
    """A proxy in front reuses idle connections: the server must not close them first."""
    env = {**cli_env, "POWERPULSE_KEEP_ALIVE_SECONDS": "3"}
    with (
        _serving(tmp_path, env, int(processes)) as serving,
        socket.create_connection(("127.0.0.1", serving.port), timeout=10) as connection,
    ):
        assert _get_on(connection).startswith(b"HTTP/1.1 200")
        time.sleep(1.5)  # idle, within the configured 3 s: still open
        assert _get_on(connection).startswith(b"HTTP/1.1 200")
        # Idle past the configured 3 s (uvicorn's own default of 5 s would keep it).
        time.sleep(4.5)
        assert _get_on(connection) == b""


# --------------------------------------------------------------- serve --processes N


@dataclass
class Serving:
    """`serve --no-worker --processes N` running: the command, its port, log and processes."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path
    servers: list[int]


@contextlib.contextmanager
def _serving(tmp_path: Path, env: dict[str, str], processes: int = 2) -> Iterator[Serving]:
    """`serve --no-worker --processes N` on a free port, healthy, with its N processes
    (none of their own when N is 1); killed, with its processes, when the block ends."""
    port = _free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "powerpulse", "serve", "--port", str(port)),
                *("--no-worker", "--processes", str(processes)),
            ],
            env=env,
            cwd=tmp_path,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    servers: list[int] = []
    try:
        _wait_until_healthy(process, f"http://127.0.0.1:{port}", log)
        servers = _api_processes(process, log, processes) if processes > 1 else []
        yield Serving(process, port, log, servers)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        for pid in servers:  # a test that failed half-way may leave them behind
            if _running(pid) and "spawn_main" in _command_line(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def _api_processes(process: subprocess.Popen[bytes], log: Path, count: int) -> list[int]:
    """The pids of the `count` API processes under `serve`, once each has started."""
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while True:
        servers = [pid for pid in _children(process.pid) if "spawn_main" in _command_line(pid)]
        if len(servers) == count and log.read_text().count("Application startup complete") >= count:
            return servers
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, (servers, log.read_text())
        time.sleep(0.2)


def _running(pid: int) -> bool:
    """Whether the process exists and has not ended (a zombie waiting to be reaped has)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _established(pid: int, port: int) -> int:
    """How many established TCP connections on `port` the process holds (read from /proc)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as handle:
            next(handle)
            for line in handle:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                established = state == "01"
                if established and int(local.rsplit(":", 1)[1], 16) == port and inode in inodes:
                    count += 1
    return count


def _connect_together(port: int, count: int) -> list[socket.socket]:
    """`count` connections started at once, as many clients reconnecting together do."""
    connections = []
    for _ in range(count):
        connection = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        connection.setblocking(False)
        connection.connect_ex(("127.0.0.1", port))
        connections.append(connection)
    for connection in connections:
        _, writable, _ = select.select([], [connection], [], 10)
        assert writable, "a connection was not established within 10 s"
        assert connection.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
        connection.setblocking(True)
        connection.settimeout(10)
    return connections


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process tree from /proc")
def test_serve_processes_share_connections_opened_together(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """Keep-alive clients that connect at the same moment are spread over the processes.

    With one listening socket shared by every process, the process that woke first took
    every waiting connection, and the other served none of them.
    """
    connections: list[socket.socket] = []
    with _serving(tmp_path, cli_env) as serving:
        try:
            connections = _connect_together(serving.port, 100)
            for connection in connections:  # every one accepted and answered
                assert _get_on(connection).startswith(b"HTTP/1.1 200")

            held = {pid: _established(pid, serving.port) for pid in serving.servers}
        finally:
            for connection in connections:
                connection.close()

    assert sum(held.values()) == 100, held
    # The kernel picks a socket for each connection at random (by its addresses and
    # ports): fewer than 25 of 100 on one of two happens about once in 10^6 runs.
    assert min(held.values()) >= 25, held


def test_serve_processes_refuse_a_port_another_server_listens_on(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """A second `serve --processes` on a busy port must not join the first one's sockets."""
    with _serving(tmp_path, cli_env) as first:
        second = run_cli(
            "serve", "--port", str(first.port), "--no-worker", "--processes", "2",
            env=cli_env, cwd=tmp_path,
        )  # fmt: skip

        assert second.returncode == 1, second.stdout + second.stderr
        assert f"cannot listen on 127.0.0.1:{first.port}" in second.stderr
        assert "in use" in second.stderr
        assert "Traceback" not in second.stderr
        assert first.process.poll() is None


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process tree from /proc")
def test_serve_processes_replace_one_that_dies_and_stop_together(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    with _serving(tmp_path, cli_env) as serving:
        process, log, servers = serving.process, serving.log, serving.servers
        # Past the time in which a process that stops counts as failing to start.
        time.sleep(STARTUP_SECONDS + 0.5)

        os.kill(servers[0], signal.SIGKILL)
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while True:
            now = [pid for pid in _children(process.pid) if "spawn_main" in _command_line(pid)]
            if len(now) == 2 and servers[0] not in now and servers[1] in now:
                break
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, (now, log.read_text())
            time.sleep(0.2)
        assert f"API process {servers[0]} stopped (exit code -9); starting another" in (
            log.read_text()
        )
        replacement = next(pid for pid in now if pid != servers[1])
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while log.read_text().count("Application startup complete") < 3:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        for _ in range(10):
            response = httpx.get(f"http://127.0.0.1:{serving.port}/health", timeout=5)
            assert response.status_code == 200

        process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=30)

    output = log.read_text()
    assert returncode == 0, output
    assert output.count("Application shutdown complete") == 2, output
    assert not any(_running(pid) for pid in (servers[1], replacement))
    assert "Traceback" not in output


def _run_python(
    script: str, *args: str, env: dict[str, str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    """`python -c script args...` to its end, its output captured."""
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=READY_TIMEOUT_SECONDS,
    )


def test_serve_processes_stop_when_one_cannot_start(tmp_path: Path) -> None:
    """An app that fails as it starts ends the command, instead of being restarted forever."""
    (tmp_path / "broken_app.py").write_text(
        "def create():\n    raise RuntimeError('this app cannot start')\n"
    )
    script = (
        "import sys\n"
        "from powerpulse.supervisor import ServeOptions, Supervisor, claim_port\n"
        "options = ServeOptions(host='127.0.0.1', port=claim_port('127.0.0.1', 0),\n"
        "    log_level='info', proxy_headers=False, keep_alive_seconds=5,\n"
        "    app='broken_app:create')\n"
        "sys.exit(Supervisor(options, 2).run())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}

    result = _run_python(script, env=env, cwd=tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "stopped while starting (exit code 3); stopping" in result.stderr
    assert "this app cannot start" in result.stderr


def test_serve_processes_need_a_port_that_can_be_shared(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """Where the system has no SO_REUSEPORT, `--processes` says so instead of starting."""
    script = (
        "import socket, sys\n"
        "del socket.SO_REUSEPORT\n"
        "from powerpulse.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    port = str(_free_port())

    result = _run_python(
        script, "serve", "--port", port, "--processes", "2", env=cli_env, cwd=tmp_path
    )

    assert result.returncode == 2, result.stdout + result.stderr
    assert "--processes needs SO_REUSEPORT" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process tree from /proc")
def test_serve_processes_stop_when_their_supervisor_is_killed(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """Processes left behind would keep the port: the next `serve` could not start."""
    from powerpulse.supervisor import claim_port

    with _serving(tmp_path, cli_env) as serving:
        serving.process.kill()
        serving.process.wait(timeout=10)

        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while any(_running(pid) for pid in serving.servers):
            assert time.monotonic() < deadline, serving.log.read_text()
            time.sleep(0.2)

    assert claim_port("127.0.0.1", serving.port) == serving.port
    output = serving.log.read_text()
    assert output.count("the supervising process has gone") == 2, output
    assert output.count("Application shutdown complete") == 2, output

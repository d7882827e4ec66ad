"""The `powerpulse` command run as a user runs it: a subprocess with its own environment."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

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
    port = _free_port()
    log = tmp_path / "serve.log"
    env = {**cli_env, "POWERPULSE_KEEP_ALIVE_SECONDS": "3"}
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "powerpulse", "serve", "--port", str(port)),
                *("--no-worker", "--processes", processes),
            ],
            env=env,
            cwd=tmp_path,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_until_healthy(process, f"http://127.0.0.1:{port}", log)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
            assert _get_on(connection).startswith(b"HTTP/1.1 200")
            time.sleep(1.5)  # idle, within the configured 3 s: still open
            assert _get_on(connection).startswith(b"HTTP/1.1 200")
            # Idle past the configured 3 s (uvicorn's own default of 5 s would keep it).
            time.sleep(4.5)
            assert _get_on(connection) == b""
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

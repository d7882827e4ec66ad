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


def test_ingest_prints_the_report_and_exits_zero(tmp_path: Path, cli_env: dict[str, str]) -> None:
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


def test_ingest_of_a_broken_file_exits_one_with_a_message_on_stderr(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
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

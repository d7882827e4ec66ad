"""Tenants and API keys: the TenantAdmin service, the Authenticator, the settings cache, and
the `powerpulse tenant` / `powerpulse apikey` commands run as a user runs them (a subprocess
on a SQLite file) whose keys are then used over HTTP against an app on the same file.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import select

from powerpulse.app import create_app
from powerpulse.db import Database, create_engine
from powerpulse.errors import BadUserInput, ConfigurationError, NotFound
from powerpulse.migrate import prepare_schema
from powerpulse.models import ApiKey
from powerpulse.services import tenants as tenants_module
from powerpulse.services.tenants import (
    Authenticator,
    Principal,
    TenantAdmin,
    TenantDirectory,
    hash_key,
)
from powerpulse.settings import Settings

KEY_PATTERN = re.compile(r"^pp_[A-Za-z0-9_-]{43,}$")
COMMAND_TIMEOUT_SECONDS = 120.0
METRICS = "{ metrics { totalConversations totalMessages } }"
# One chat: a bot line matching the default autoresponse pattern, one "Please rate us" bot
# line, and a 30-hour silence. It starts at 22:30 UTC on 5 March: 6 March in Nairobi.
EXPORT = {
    "chat-a": [
        {"DIRECTION": "to_company", "SOCIAL_CREATE_TIME": "2025-03-05T22:30:00Z",
         "MESSAGE_CONTENT": "my token did not arrive"},
        {"DIRECTION": "to_client", "SOCIAL_CREATE_TIME": "2025-03-05T22:30:02Z",
         "MESSAGE_CONTENT": "Dial *977# to buy tokens"},
        {"DIRECTION": "to_client", "SOCIAL_CREATE_TIME": "2025-03-05T22:36:00Z",
         "MESSAGE_CONTENT": "Let me check that", "AGENT_USERNAME": "jane"},
        {"DIRECTION": "to_client", "SOCIAL_CREATE_TIME": "2025-03-05T22:37:00Z",
         "MESSAGE_CONTENT": "Please rate us"},
        {"DIRECTION": "to_company", "SOCIAL_CREATE_TIME": "2025-03-07T04:37:00Z",
         "MESSAGE_CONTENT": "it arrived, thanks"},
    ],
}  # fmt: skip


def database_bytes(sqlite_file: Path) -> bytes:
    """The SQLite file and any journal or write-ahead log beside it."""
    files = sorted(sqlite_file.parent.glob(sqlite_file.name + "*"))
    assert sqlite_file in files
    return b"".join(path.read_bytes() for path in files)


def secret_bytes(key: str) -> bytes:
    body = key.removeprefix("pp_")
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))


# -- the service -------------------------------------------------------------------------


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    database = Database(create_engine(Settings(database_url=database_url, env="test")))
    try:
        await prepare_schema(database.engine, migrate=True)
        yield database
    finally:
        await database.dispose()


@pytest.fixture
def service_settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, env="test", timezone="Africa/Nairobi")


@pytest.fixture
def admin(database: Database, service_settings: Settings) -> TenantAdmin:
    return TenantAdmin(database, service_settings)


async def stored_key_rows(database: Database) -> list[dict[str, Any]]:
    async with database.read() as connection:
        rows = await connection.execute(select(ApiKey.__table__))  # type: ignore[attr-defined]
        return [dict(row) for row in rows.mappings()]


async def test_a_new_tenants_first_key_authenticates_as_that_tenant_read_write(
    admin: TenantAdmin, database: Database
) -> None:
    tenant_id, key_id, key = await admin.create_tenant("acme")
    other_id, _, other_key = await admin.create_tenant("bolt")
    authenticator = Authenticator(database)

    assert tenant_id != other_id
    assert await authenticator.authenticate(key) == Principal(tenant_id, False, key_id)
    principal = await authenticator.authenticate(other_key)
    assert principal is not None
    assert principal.tenant_id == other_id


async def test_a_read_only_key_authenticates_as_read_only(
    admin: TenantAdmin, database: Database
) -> None:
    tenant_id, _, _ = await admin.create_tenant("acme")
    key_id, key = await admin.create_key("acme", read_only=True)

    assert await Authenticator(database).authenticate(key) == Principal(tenant_id, True, key_id)


async def test_keys_are_random_pp_prefixed_and_carry_at_least_32_bytes(
    admin: TenantAdmin,
) -> None:
    _, _, first = await admin.create_tenant("acme")
    keys = [first] + [(await admin.create_key("acme", read_only=False))[1] for _ in range(20)]

    assert len(set(keys)) == len(keys)
    for key in keys:
        assert KEY_PATTERN.match(key), key
        assert len(secret_bytes(key)) >= 32
    # No shared stem beyond what chance allows: keys are not counters or timestamps.
    assert len({key[:8] for key in keys}) > len(keys) // 2


async def test_only_a_hash_and_a_short_prefix_of_a_key_are_stored(
    admin: TenantAdmin, database: Database
) -> None:
    _, _, key = await admin.create_tenant("acme")
    _, read_only_key = await admin.create_key("acme", read_only=True)

    rows = await stored_key_rows(database)

    assert len(rows) == 2
    for row, plain in zip(rows, (key, read_only_key), strict=True):
        assert row["key_hash"] == hashlib.sha256(plain.encode()).hexdigest() == hash_key(plain)
        assert row["prefix"] == plain[:10]
        for column, value in row.items():
            assert plain not in str(value), column
            assert plain[10:] not in str(value), column


async def test_a_revoked_key_no_longer_authenticates(
    admin: TenantAdmin, database: Database
) -> None:
    _, key_id, key = await admin.create_tenant("acme")
    _, other_key = await admin.create_key("acme", read_only=False)
    authenticator = Authenticator(database)
    assert await authenticator.authenticate(key) is not None

    await admin.revoke_key(key_id)

    assert await authenticator.authenticate(key) is None
    assert await authenticator.authenticate(other_key) is not None
    rows = {row["id"]: row for row in await admin.keys("acme")}
    assert rows[key_id]["revoked_at"] is not None


async def test_revoking_an_unknown_or_already_revoked_key_is_not_found(
    admin: TenantAdmin,
) -> None:
    _, key_id, _ = await admin.create_tenant("acme")
    await admin.revoke_key(key_id)

    with pytest.raises(NotFound):
        await admin.revoke_key(key_id)
    with pytest.raises(NotFound):
        await admin.revoke_key(key_id + 1000)


async def test_key_listing_filters_by_tenant_and_holds_no_secret(admin: TenantAdmin) -> None:
    _, acme_id, acme_key = await admin.create_tenant("acme")
    read_only_id, _ = await admin.create_key("acme", read_only=True)
    _, bolt_id, bolt_key = await admin.create_tenant("bolt")

    everything = await admin.keys()
    acme = await admin.keys("acme")

    assert [row["id"] for row in everything] == [acme_id, read_only_id, bolt_id]
    assert [(row["id"], row["tenant"], row["read_only"]) for row in acme] == [
        (acme_id, "acme", False),
        (read_only_id, "acme", True),
    ]
    for row in everything:
        assert "key_hash" not in row
        for value in row.values():
            assert acme_key not in str(value)
            assert bolt_key not in str(value)
    with pytest.raises(NotFound):
        await admin.keys("nobody")


@pytest.mark.parametrize(
    "name", ["", "-acme", ".acme", "has space", "semi;colon", "a" * 101, "ümlaut", "acme\n"]
)
async def test_a_tenant_name_must_be_letters_digits_dots_dashes_or_underscores(
    admin: TenantAdmin, name: str
) -> None:
    with pytest.raises(BadUserInput):
        await admin.create_tenant(name)

    assert await admin.tenants() == []


async def test_tenant_names_are_unique(admin: TenantAdmin) -> None:
    await admin.create_tenant("acme.co_2-x")

    with pytest.raises(BadUserInput, match="already exists"):
        await admin.create_tenant("acme.co_2-x")
    assert [tenant.name for tenant in await admin.tenants()] == ["acme.co_2-x"]
    assert len(await admin.keys()) == 1


async def test_a_key_for_an_unknown_tenant_is_not_found(admin: TenantAdmin) -> None:
    with pytest.raises(NotFound):
        await admin.create_key("nobody", read_only=True)


async def test_a_new_tenant_has_the_deployments_settings(
    admin: TenantAdmin, service_settings: Settings
) -> None:
    await admin.create_tenant("acme")

    (tenant,) = await admin.tenants()

    assert tenant.timezone == "Africa/Nairobi"
    assert tenant.autoresponse_patterns == tuple(service_settings.autoresponse_patterns)
    assert tenant.session_gap_hours == service_settings.session_gap_hours
    assert tenant.topics_file == service_settings.topics_file


async def test_configure_sets_a_tenants_own_settings_and_empty_values_restore_defaults(
    admin: TenantAdmin, service_settings: Settings, tmp_path: Path
) -> None:
    taxonomy = tmp_path / "topics.json"
    taxonomy.write_text(json.dumps({"version": 1, "topics": {"meters": ["meter"]}}))
    await admin.create_tenant("acme")
    await admin.create_tenant("bolt")

    own = await admin.configure(
        "acme",
        timezone="Asia/Tokyo",
        autoresponse_patterns=[" Please rate us ", "", "  ", "*977#"],
        topics_file=str(taxonomy),
        session_gap_hours=0.5,
    )

    assert (own.timezone, own.autoresponse_patterns, own.topics_file, own.session_gap_hours) == (
        "Asia/Tokyo",
        ("Please rate us", "*977#"),
        str(taxonomy),
        0.5,
    )
    # Only the named tenant changes, and only the settings that were given.
    acme, bolt = await admin.tenants()
    assert acme == own
    assert bolt.timezone == "Africa/Nairobi"
    partial = await admin.configure("acme", session_gap_hours=72)
    assert (partial.timezone, partial.session_gap_hours) == ("Asia/Tokyo", 72)

    reset = await admin.configure(
        "acme", timezone="", autoresponse_patterns=[], topics_file="", session_gap_hours=0
    )

    assert reset.timezone == "Africa/Nairobi"
    assert reset.autoresponse_patterns == tuple(service_settings.autoresponse_patterns)
    assert reset.topics_file == service_settings.topics_file
    assert reset.session_gap_hours == service_settings.session_gap_hours


@pytest.mark.parametrize(
    ("values", "error"),
    [
        ({"timezone": "Mars/Olympus_Mons"}, BadUserInput),
        ({"timezone": "../etc/passwd"}, BadUserInput),
        ({"session_gap_hours": -1.0}, BadUserInput),
        ({"topics_file": "/nonexistent/topics.json"}, ConfigurationError),
        ({"topics_file": "BROKEN"}, ConfigurationError),
        ({"topics_file": "WRONG_VERSION"}, ConfigurationError),
    ],
)
async def test_configure_refuses_bad_values_and_changes_nothing(
    admin: TenantAdmin, tmp_path: Path, values: dict[str, Any], error: type[Exception]
) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"version": 1, "topics": ')
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"version": 2, "topics": {"a": ["b"]}}))
    files = {"BROKEN": str(broken), "WRONG_VERSION": str(wrong)}
    values = {name: files.get(value, value) for name, value in values.items()}
    await admin.create_tenant("acme")
    (before,) = await admin.tenants()

    with pytest.raises(error):
        await admin.configure("acme", **values)

    assert await admin.tenants() == [before]


async def test_configuring_an_unknown_tenant_is_not_found(admin: TenantAdmin) -> None:
    with pytest.raises(NotFound):
        await admin.configure("nobody", timezone="UTC")


@pytest.mark.parametrize(
    "presented",
    ["", "pp_", "Bearer {key}", "{key} ", "{key}x", "{body}", "PP_{body}", "pp_{body}" + "x" * 300],
)
async def test_only_the_exact_key_authenticates(
    admin: TenantAdmin, database: Database, presented: str
) -> None:
    _, _, key = await admin.create_tenant("acme")
    attempt = presented.format(key=key, body=key.removeprefix("pp_"))

    assert await Authenticator(database).authenticate(attempt) is None


async def test_authenticating_records_the_keys_last_use(
    admin: TenantAdmin, database: Database
) -> None:
    _, _, key = await admin.create_tenant("acme")
    (before,) = await admin.keys("acme")
    assert before["last_used_at"] is None

    await Authenticator(database).authenticate(key)

    (after,) = await admin.keys("acme")
    assert after["last_used_at"] is not None
    assert after["last_used_at"] >= after["created_at"]


async def test_tenant_settings_are_cached_for_a_while_then_read_again(
    admin: TenantAdmin,
    database: Database,
    service_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tenant_id, _, _ = await admin.create_tenant("acme")
    directory = TenantDirectory(database, service_settings)
    assert (await directory.get(tenant_id)).timezone == "Africa/Nairobi"

    await admin.configure("acme", timezone="Asia/Tokyo")

    assert (await directory.get(tenant_id)).timezone == "Africa/Nairobi"
    assert tenants_module.TENANT_CACHE_SECONDS == 15.0
    monkeypatch.setattr(tenants_module, "TENANT_CACHE_SECONDS", 0.0)
    assert (await directory.get(tenant_id)).timezone == "Asia/Tokyo"


async def test_the_directory_refuses_an_unknown_tenant(
    database: Database, service_settings: Settings
) -> None:
    with pytest.raises(NotFound):
        await TenantDirectory(database, service_settings).get(999)


# -- the commands ------------------------------------------------------------------------


@pytest.fixture
def sqlite_file(tmp_path: Path) -> Path:
    return tmp_path / "tenants.db"


@pytest.fixture
def cli_env(sqlite_file: Path) -> dict[str, str]:
    """The inherited environment minus PowerPulse settings, on a fresh SQLite file."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("POWERPULSE_", "OPENAI_")) and name != "DATABASE_URL"
    }
    env["DATABASE_URL"] = f"sqlite:///{sqlite_file}"
    env["POWERPULSE_ANALYZER"] = "lexicon"
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


async def cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a command without blocking the app under test, which shares the event loop."""
    return await asyncio.to_thread(run_cli, *args, env=env, cwd=cwd)


def succeeded(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def created_tenant(stdout: str, name: str) -> tuple[int, int, str]:
    """(tenant id, key id, key) from `tenant create`."""
    tenant = re.search(rf"^tenant {re.escape(name)} created with id (\d+)$", stdout, re.M)
    key_id = re.search(r"^API key (\d+) \(read-write\)", stdout, re.M)
    keys = re.findall(r"^(pp_\S+)$", stdout, re.M)
    assert tenant and key_id and len(keys) == 1, stdout
    return int(tenant.group(1)), int(key_id.group(1)), keys[0]


def created_key(stdout: str, kind: str) -> tuple[int, str]:
    key_id = re.search(rf"^API key (\d+) \({kind}\) for ", stdout, re.M)
    keys = re.findall(r"^(pp_\S+)$", stdout, re.M)
    assert key_id and len(keys) == 1, stdout
    return int(key_id.group(1)), keys[0]


@contextlib.asynccontextmanager
async def serve(sqlite_file: Path, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An app with API keys required, on the file the commands use."""
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{sqlite_file}",
        env="test",
        analyzer="lexicon",
        **{"auth_disabled": False, **overrides},
    )
    app = create_app(settings, migrate=True)
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://testserver"
        ) as http,
    ):
        yield http


async def graphql(http: httpx.AsyncClient, key: str | None, query: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return await http.post("/graphql", json={"query": query}, headers=headers)


async def upload(http: httpx.AsyncClient, key: str, content: bytes) -> httpx.Response:
    operations = {
        "query": "mutation($file: Upload!) { uploadChats(file: $file) { messagesStored "
        "autoresponsesFiltered } }",
        "variables": {"file": None},
    }
    return await http.post(
        "/graphql",
        data={"operations": json.dumps(operations), "map": json.dumps({"0": ["variables.file"]})},
        files={"0": ("export.json", content, "application/json")},
        headers={"Authorization": f"Bearer {key}", "Apollo-Require-Preflight": "true"},
    )


@pytest.mark.slow
async def test_tenant_create_prints_the_id_and_a_key_that_works_over_http(
    tmp_path: Path, sqlite_file: Path, cli_env: dict[str, str]
) -> None:
    tenant_id, key_id, key = created_tenant(
        succeeded(await cli("tenant", "create", "acme", env=cli_env, cwd=tmp_path)), "acme"
    )
    read_only_id, read_only_key = created_key(
        succeeded(
            await cli(
                "apikey", "create", "--tenant", "acme", "--read-only", env=cli_env, cwd=tmp_path
            )
        ),
        "read-only",
    )

    assert KEY_PATTERN.match(key) and KEY_PATTERN.match(read_only_key)
    assert len(secret_bytes(key)) >= 32
    assert key != read_only_key
    assert read_only_id != key_id
    async with serve(sqlite_file) as http:
        assert (await graphql(http, None, METRICS)).status_code == 401
        stored = await upload(http, key, json.dumps(EXPORT).encode())
        refused = await upload(http, read_only_key, json.dumps(EXPORT).encode())
        read = await graphql(http, read_only_key, METRICS)
        export = await http.get(
            "/export/messages.csv", headers={"Authorization": f"Bearer {read_only_key}"}
        )

    assert stored.status_code == 200, stored.text
    assert stored.json()["data"]["uploadChats"]["messagesStored"] == 4
    assert refused.json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert read.json()["data"]["metrics"] == {"totalConversations": 1, "totalMessages": 4}
    assert export.status_code == 200
    assert "my token did not arrive" in export.text
    assert tenant_id >= 1


@pytest.mark.slow
async def test_keys_made_by_the_cli_are_nowhere_in_the_database_file(
    tmp_path: Path, sqlite_file: Path, cli_env: dict[str, str]
) -> None:
    _, _, key = created_tenant(
        succeeded(await cli("tenant", "create", "acme", env=cli_env, cwd=tmp_path)), "acme"
    )
    _, read_only_key = created_key(
        succeeded(
            await cli(
                "apikey", "create", "--tenant", "acme", "--read-only", env=cli_env, cwd=tmp_path
            )
        ),
        "read-only",
    )

    stored = database_bytes(sqlite_file)

    for plain in (key, read_only_key):
        assert hash_key(plain).encode() in stored  # this is the file the keys live in
        assert plain.encode() not in stored
        assert plain[10:].encode() not in stored  # nothing past the listed prefix
        assert secret_bytes(plain) not in stored


@pytest.mark.slow
async def test_apikey_list_hides_secrets_and_revoke_stops_a_key_at_once(
    tmp_path: Path, sqlite_file: Path, cli_env: dict[str, str]
) -> None:
    _, key_id, key = created_tenant(
        succeeded(await cli("tenant", "create", "acme", env=cli_env, cwd=tmp_path)), "acme"
    )
    _, bolt_key_id, bolt_key = created_tenant(
        succeeded(await cli("tenant", "create", "bolt", env=cli_env, cwd=tmp_path)), "bolt"
    )

    listing = succeeded(await cli("apikey", "list", env=cli_env, cwd=tmp_path))
    lines = {int(line.split("\t")[0]): line.split("\t") for line in listing.splitlines()}

    assert set(lines) == {key_id, bolt_key_id}
    assert lines[key_id][1:5] == ["acme", f"{key[:10]}…", "read-write", "active"]
    assert lines[bolt_key_id][1:5] == ["bolt", f"{bolt_key[:10]}…", "read-write", "active"]
    assert key not in listing and bolt_key not in listing
    assert key[10:] not in listing

    async with serve(sqlite_file) as http:
        assert (await graphql(http, key, METRICS)).status_code == 200
        revoked = succeeded(await cli("apikey", "revoke", str(key_id), env=cli_env, cwd=tmp_path))
        refused = await graphql(http, key, METRICS)
        other = await graphql(http, bolt_key, METRICS)

    assert revoked.strip() == f"API key {key_id} revoked"
    assert refused.status_code == 401
    assert refused.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert other.status_code == 200
    acme = succeeded(await cli("apikey", "list", "--tenant", "acme", env=cli_env, cwd=tmp_path))
    (line,) = acme.splitlines()
    fields = line.split("\t")
    assert fields[0] == str(key_id)
    assert fields[4] == "revoked"
    assert fields[6] != "last used never"  # it was used before it was revoked


@pytest.mark.slow
async def test_tenant_set_changes_the_settings_the_app_applies_and_empty_restores_them(
    tmp_path: Path, sqlite_file: Path, cli_env: dict[str, str]
) -> None:
    taxonomy = tmp_path / "topics.json"
    taxonomy.write_text(json.dumps({"version": 1, "topics": {"Token woes": ["token"]}}))
    _, _, key = created_tenant(
        succeeded(await cli("tenant", "create", "acme", env=cli_env, cwd=tmp_path)), "acme"
    )

    configured = succeeded(
        await cli(
            "tenant",
            "set",
            "acme",
            "--timezone",
            "Africa/Nairobi",
            "--autoresponse-patterns",
            "Please rate us, dial *977#",
            "--session-gap-hours",
            "36",
            "--topics-file",
            str(taxonomy),
            env=cli_env,
            cwd=tmp_path,
        )
    )
    listed = succeeded(await cli("tenant", "list", env=cli_env, cwd=tmp_path))

    expected = (
        "timezone=Africa/Nairobi session_gap_hours=36 autoresponse_patterns=Please rate us,"
        f"dial *977# topics_file={taxonomy}"
    )
    assert expected in configured
    (acme,) = [line for line in listed.splitlines() if "\tacme\t" in line]
    assert acme.split("\t")[2:] == [
        "timezone=Africa/Nairobi",
        "session_gap_hours=36",
        "autoresponse_patterns=Please rate us,dial *977#",
        f"topics_file={taxonomy}",
    ]
    async with serve(sqlite_file) as http:
        stored = await upload(http, key, json.dumps(EXPORT).encode())
        data = await graphql(
            http,
            key,
            '{ march6: conversations(filter: {startDate: "2025-03-06", endDate: "2025-03-06"}) '
            '{ totalCount } conversation(chatId: "chat-a") { messageCount contactCount } }',
        )

    # Both bot lines match the tenant's own patterns ("*977#" alone would keep "Please rate
    # us"); the 30-hour silence is shorter than its 36-hour gap; 22:30 UTC is 6 March in
    # Nairobi.
    assert stored.json()["data"]["uploadChats"] == {
        "messagesStored": 3,
        "autoresponsesFiltered": 2,
    }
    assert data.json()["data"] == {
        "march6": {"totalCount": 1},
        "conversation": {"messageCount": 3, "contactCount": 1},
    }

    reset = succeeded(
        await cli(
            "tenant",
            "set",
            "acme",
            "--timezone",
            "",
            "--autoresponse-patterns",
            "",
            "--session-gap-hours",
            "0",
            "--topics-file",
            "",
            env=cli_env,
            cwd=tmp_path,
        )
    )
    assert "timezone=UTC session_gap_hours=24 autoresponse_patterns=*977# topics_file=-" in reset


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("tenant", "create", "no spaces allowed"), "a tenant name is"),
        (("apikey", "create", "--tenant", "nobody"), "no tenant named 'nobody'"),
        (("apikey", "revoke", "999"), "no active API key with id 999"),
        (("tenant", "set", "nobody", "--timezone", "UTC"), "no tenant named 'nobody'"),
    ],
)
def test_commands_refuse_bad_requests_with_exit_1_and_a_message(
    tmp_path: Path, cli_env: dict[str, str], args: tuple[str, ...], message: str
) -> None:
    result = run_cli(*args, env=cli_env, cwd=tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr
    assert any(
        line.startswith("powerpulse: ") and message in line for line in result.stderr.splitlines()
    ), result.stderr
    assert "Traceback" not in result.stderr
    assert "pp_" not in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "example.com"])
def test_serve_without_auth_refuses_a_non_loopback_host(
    tmp_path: Path, cli_env: dict[str, str], host: str
) -> None:
    env = {**cli_env, "POWERPULSE_AUTH_DISABLED": "1"}

    result = subprocess.run(
        [sys.executable, "-m", "powerpulse", "serve", "--host", host, "--port", "1"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 2, result.stdout + result.stderr
    assert "loopback" in result.stderr
    assert "POWERPULSE_AUTH_DISABLED" in result.stderr
    assert "Traceback" not in result.stderr

"""GraphQL test fixtures: every response is checked for leaked internals."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from counting import CountingApp

from powerpulse.settings import Settings

LEAK_PATTERNS = re.compile(
    r"Traceback|\bSELECT\b|\bINSERT INTO\b|\bUPDATE \w+ SET\b|\bDELETE FROM\b|\bWHERE\b"
    r"|sqlalchemy|asyncpg|aiosqlite|sqlite3|psycopg|\[SQL:",
)


def leaked_internals(text: str) -> list[str]:
    return LEAK_PATTERNS.findall(text)


async def _refuse_leaks(response: httpx.Response) -> None:
    await response.aread()
    if response.headers.get("content-type", "").startswith("text/html"):
        # GraphiQL's page is static HTML and JavaScript; only tracebacks are out of place.
        leaks = ["Traceback"] if "Traceback" in response.text else []
    else:
        leaks = leaked_internals(response.text)
    assert not leaks, f"response leaks internals {leaks}: {response.text[:2000]}"


@pytest.fixture
def app_client_factory(app_client_factory: Any) -> Any:
    """The root factory, with a response hook that fails any response leaking internals."""

    async def build(settings: Any, **app_options: Any) -> Any:
        client = await app_client_factory(settings, **app_options)
        client.http.event_hooks["response"].append(_refuse_leaks)
        return client

    return build


@pytest.fixture
def start(app_client_factory: Any) -> Any:
    """Starts apps with a statement counter on the test's database (CountingApp)."""

    async def build(settings: Settings, *, run_worker: bool = False) -> CountingApp:
        return CountingApp(await app_client_factory(settings, run_worker=run_worker))

    return build


@pytest.fixture
def lexicon(settings_factory: Any) -> Settings:
    """The offline analyzer, its worker polling often."""
    return settings_factory(analyzer="lexicon", worker_poll_seconds=0.05)  # type: ignore[no-any-return]

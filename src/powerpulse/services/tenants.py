"""Tenants, their own settings, and API keys: who is asking and what they may do."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..db import Database
from ..errors import BadUserInput, NotFound
from ..repositories.tenants import ApiKeyRepository, TenantRepository
from ..settings import Settings

KEY_PREFIX = "pp_"
KEY_BYTES = 32
TENANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
# How long a running process trusts its copy of a tenant's settings (CLI edits show up
# within this time) and how often a key's last use is written back.
TENANT_CACHE_SECONDS = 15.0
TOUCH_INTERVAL_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class TenantConfig:
    """A tenant's effective settings: its own where set, the deployment's otherwise."""

    id: int
    name: str
    timezone: str
    autoresponse_patterns: tuple[str, ...]
    session_gap_hours: float
    topics_file: str | None

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts for."""

    tenant_id: int
    read_only: bool
    key_id: int | None = None


def hash_key(key: str) -> str:
    # Keys carry 256 random bits, so a plain SHA-256 is enough to make a stolen table useless.
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)


def _config(row: Mapping[str, Any], settings: Settings) -> TenantConfig:
    patterns = settings.autoresponse_patterns
    if row["autoresponse_patterns"] is not None:
        patterns = json.loads(row["autoresponse_patterns"])
    return TenantConfig(
        id=row["id"],
        name=row["name"],
        timezone=row["timezone"] or settings.timezone,
        autoresponse_patterns=tuple(patterns),
        session_gap_hours=row["session_gap_hours"] or settings.session_gap_hours,
        topics_file=row["topics_file"] or settings.topics_file,
    )


class TenantDirectory:
    """Effective tenant settings, cached briefly so each request does not read them again."""

    def __init__(self, database: Database, settings: Settings) -> None:
        self._database = database
        self._settings = settings
        self._cache: dict[int, tuple[float, TenantConfig]] = {}
        self._lock = asyncio.Lock()

    async def get(self, tenant_id: int) -> TenantConfig:
        cached = self._cache.get(tenant_id)
        if cached is not None and time.monotonic() - cached[0] < TENANT_CACHE_SECONDS:
            return cached[1]
        async with self._database.read(quick=True) as connection:
            row = await TenantRepository(connection).get(tenant_id)
        if row is None:
            raise NotFound(f"tenant {tenant_id} does not exist")
        config = _config(row, self._settings)
        self._cache[tenant_id] = (time.monotonic(), config)
        return config

    def default(self, tenant_id: int) -> TenantConfig:
        """The deployment's settings, for code that runs before any tenant row is read."""
        settings = self._settings
        return TenantConfig(
            id=tenant_id,
            name="",
            timezone=settings.timezone,
            autoresponse_patterns=tuple(settings.autoresponse_patterns),
            session_gap_hours=settings.session_gap_hours,
            topics_file=settings.topics_file,
        )


class TenantAdmin:
    """Creating tenants, changing their settings, and managing their API keys (the CLI)."""

    def __init__(self, database: Database, settings: Settings) -> None:
        self._database = database
        self._settings = settings

    async def create_tenant(self, name: str) -> tuple[int, int, str]:
        """A new tenant and its first read-write key: (tenant id, key id, key)."""
        if not TENANT_NAME.fullmatch(name):
            raise BadUserInput(
                "a tenant name is 1-100 letters, digits, '.', '_' or '-', starting with a "
                "letter or digit"
            )
        async with self._database.write() as connection:
            tenants = TenantRepository(connection)
            if await tenants.id_by_name(name) is not None:
                raise BadUserInput(f"tenant {name!r} already exists")
            tenant_id = await tenants.create(name)
            key_id, key = await self._new_key(connection, tenant_id, read_only=False)
        return tenant_id, key_id, key

    async def create_key(self, tenant_name: str, *, read_only: bool) -> tuple[int, str]:
        async with self._database.write() as connection:
            tenant_id = await TenantRepository(connection).id_by_name(tenant_name)
            if tenant_id is None:
                raise NotFound(f"no tenant named {tenant_name!r}")
            return await self._new_key(connection, tenant_id, read_only=read_only)

    async def _new_key(
        self, connection: Any, tenant_id: int, *, read_only: bool
    ) -> tuple[int, str]:
        key = new_key()
        key_id = await ApiKeyRepository(connection).create(
            tenant_id, key_hash=hash_key(key), prefix=key[:10], read_only=read_only
        )
        return key_id, key

    async def tenant_id(self, tenant_name: str) -> int:
        async with self._database.read() as connection:
            tenant_id = await TenantRepository(connection).id_by_name(tenant_name)
        if tenant_id is None:
            raise NotFound(f"no tenant named {tenant_name!r}")
        return tenant_id

    async def keys(self, tenant_name: str | None = None) -> list[Mapping[str, Any]]:
        async with self._database.read() as connection:
            tenant_id = None
            if tenant_name is not None:
                tenant_id = await TenantRepository(connection).id_by_name(tenant_name)
                if tenant_id is None:
                    raise NotFound(f"no tenant named {tenant_name!r}")
            return await ApiKeyRepository(connection).all(tenant_id)

    async def revoke_key(self, key_id: int) -> None:
        async with self._database.write() as connection:
            if not await ApiKeyRepository(connection).revoke(key_id):
                raise NotFound(f"no active API key with id {key_id}")

    async def tenants(self) -> list[TenantConfig]:
        async with self._database.read() as connection:
            rows = await TenantRepository(connection).all()
        return [_config(row, self._settings) for row in rows]

    async def configure(
        self,
        tenant_name: str,
        *,
        timezone: str | None = None,
        autoresponse_patterns: list[str] | None = None,
        topics_file: str | None = None,
        session_gap_hours: float | None = None,
    ) -> TenantConfig:
        """Set a tenant's own settings; an empty value ("" or []) returns to the default."""
        values: dict[str, Any] = {}
        if timezone is not None:
            if timezone:
                try:
                    ZoneInfo(timezone)
                except (ZoneInfoNotFoundError, ValueError) as exc:
                    raise BadUserInput(f"unknown timezone {timezone!r}") from exc
            values["timezone"] = timezone or None
        if autoresponse_patterns is not None:
            patterns = [p.strip() for p in autoresponse_patterns if p.strip()]
            values["autoresponse_patterns"] = json.dumps(patterns) if patterns else None
        if topics_file is not None:
            if topics_file:
                from ..analysis.lexicon import LexiconAnalyzer

                LexiconAnalyzer(topics_file)  # refuses an unreadable taxonomy now, not later
            values["topics_file"] = topics_file or None
        if session_gap_hours is not None:
            if session_gap_hours < 0:
                raise BadUserInput("the session gap must be positive (or 0 for the default)")
            values["session_gap_hours"] = session_gap_hours or None
        async with self._database.write() as connection:
            tenants = TenantRepository(connection)
            row = await tenants.by_name(tenant_name)
            if row is None:
                raise NotFound(f"no tenant named {tenant_name!r}")
            await tenants.update(row["id"], values)
            updated = await tenants.get(row["id"])
        assert updated is not None
        return _config(updated, self._settings)


class Authenticator:
    """Turns a presented API key into the principal it stands for."""

    def __init__(self, database: Database) -> None:
        self._database = database
        self._touched: dict[int, float] = {}

    async def authenticate(self, key: str) -> Principal | None:
        if not key.startswith(KEY_PREFIX) or len(key) > 200:
            return None
        async with self._database.read(quick=True) as connection:
            row = await ApiKeyRepository(connection).active_by_hash(hash_key(key))
        if row is None:
            return None
        now = time.monotonic()
        if now - self._touched.get(row["id"], 0.0) > TOUCH_INTERVAL_SECONDS:
            self._touched[row["id"]] = now
            async with self._database.write() as connection:
                await ApiKeyRepository(connection).touch(row["id"])
        return Principal(tenant_id=row["tenant_id"], read_only=row["read_only"], key_id=row["id"])

"""SQL for tenants (with their own settings) and their API keys."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, insert, select, update

from ..models import ApiKey, Tenant, utcnow
from .base import Repository

tenants = Tenant.__table__  # type: ignore[attr-defined]
api_keys = ApiKey.__table__  # type: ignore[attr-defined]
TENANT_SETTINGS = ("timezone", "autoresponse_patterns", "topics_file", "session_gap_hours")
# First key of PowerPulse's two-key advisory locks on PostgreSQL ("PP" + 1 for ingest).
INGEST_LOCK_NAMESPACE = 0x5050_0001


class TenantRepository(Repository):
    async def id_by_name(self, name: str) -> int | None:
        return (
            await self.connection.execute(select(tenants.c.id).where(tenants.c.name == name))
        ).scalar_one_or_none()

    async def create(self, name: str) -> int:
        result = await self.connection.execute(
            insert(tenants).values(name=name, created_at=utcnow()).returning(tenants.c.id)
        )
        return int(result.scalar_one())

    async def lock_for_ingest(self, tenant_id: int) -> None:
        """Serialise a tenant's uploads until this transaction ends.

        Two uploads touching the same chat must not both measure it from a view that
        lacks the other's messages. SQLite already has a single writer; PostgreSQL takes a
        transaction-scoped advisory lock keyed by the tenant.
        """
        if self.is_postgres:
            await self.connection.execute(
                select(func.pg_advisory_xact_lock(INGEST_LOCK_NAMESPACE, tenant_id))
            )

    async def data_version(self, tenant_id: int) -> int:
        """A number that changes whenever the tenant's analytics could have changed."""
        version = (
            await self.connection.execute(
                select(tenants.c.data_version).where(tenants.c.id == tenant_id)
            )
        ).scalar()
        return int(version or 0)

    async def begin_change(self, tenant_id: int) -> int:
        """Raise the tenant's data version for this transaction and return the new one.

        Call it first in a write transaction: the rows the transaction changes are stamped
        with the returned version. On PostgreSQL it holds the tenant row's lock until
        commit, so the tenant's writes commit in version order and a reader that sees
        version V sees every row stamped V or lower. Taken first, before any other row
        lock, it cannot close a lock cycle with another writer.
        """
        await self.connection.execute(
            update(tenants)
            .where(tenants.c.id == tenant_id)
            .values(data_version=tenants.c.data_version + 1)
        )
        return await self.data_version(tenant_id)

    async def get(self, tenant_id: int) -> Mapping[str, Any] | None:
        return (
            (await self.connection.execute(select(tenants).where(tenants.c.id == tenant_id)))
            .mappings()
            .first()
        )

    async def by_name(self, name: str) -> Mapping[str, Any] | None:
        return (
            (await self.connection.execute(select(tenants).where(tenants.c.name == name)))
            .mappings()
            .first()
        )

    async def all(self) -> list[Mapping[str, Any]]:
        rows = await self.connection.execute(select(tenants).order_by(tenants.c.id))
        return list(rows.mappings())

    async def update(self, tenant_id: int, values: Mapping[str, Any]) -> None:
        unknown = set(values) - set(TENANT_SETTINGS)
        if unknown:
            raise ValueError(f"not tenant settings: {sorted(unknown)}")
        if values:
            await self.connection.execute(
                update(tenants).where(tenants.c.id == tenant_id).values(**values)
            )

    async def ensure(self, name: str) -> int:
        """The tenant's id, created if missing; safe when processes start side by side."""
        existing = await self.id_by_name(name)
        if existing is not None:
            return existing
        # Workers started together on a fresh database race to create the tenant: the
        # losers must take the winner's row, not fail on the unique name.
        await self.upsert(
            tenants, [{"name": name, "created_at": utcnow()}], key=["name"], update=[]
        )
        created = await self.id_by_name(name)
        assert created is not None
        return created


class ApiKeyRepository(Repository):
    async def create(self, tenant_id: int, *, key_hash: str, prefix: str, read_only: bool) -> int:
        result = await self.connection.execute(
            insert(api_keys)
            .values(
                tenant_id=tenant_id,
                key_hash=key_hash,
                prefix=prefix,
                read_only=read_only,
                created_at=utcnow(),
            )
            .returning(api_keys.c.id)
        )
        return int(result.scalar_one())

    async def active_by_hash(self, key_hash: str) -> Mapping[str, Any] | None:
        """The unrevoked key with this hash; authentication reads only through here."""
        return (
            (
                await self.connection.execute(
                    select(api_keys).where(
                        api_keys.c.key_hash == key_hash, api_keys.c.revoked_at.is_(None)
                    )
                )
            )
            .mappings()
            .first()
        )

    async def touch(self, key_id: int) -> None:
        await self.connection.execute(
            update(api_keys).where(api_keys.c.id == key_id).values(last_used_at=utcnow())
        )

    async def all(self, tenant_id: int | None = None) -> list[Mapping[str, Any]]:
        statement = select(
            api_keys.c.id,
            api_keys.c.tenant_id,
            tenants.c.name.label("tenant"),
            api_keys.c.prefix,
            api_keys.c.read_only,
            api_keys.c.created_at,
            api_keys.c.last_used_at,
            api_keys.c.revoked_at,
        ).select_from(api_keys.join(tenants, tenants.c.id == api_keys.c.tenant_id))
        if tenant_id is not None:
            statement = statement.where(api_keys.c.tenant_id == tenant_id)
        rows = await self.connection.execute(statement.order_by(api_keys.c.id))
        return list(rows.mappings())

    async def revoke(self, key_id: int) -> bool:
        result = await self.connection.execute(
            update(api_keys)
            .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
        return bool(result.rowcount)

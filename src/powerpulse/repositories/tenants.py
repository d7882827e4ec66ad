"""SQL for tenants."""

from __future__ import annotations

from sqlalchemy import func, insert, select

from ..models import Tenant, utcnow
from .base import Repository

tenants = Tenant.__table__  # type: ignore[attr-defined]
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

    async def ensure(self, name: str) -> int:
        existing = await self.id_by_name(name)
        return existing if existing is not None else await self.create(name)

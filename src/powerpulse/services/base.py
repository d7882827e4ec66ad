"""What the read services share: the database, the settings, tenants' own settings, CSI."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from ..db import Database
from ..repositories.selection import CsiParameters
from ..repositories.tenants import TenantRepository
from ..settings import Settings
from .cache import AnswerCache
from .tenants import TenantDirectory

T = TypeVar("T")


def csi_parameters(settings: Settings) -> CsiParameters:
    weights = settings.csi_weights
    return CsiParameters(
        frt_target_minutes=settings.csi_frt_target_minutes,
        frt_limit_minutes=settings.csi_frt_limit_minutes,
        effectiveness_weight=weights["effectiveness"],
        effort_weight=weights["effort"],
        efficiency_weight=weights["efficiency"],
        empathy_weight=weights["empathy"],
    )


class ReadService:
    """A service answering one tenant's questions in that tenant's timezone."""

    def __init__(
        self,
        database: Database,
        settings: Settings,
        tenants: TenantDirectory | None = None,
        *,
        cache: AnswerCache | None = None,
    ) -> None:
        self._database = database
        self._settings = settings
        self._tenants = tenants or TenantDirectory(database, settings)
        self._csi = csi_parameters(settings)
        self._cache = cache if cache is not None else AnswerCache(settings.analytics_cache_entries)

    async def _kept(
        self,
        tenant_id: int,
        question: Hashable,
        compute: Callable[[Any], Awaitable[T]],
    ) -> T:
        """`compute(connection)` in a read transaction of its own, or its kept answer.

        Answers are kept while the tenant's data version is unchanged (services/cache.py).
        """

        async def computed() -> T:
            # Its own connection: other requests may be waiting on this computation.
            async with self._database.read() as connection:
                return await compute(connection)

        if not self._cache.enabled:
            return await computed()
        async with self._database.read() as connection:
            version = await TenantRepository(connection).data_version(tenant_id)
        return await self._cache.answer((tenant_id, version, question), computed)

    async def _zone(self, tenant_id: int) -> ZoneInfo:
        return (await self._tenants.get(tenant_id)).zone

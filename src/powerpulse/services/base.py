"""What the read services share: the database, the settings, tenants' own settings, CSI."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from typing import TypeVar
from zoneinfo import ZoneInfo

import numpy as np

from ..db import Database
from ..repositories.facts import FactRepository
from ..repositories.selection import CsiParameters
from ..repositories.tenants import TenantRepository
from ..settings import Settings
from . import aggregates
from .cache import AnswerCache
from .facts import ConversationFacts, FactStore
from .filters import ConversationCriteria
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


def answer_cache(settings: Settings) -> AnswerCache:
    return AnswerCache(
        settings.analytics_cache_entries, tolerance=settings.analytics_staleness_seconds
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
        facts: FactStore | None = None,
    ) -> None:
        self._database = database
        self._settings = settings
        self._tenants = tenants or TenantDirectory(database, settings)
        self._csi = csi_parameters(settings)
        self._cache = cache if cache is not None else answer_cache(settings)
        self._facts = facts or FactStore(
            database, self._csi, memory_bytes=settings.analytics_memory_mib * 1024 * 1024
        )

    async def _kept(
        self,
        tenant_id: int,
        question: Hashable,
        compute: Callable[[int], Awaitable[T]],
        *,
        exact: bool = False,
    ) -> T:
        """`compute(version)` for the tenant's current data version, or its kept answer.

        Answers are kept while the tenant's data version is unchanged, and a recent one is
        given for a newer version unless `exact` (services/cache.py). `compute` must open
        any connection it needs itself: other requests may be waiting on its answer after
        the asking request has gone.
        """
        async with self._database.read(quick=True) as connection:
            version = await TenantRepository(connection).data_version(tenant_id)
        if not self._cache.enabled:
            return await compute(version)
        return await self._cache.answer(
            (tenant_id, version, question), lambda: compute(version), exact=exact
        )

    async def version_and_zone(self, tenant_id: int) -> tuple[int, str]:
        """The tenant's data version and the timezone its dates are read in."""
        zone = await self._zone(tenant_id)
        async with self._database.read(quick=True) as connection:
            version = await TenantRepository(connection).data_version(tenant_id)
        return version, zone.key

    async def _selected(
        self, tenant_id: int, version: int, criteria: ConversationCriteria
    ) -> tuple[ConversationFacts, np.ndarray]:
        """The tenant's facts at `version` (or later) and the filter's selection of them."""
        facts = await self._facts.current(tenant_id, version)
        return facts, await self._select(tenant_id, facts, criteria)

    async def _select(
        self, tenant_id: int, facts: ConversationFacts, criteria: ConversationCriteria
    ) -> np.ndarray:
        matching = None
        if aggregates.needs_database(criteria):
            held_in_database = ConversationCriteria(
                search=criteria.search, chat_ids=criteria.chat_ids
            )
            async with self._database.read() as connection:
                ids = await FactRepository(connection, csi=self._csi).matching(
                    tenant_id, held_in_database
                )
            matching = facts.mask_of(ids)
        return aggregates.select(facts, criteria, matching=matching)

    async def _zone(self, tenant_id: int) -> ZoneInfo:
        return (await self._tenants.get(tenant_id)).zone

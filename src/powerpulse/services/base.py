"""What the read services share: the database, the settings, tenants' own settings, CSI."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from ..db import Database
from ..repositories.selection import CsiParameters
from ..settings import Settings
from .tenants import TenantDirectory


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
    ) -> None:
        self._database = database
        self._settings = settings
        self._tenants = tenants or TenantDirectory(database, settings)
        self._csi = csi_parameters(settings)

    async def _zone(self, tenant_id: int) -> ZoneInfo:
        return (await self._tenants.get(tenant_id)).zone

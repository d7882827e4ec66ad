"""SQL for the activity heatmap: customer messages and conversations started per quarter hour.

Every other aggregate is computed from the conversation facts in memory
(services/aggregates.py); this one counts messages by when they were sent, which the facts
do not hold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import BigInteger, Integer, cast, func, select

from ..services.filters import ConversationCriteria
from .base import Repository
from .selection import SOURCE, CsiParameters, Selection, conversations, messages

_c = conversations.c

# Activity is counted per quarter hour in UTC and turned into local weekday and hour by the
# service: quarter hours stay exact in every timezone, including +05:30 and +05:45.
ACTIVITY_SLOT_SECONDS = 900


@dataclass(slots=True)
class ActivityCounts:
    customer_messages: dict[int, int] = field(default_factory=dict)
    conversations_started: dict[int, int] = field(default_factory=dict)


def _epoch_seconds(column: Any, *, postgres: bool) -> Any:
    """Whole seconds since 1970 of a stored timestamp, as an integer expression."""
    if postgres:
        return cast(func.floor(func.extract("epoch", column)), BigInteger)
    return cast(func.strftime("%s", column), Integer)


class AnalyticsRepository(Repository):
    def __init__(self, connection: Any, *, csi: CsiParameters | None = None) -> None:
        super().__init__(connection)
        self.csi_parameters = csi or CsiParameters()

    def selection(self, tenant_id: int, criteria: ConversationCriteria) -> Selection:
        return Selection(tenant_id, criteria, self.csi_parameters)

    # -- time -------------------------------------------------------------------------
    def _slot(self, column: Any) -> Any:
        return _epoch_seconds(column, postgres=self.is_postgres) // ACTIVITY_SLOT_SECONDS

    async def activity(self, tenant_id: int, criteria: ConversationCriteria) -> ActivityCounts:
        """Customer messages and conversations started per UTC quarter hour."""
        selection = self.selection(tenant_id, criteria)
        counts = ActivityCounts()
        slot = self._slot(messages.c.sent_at)
        rows = await self.connection.execute(
            select(slot, func.count())
            .select_from(SOURCE.join(messages, messages.c.conversation_id == _c.id))
            .where(
                *selection.conditions,
                messages.c.tenant_id == tenant_id,
                messages.c.sender == "CUSTOMER",
            )
            .group_by(slot)
        )
        counts.customer_messages = {int(key): int(value) for key, value in rows}
        slot = self._slot(_c.first_message_at)
        rows = await self.connection.execute(
            select(slot, func.count())
            .select_from(SOURCE)
            .where(*selection.conditions)
            .group_by(slot)
        )
        counts.conversations_started = {int(key): int(value) for key, value in rows}
        return counts

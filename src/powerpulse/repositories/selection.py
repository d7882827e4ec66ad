"""Which conversations a query is about: the tables, the tenant, the filter, the CSI.

Every conversation query reads through SOURCE (a conversation with its analysis, 1:1) and
narrows it with `Selection.conditions`, so a filter means the same thing to the list, the
metrics, the series, the breakdowns and the exports.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, literal, select

from ..models import (
    AnalysisStatus,
    Conversation,
    ConversationAgent,
    ConversationAnalysis,
    ConversationTopic,
    Message,
    ReplyEvent,
)
from ..services.filters import ConversationCriteria

conversations = Conversation.__table__  # type: ignore[attr-defined]
conversation_agents = ConversationAgent.__table__  # type: ignore[attr-defined]
reply_events = ReplyEvent.__table__  # type: ignore[attr-defined]
messages = Message.__table__  # type: ignore[attr-defined]
analyses = ConversationAnalysis.__table__  # type: ignore[attr-defined]
topics = ConversationTopic.__table__  # type: ignore[attr-defined]

_c = conversations.c
_a = analyses.c
SOURCE = conversations.outerjoin(
    analyses, and_(_a.conversation_id == _c.id, _a.tenant_id == _c.tenant_id)
)
DONE = _a.status == AnalysisStatus.DONE.value


@dataclass(frozen=True, slots=True)
class CsiParameters:
    """The Customer Satisfaction Index's settings (see docs/metrics.md)."""

    frt_target_minutes: float = 5.0
    frt_limit_minutes: float = 240.0
    effectiveness_weight: float = 0.40
    effort_weight: float = 0.25
    efficiency_weight: float = 0.15
    empathy_weight: float = 0.20


def _when_done(expression: Any) -> Any:
    return case((DONE, expression), else_=None)


@functools.lru_cache(maxsize=32)
def csi_columns(parameters: CsiParameters) -> Mapping[str, Any]:
    """The CSI and its four pillars (0-100) as SQL, null unless the analysis is DONE.

    Built once per set of parameters: constructing these expressions took about 3 ms of
    every conversations page. SQL expressions are immutable, so statements share them.
    """
    resolved_points = case((_a.resolved.is_(True), 50.0), else_=0.0)
    fcr_points = case((_a.first_contact_resolution.is_(True), 50.0), else_=0.0)
    effectiveness = resolved_points + fcr_points
    effort = (_a.effort_score - 1) * 25.0
    frt = _c.first_response_time_minutes
    log_limit = math.log(parameters.frt_limit_minutes)
    log_span = log_limit - math.log(parameters.frt_target_minutes)
    efficiency = case(
        (frt.is_(None), case((_a.resolved.is_(True), 100.0), else_=0.0)),
        (frt <= parameters.frt_target_minutes, 100.0),
        (frt >= parameters.frt_limit_minutes, 0.0),
        else_=100.0 * (literal(log_limit) - func.ln(frt)) / log_span,
    )
    empathy = (_a.sentiment_score - 1) * 12.5 + (_a.final_sentiment - 1) * 12.5
    score = (
        effectiveness * parameters.effectiveness_weight
        + effort * parameters.effort_weight
        + efficiency * parameters.efficiency_weight
        + empathy * parameters.empathy_weight
    )
    return MappingProxyType(
        {
            "csi": _when_done(score),
            "csi_effectiveness": _when_done(effectiveness),
            "csi_effort": _when_done(effort),
            "csi_efficiency": _when_done(efficiency),
            "csi_empathy": _when_done(empathy),
        }
    )


def _exists_for_conversation(table: Any, *conditions: Any) -> ColumnElement[bool]:
    """EXISTS a matching row of `table` for the outer conversation.

    Correlated to conversations only, so it stays right when the outer query also joins
    `table` itself (agent and topic breakdowns do).
    """
    subquery = (
        select(literal(1))
        .select_from(table)
        .where(table.c.conversation_id == _c.id, *conditions)
        .correlate(conversations)
    )
    return subquery.exists()


def escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class Selection:
    """A tenant's conversations narrowed by criteria, as SQL pieces."""

    def __init__(self, tenant_id: int, criteria: ConversationCriteria, csi: CsiParameters) -> None:
        self.tenant_id = tenant_id
        self.criteria = criteria
        self.csi = csi_columns(csi)
        self.conditions = self._conditions()

    def ids(self) -> Any:
        """A subquery of the selected conversation ids."""
        return select(_c.id).select_from(SOURCE).where(*self.conditions)

    def _conditions(self) -> list[ColumnElement[bool]]:
        tenant_id = self.tenant_id
        criteria = self.criteria
        clauses: list[ColumnElement[bool]] = [_c.tenant_id == tenant_id]
        if criteria.first_message_from is not None:
            clauses.append(_c.first_message_at >= criteria.first_message_from)
        if criteria.first_message_before is not None:
            clauses.append(_c.first_message_at < criteria.first_message_before)
        if criteria.chat_ids is not None:
            clauses.append(_c.chat_id.in_(criteria.chat_ids))
        if criteria.agents:
            clauses.append(
                _exists_for_conversation(
                    conversation_agents,
                    conversation_agents.c.tenant_id == tenant_id,
                    conversation_agents.c.agent.in_(criteria.agents),
                )
            )
        if criteria.min_first_response_time is not None:
            clauses.append(_c.first_response_time_minutes >= criteria.min_first_response_time)
        if criteria.max_first_response_time is not None:
            clauses.append(_c.first_response_time_minutes <= criteria.max_first_response_time)
        if criteria.repeat_contact is not None:
            clauses.append(
                _c.contact_count > 1 if criteria.repeat_contact else _c.contact_count == 1
            )
        if criteria.satisfied is not None:
            clauses.append(and_(DONE, _a.is_satisfied.is_(criteria.satisfied)))
        if criteria.min_satisfaction is not None:
            clauses.append(and_(DONE, _a.satisfaction_score >= criteria.min_satisfaction))
        if criteria.max_satisfaction is not None:
            clauses.append(and_(DONE, _a.satisfaction_score <= criteria.max_satisfaction))
        if criteria.sentiment is not None:
            clauses.append(and_(DONE, _a.sentiment_label == criteria.sentiment))
        if criteria.resolved is not None:
            clauses.append(and_(DONE, _a.resolved.is_(criteria.resolved)))
        if criteria.language is not None:
            clauses.append(and_(DONE, _a.language == criteria.language))
        if criteria.min_csi is not None:
            clauses.append(self.csi["csi"] >= criteria.min_csi)
        if criteria.max_csi is not None:
            clauses.append(self.csi["csi"] <= criteria.max_csi)
        if criteria.analysis_status is not None:
            clauses.append(
                func.coalesce(_a.status, AnalysisStatus.PENDING.value) == criteria.analysis_status
            )
        if criteria.topics:
            clauses.append(DONE)
            clauses.append(
                _exists_for_conversation(
                    topics,
                    topics.c.tenant_id == tenant_id,
                    topics.c.topic.in_(criteria.topics),
                )
            )
        if criteria.search is not None:
            pattern = f"%{escape_like(criteria.search)}%"
            clauses.append(
                _exists_for_conversation(
                    messages,
                    messages.c.tenant_id == tenant_id,
                    messages.c.content.ilike(pattern, escape="\\"),
                )
            )
        return clauses

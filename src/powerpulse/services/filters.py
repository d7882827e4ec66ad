"""The conversation filter every query, metric and export understands."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from ..analysis.schema import normalise_topic
from ..errors import BadUserInput

MAX_CHAT_IDS = 1000
MAX_SEARCH_LENGTH = 200


class ConversationOrder(enum.Enum):
    LAST_MESSAGE_DESC = "LAST_MESSAGE_DESC"
    LAST_MESSAGE_ASC = "LAST_MESSAGE_ASC"
    FIRST_MESSAGE_DESC = "FIRST_MESSAGE_DESC"
    FIRST_MESSAGE_ASC = "FIRST_MESSAGE_ASC"
    MESSAGE_COUNT_DESC = "MESSAGE_COUNT_DESC"
    FIRST_RESPONSE_TIME_DESC = "FIRST_RESPONSE_TIME_DESC"
    FIRST_RESPONSE_TIME_ASC = "FIRST_RESPONSE_TIME_ASC"
    DURATION_DESC = "DURATION_DESC"
    SATISFACTION_ASC = "SATISFACTION_ASC"
    SATISFACTION_DESC = "SATISFACTION_DESC"
    SENTIMENT_ASC = "SENTIMENT_ASC"
    SENTIMENT_DESC = "SENTIMENT_DESC"


@dataclass(frozen=True, slots=True)
class ConversationFilter:
    """Selection of conversations as the API states it (dates in the tenant's timezone)."""

    start_date: date | None = None
    end_date: date | None = None
    agent: str | None = None
    search: str | None = None
    chat_ids: tuple[str, ...] | None = None
    satisfied: bool | None = None
    min_satisfaction: int | None = None
    max_satisfaction: int | None = None
    sentiment: str | None = None
    topic: str | None = None
    resolved: bool | None = None
    analysis_status: str | None = None


@dataclass(frozen=True, slots=True)
class ConversationCriteria:
    """The same selection resolved to exact UTC instants, ready for a repository."""

    first_message_from: datetime | None = None
    first_message_before: datetime | None = None
    agent: str | None = None
    search: str | None = None
    chat_ids: tuple[str, ...] | None = None
    satisfied: bool | None = None
    min_satisfaction: int | None = None
    max_satisfaction: int | None = None
    sentiment: str | None = None
    topic: str | None = None
    resolved: bool | None = None
    analysis_status: str | None = None


def local_midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time.min, tzinfo=zone)


def _day_after(day: date | None, zone: ZoneInfo) -> datetime | None:
    if day is None or day == date.max:
        return None
    return local_midnight(day + timedelta(days=1), zone)


def resolve_filter(selection: ConversationFilter | None, zone: ZoneInfo) -> ConversationCriteria:
    """Check a filter and turn its inclusive local dates into a half-open UTC range."""
    if selection is None:
        return ConversationCriteria()
    if (
        selection.start_date is not None
        and selection.end_date is not None
        and selection.start_date > selection.end_date
    ):
        raise BadUserInput(
            f"startDate {selection.start_date} is after endDate {selection.end_date}"
        )
    if selection.chat_ids is not None and len(selection.chat_ids) > MAX_CHAT_IDS:
        raise BadUserInput(f"chatIds accepts at most {MAX_CHAT_IDS} ids")
    search = selection.search.strip() if selection.search is not None else None
    if search is not None and len(search) > MAX_SEARCH_LENGTH:
        raise BadUserInput(f"search accepts at most {MAX_SEARCH_LENGTH} characters")
    agent = selection.agent.strip() if selection.agent is not None else None
    for name, score in (
        ("minSatisfaction", selection.min_satisfaction),
        ("maxSatisfaction", selection.max_satisfaction),
    ):
        if score is not None and not 1 <= score <= 5:
            raise BadUserInput(f"{name} must be between 1 and 5, got {score}")
    topic = normalise_topic(selection.topic) if selection.topic is not None else None
    return ConversationCriteria(
        first_message_from=(
            local_midnight(selection.start_date, zone) if selection.start_date else None
        ),
        first_message_before=_day_after(selection.end_date, zone),
        agent=agent or None,
        search=search or None,
        chat_ids=selection.chat_ids,
        satisfied=selection.satisfied,
        min_satisfaction=selection.min_satisfaction,
        max_satisfaction=selection.max_satisfaction,
        sentiment=selection.sentiment,
        topic=topic or None,
        resolved=selection.resolved,
        analysis_status=selection.analysis_status,
    )

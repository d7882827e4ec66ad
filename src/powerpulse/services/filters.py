"""The conversation filter every query, metric and export understands."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from ..analysis.schema import normalise_topic
from ..errors import BadUserInput
from ..ingest.records import clean_text

MAX_CHAT_IDS = 1000
MAX_SEARCH_LENGTH = 200
MAX_LIST_VALUES = 100


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
    CSI_ASC = "CSI_ASC"
    CSI_DESC = "CSI_DESC"


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
    agents: tuple[str, ...] | None = None
    topics: tuple[str, ...] | None = None
    min_first_response_time: float | None = None
    max_first_response_time: float | None = None
    min_csi: float | None = None
    max_csi: float | None = None
    repeat_contact: bool | None = None
    language: str | None = None


@dataclass(frozen=True, slots=True)
class ConversationCriteria:
    """The same selection resolved to exact UTC instants, ready for a repository."""

    first_message_from: datetime | None = None
    first_message_before: datetime | None = None
    agents: tuple[str, ...] = ()
    search: str | None = None
    chat_ids: tuple[str, ...] | None = None
    satisfied: bool | None = None
    min_satisfaction: int | None = None
    max_satisfaction: int | None = None
    sentiment: str | None = None
    topics: tuple[str, ...] = ()
    resolved: bool | None = None
    analysis_status: str | None = None
    min_first_response_time: float | None = None
    max_first_response_time: float | None = None
    min_csi: float | None = None
    max_csi: float | None = None
    repeat_contact: bool | None = None
    language: str | None = None


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
    # Text is compared with stored text, which ingest cleaned the same way; a NUL or an
    # unpaired surrogate would otherwise fail in the driver (PostgreSQL refuses NUL).
    search = clean_text(selection.search).strip() if selection.search is not None else None
    if search is not None and len(search) > MAX_SEARCH_LENGTH:
        raise BadUserInput(f"search accepts at most {MAX_SEARCH_LENGTH} characters")
    for name, score in (
        ("minSatisfaction", selection.min_satisfaction),
        ("maxSatisfaction", selection.max_satisfaction),
    ):
        if score is not None and not 1 <= score <= 5:
            raise BadUserInput(f"{name} must be between 1 and 5, got {score}")
    for name, number in (
        ("minFirstResponseTimeMinutes", selection.min_first_response_time),
        ("maxFirstResponseTimeMinutes", selection.max_first_response_time),
        ("minCsi", selection.min_csi),
        ("maxCsi", selection.max_csi),
    ):
        if number is not None and not math.isfinite(number):
            raise BadUserInput(f"{name} must be a finite number")
    agents = _distinct_texts([selection.agent, *(selection.agents or ())], "agents")
    topics = _distinct_texts(
        [
            normalise_topic(topic)
            for topic in [selection.topic, *(selection.topics or ())]
            if topic is not None
        ],
        "topics",
    )
    language = clean_text(selection.language).strip().lower() if selection.language else None
    return ConversationCriteria(
        first_message_from=(
            local_midnight(selection.start_date, zone) if selection.start_date else None
        ),
        first_message_before=_day_after(selection.end_date, zone),
        agents=agents,
        search=search or None,
        chat_ids=(
            tuple(clean_text(chat_id) for chat_id in selection.chat_ids)
            if selection.chat_ids is not None
            else None
        ),
        satisfied=selection.satisfied,
        min_satisfaction=selection.min_satisfaction,
        max_satisfaction=selection.max_satisfaction,
        sentiment=selection.sentiment,
        topics=topics,
        resolved=selection.resolved,
        analysis_status=selection.analysis_status,
        min_first_response_time=selection.min_first_response_time,
        max_first_response_time=selection.max_first_response_time,
        min_csi=selection.min_csi,
        max_csi=selection.max_csi,
        repeat_contact=selection.repeat_contact,
        language=language or None,
    )


def _distinct_texts(values: list[str | None], name: str) -> tuple[str, ...]:
    found: list[str] = []
    for value in values:
        text = clean_text(value).strip() if value is not None else ""
        if text and text not in found:
            found.append(text)
    if len(found) > MAX_LIST_VALUES:
        raise BadUserInput(f"{name} accepts at most {MAX_LIST_VALUES} values")
    return tuple(found)

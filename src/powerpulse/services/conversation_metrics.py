"""Exact per-conversation measurements, from a chat's messages in time order.

The definitions are written out in docs/metrics.md; this module is their one implementation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NamedTuple, Protocol

from ..kinds import SenderKind


class MessageFacts(Protocol):
    """What the metrics need to know about a message."""

    @property
    def sender(self) -> SenderKind: ...

    @property
    def sent_at(self) -> datetime: ...

    @property
    def agent(self) -> str | None: ...


class ReplyEventFacts(NamedTuple):
    """A reply to a waiting customer; fields in the order reply_events stores them."""

    agent: str
    waiting_since: datetime
    replied_at: datetime
    response_minutes: float


@dataclass(slots=True)
class ConversationMeasurements:
    message_count: int
    customer_message_count: int
    agent_message_count: int
    bot_message_count: int
    first_message_at: datetime
    last_message_at: datetime
    duration_minutes: float
    first_response_time_minutes: float | None
    first_response_agent: str | None
    avg_response_time_minutes: float | None
    reply_count: int
    contact_count: int
    reply_events: list[ReplyEventFacts] = field(default_factory=list)
    agent_message_counts: dict[str, int] = field(default_factory=dict)


_CUSTOMER = SenderKind.CUSTOMER
_AGENT = SenderKind.AGENT


def _minutes(delta: timedelta) -> float:
    return delta.total_seconds() / 60.0


def measure_conversation(
    messages: Sequence[MessageFacts], *, session_gap: timedelta
) -> ConversationMeasurements:
    """Measure a conversation; `messages` must already be in time order (ties in file order)."""
    if not messages:
        raise ValueError("a conversation has at least one message")
    first_customer_at = next((m.sent_at for m in messages if m.sender is _CUSTOMER), None)
    first_response_time: float | None = None
    first_response_agent: str | None = None
    if first_customer_at is not None:
        first_answer = next(
            (m for m in messages if m.sender is _AGENT and m.sent_at >= first_customer_at),
            None,
        )
        if first_answer is not None:
            first_response_time = _minutes(first_answer.sent_at - first_customer_at)
            first_response_agent = first_answer.agent

    # One pass for the rest: it runs for every chat of every upload.
    customers = bots = gaps = 0
    reply_events: list[ReplyEventFacts] = []
    waiting_since: datetime | None = None
    agent_counts: dict[str, int] = {}
    previous_at: datetime | None = None
    for message in messages:
        sent_at = message.sent_at
        if previous_at is not None and sent_at - previous_at >= session_gap:
            gaps += 1
        previous_at = sent_at
        sender = message.sender
        if sender is _CUSTOMER:
            customers += 1
            if waiting_since is None:
                waiting_since = sent_at
        elif sender is _AGENT:
            agent = message.agent or ""
            agent_counts[agent] = agent_counts.get(agent, 0) + 1
            if waiting_since is not None:
                reply_events.append(
                    ReplyEventFacts(
                        agent, waiting_since, sent_at, _minutes(sent_at - waiting_since)
                    )
                )
                waiting_since = None
        else:
            bots += 1
    agents = len(messages) - customers - bots

    first_at = messages[0].sent_at
    last_at = messages[-1].sent_at
    return ConversationMeasurements(
        message_count=len(messages),
        customer_message_count=customers,
        agent_message_count=agents,
        bot_message_count=bots,
        first_message_at=first_at,
        last_message_at=last_at,
        duration_minutes=_minutes(last_at - first_at),
        first_response_time_minutes=first_response_time,
        first_response_agent=first_response_agent,
        avg_response_time_minutes=(
            sum(event.response_minutes for event in reply_events) / len(reply_events)
            if reply_events
            else None
        ),
        reply_count=len(reply_events),
        contact_count=1 + gaps,
        reply_events=reply_events,
        agent_message_counts=agent_counts,
    )

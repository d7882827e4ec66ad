"""measure_conversation on small hand-built chats, expectations worked out from the rules."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from powerpulse.ingest.records import normalise_record
from powerpulse.models import SenderKind
from powerpulse.services.conversation_metrics import measure_conversation

DAY = timedelta(hours=24)
T0 = datetime(2025, 8, 12, 9, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Msg:
    sender: SenderKind
    sent_at: datetime
    agent: str | None = None


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def customer(minutes: float) -> Msg:
    return Msg(SenderKind.CUSTOMER, at(minutes))


def agent(minutes: float, name: str = "alice") -> Msg:
    return Msg(SenderKind.AGENT, at(minutes), name)


def bot(minutes: float) -> Msg:
    return Msg(SenderKind.BOT, at(minutes))


def measure(*messages: Msg, gap: timedelta = DAY):
    return measure_conversation(list(messages), session_gap=gap)


def test_counts_times_and_duration() -> None:
    result = measure(customer(0), bot(1), agent(5), customer(7), agent(12, "bob"))
    assert result.message_count == 5
    assert result.customer_message_count == 2
    assert result.agent_message_count == 2
    assert result.bot_message_count == 1
    assert result.first_message_at == at(0)
    assert result.last_message_at == at(12)
    assert result.duration_minutes == 12.0
    assert result.agent_message_counts == {"alice": 1, "bob": 1}


def test_single_message_conversation() -> None:
    result = measure(customer(0))
    assert result.message_count == 1
    assert result.duration_minutes == 0.0
    assert result.contact_count == 1
    assert result.first_response_time_minutes is None
    assert result.avg_response_time_minutes is None
    assert result.reply_count == 0


def test_empty_conversation_is_refused() -> None:
    with pytest.raises(ValueError):
        measure_conversation([], session_gap=DAY)


def test_bot_message_is_never_a_response() -> None:
    result = measure(customer(0), bot(1), bot(2), agent(5))
    assert result.first_response_time_minutes == 5.0
    assert result.first_response_agent == "alice"
    assert result.reply_count == 1
    assert result.avg_response_time_minutes == 5.0
    assert [event.response_minutes for event in result.reply_events] == [5.0]


def test_bot_only_replies_leave_the_customer_unanswered() -> None:
    result = measure(customer(0), bot(1), customer(3), bot(4))
    assert result.first_response_time_minutes is None
    assert result.first_response_agent is None
    assert result.avg_response_time_minutes is None
    assert result.reply_count == 0
    assert result.reply_events == []


def test_no_agent_reply_means_no_response_times() -> None:
    result = measure(customer(0), customer(10), customer(30))
    assert result.first_response_time_minutes is None
    assert result.avg_response_time_minutes is None
    assert result.reply_count == 0
    assert result.agent_message_counts == {}


def test_agent_message_before_any_customer_message_is_not_a_reply() -> None:
    result = measure(agent(0), customer(10), agent(13))
    assert result.first_response_time_minutes == 3.0
    assert result.reply_count == 1
    assert result.avg_response_time_minutes == 3.0
    assert result.reply_events[0].waiting_since == at(10)
    assert result.agent_message_counts == {"alice": 2}


def test_agent_outreach_the_customer_never_gets_answered_after() -> None:
    result = measure(agent(0), customer(10))
    assert result.first_response_time_minutes is None
    assert result.reply_count == 0
    assert result.avg_response_time_minutes is None


def test_customer_messages_piling_up_do_not_move_waiting_since() -> None:
    result = measure(customer(0), customer(2), customer(7), agent(10))
    assert result.first_response_time_minutes == 10.0
    assert result.reply_count == 1
    assert result.reply_events[0].waiting_since == at(0)
    assert result.reply_events[0].replied_at == at(10)
    assert result.avg_response_time_minutes == 10.0


def test_consecutive_agent_messages_make_one_reply_event() -> None:
    result = measure(customer(0), agent(4), agent(6), agent(9))
    assert result.reply_count == 1
    assert result.avg_response_time_minutes == 4.0


def test_multiple_reply_events_are_averaged() -> None:
    result = measure(
        customer(0),
        agent(4),  # 4
        customer(10),
        customer(12),
        agent(20, "bob"),  # 10, from 10 not 12
        agent(21),
        customer(30),
        bot(30.5),
        agent(31),  # 1
    )
    assert [event.response_minutes for event in result.reply_events] == [4.0, 10.0, 1.0]
    assert [event.agent for event in result.reply_events] == ["alice", "bob", "alice"]
    assert result.reply_count == 3
    assert result.avg_response_time_minutes == pytest.approx(5.0)
    assert result.first_response_time_minutes == 4.0
    assert result.agent_message_counts == {"alice": 3, "bob": 1}


def test_first_response_is_from_the_first_customer_message_not_the_first_message() -> None:
    result = measure(bot(0), agent(1), customer(5), customer(6), agent(9))
    assert result.first_response_time_minutes == 4.0
    assert result.duration_minutes == 9.0


def test_fractional_minutes_are_kept() -> None:
    result = measure(customer(0), Msg(SenderKind.AGENT, T0 + timedelta(seconds=90), "alice"))
    assert result.first_response_time_minutes == 1.5
    assert result.avg_response_time_minutes == 1.5


def test_multi_day_chat_with_a_day_long_silence_is_two_contacts() -> None:
    day2 = 25 * 60  # 25h after T0, 24h55m after the agent's reply
    result = measure(customer(0), agent(5), customer(day2), agent(day2 + 30))
    assert result.contact_count == 2
    assert result.duration_minutes == day2 + 30
    assert result.reply_count == 2
    assert result.avg_response_time_minutes == pytest.approx((5 + 30) / 2)
    assert result.first_response_time_minutes == 5.0


def test_three_contacts_over_a_week() -> None:
    result = measure(customer(0), agent(60), customer(3 * 24 * 60), customer(7 * 24 * 60))
    assert result.contact_count == 3


def test_a_gap_of_exactly_the_session_gap_starts_a_new_contact() -> None:
    assert measure(customer(0), agent(24 * 60)).contact_count == 2
    just_under = Msg(SenderKind.AGENT, T0 + DAY - timedelta(seconds=1), "alice")
    assert measure(customer(0), just_under).contact_count == 1


def test_contacts_count_the_gaps_between_messages_only() -> None:
    """The first message opens the first contact; no gap is measured before it, whatever
    the session gap (even none, where every later message opens a contact)."""
    none = timedelta(0)
    assert measure_conversation([customer(0)], session_gap=none).contact_count == 1
    three = [customer(0), agent(1), customer(2)]
    assert measure_conversation(three, session_gap=none).contact_count == 3
    assert measure_conversation(three, session_gap=DAY).contact_count == 1


def test_a_day_long_wait_for_the_reply_is_still_the_first_response() -> None:
    result = measure(customer(0), agent(24 * 60))
    assert result.first_response_time_minutes == 1440.0
    assert result.avg_response_time_minutes == 1440.0


def test_the_session_gap_is_configurable() -> None:
    messages = (customer(0), agent(59), customer(120))
    assert measure(*messages, gap=timedelta(hours=1)).contact_count == 2
    assert measure(*messages, gap=timedelta(hours=2)).contact_count == 1


def test_gaps_are_between_consecutive_messages_of_any_sender() -> None:
    result = measure(customer(0), bot(20 * 60), customer(40 * 60))
    assert result.contact_count == 1


def test_tie_customer_then_agent_is_an_immediate_reply() -> None:
    result = measure(customer(0), agent(0))
    assert result.first_response_time_minutes == 0.0
    assert result.reply_count == 1
    assert result.avg_response_time_minutes == 0.0


def test_tie_agent_then_customer_keeps_order_for_reply_events() -> None:
    result = measure(agent(0), customer(0))
    # The agent's message is at the customer's time, so it is the first response...
    assert result.first_response_time_minutes == 0.0
    # ...but walking in order the customer was not yet waiting when the agent wrote.
    assert result.reply_count == 0
    assert result.avg_response_time_minutes is None


def test_first_response_at_the_same_time_but_later_in_order() -> None:
    result = measure(customer(0), bot(0), agent(0), customer(0))
    assert result.first_response_time_minutes == 0.0
    assert result.reply_count == 1


def test_agent_identified_by_email_only_counts_under_the_email() -> None:
    raw = [
        {"DIRECTION": "to_company", "SOCIAL_CREATE_TIME": "2025-08-12T09:00:00Z"},
        {
            "DIRECTION": "to_client",
            "SOCIAL_CREATE_TIME": "2025-08-12T09:06:00Z",
            "AGENT_EMAIL": "carol@example.com",
            "MESSAGE_CONTENT": "Hi, Carol here",
        },
        {
            "DIRECTION": "to_client",
            "SOCIAL_CREATE_TIME": "2025-08-12T09:07:00Z",
            "AGENT_USERNAME": "dave",
            "AGENT_EMAIL": "dave@example.com",
        },
    ]
    messages = [
        normalise_record("c", index, record, max_message_chars=1000)
        for index, record in enumerate(raw)
    ]
    result = measure_conversation(messages, session_gap=DAY)
    assert result.first_response_time_minutes == 6.0
    assert result.first_response_agent == "carol@example.com"
    assert result.agent_message_counts == {"carol@example.com": 1, "dave": 1}
    assert result.reply_events[0].agent == "carol@example.com"

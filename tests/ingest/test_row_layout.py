"""Ingest builds rows by position: the tuples it slices must match the columns stored."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from powerpulse.ingest import packing, pgcopy
from powerpulse.ingest.records import STORED_FIELDS_START, NormalisedMessage
from powerpulse.repositories.conversations import MEASUREMENT_COLUMNS, REPLY_EVENT_COLUMNS
from powerpulse.repositories.messages import INSERT_COLUMNS
from powerpulse.services.conversation_metrics import ConversationMeasurements, ReplyEventFacts


def test_a_messages_stored_fields_are_the_insert_columns_after_its_conversation() -> None:
    assert INSERT_COLUMNS[0] == "conversation_id"
    assert NormalisedMessage._fields[STORED_FIELDS_START:] == INSERT_COLUMNS[1:]


def test_reply_event_facts_are_in_reply_event_column_order() -> None:
    assert ReplyEventFacts._fields == REPLY_EVENT_COLUMNS


def test_packed_rows_name_their_parts_by_the_insert_columns() -> None:
    stored = INSERT_COLUMNS[1:]
    assert stored[packing.ROW_KEY] == "message_key"
    assert stored[packing.ROW_SENDER] == "sender"
    assert stored[packing.ROW_SENT_AT] == "sent_at"
    assert stored[packing.ROW_AGENT_USERNAME] == "agent_username"
    assert stored[packing.ROW_AGENT_EMAIL] == "agent_email"


def test_copy_packing_has_the_fields_of_a_packed_row_in_their_places() -> None:
    # pgcopy cannot import packing (packing imports it), so its positions are its own.
    assert len(INSERT_COLUMNS) - 1 == pgcopy.MESSAGE_FIELDS
    assert pgcopy._SENDER == packing.ROW_SENDER
    assert pgcopy._SENT_AT == packing.ROW_SENT_AT


def test_a_packed_measurement_is_in_measurement_column_order() -> None:
    first = datetime(2025, 1, 1, 9, 0, tzinfo=UTC)
    measured = ConversationMeasurements(
        message_count=5,
        customer_message_count=2,
        agent_message_count=2,
        bot_message_count=1,
        first_message_at=first,
        last_message_at=first + timedelta(minutes=30),
        duration_minutes=30.0,
        first_response_time_minutes=1.5,
        first_response_agent="ann",
        avg_response_time_minutes=2.5,
        reply_count=2,
        contact_count=1,
    )
    chat = packing.pack_measured("c1", [], "web", measured, None)
    assert chat.measurement is not None
    named = dict(zip(MEASUREMENT_COLUMNS, chat.measurement, strict=False))
    # Every column but updated_at (the store stamps it), each with its own value.
    assert len(chat.measurement) == len(MEASUREMENT_COLUMNS) - 1
    assert MEASUREMENT_COLUMNS[-1] == "updated_at"
    assert named == {
        "platform": "web",
        **{name: getattr(measured, name) for name in MEASUREMENT_COLUMNS[1:-1]},
    }

"""Ingest builds rows by position: the tuples it slices must match the columns stored."""

from __future__ import annotations

from powerpulse.ingest.records import STORED_FIELDS_START, NormalisedMessage
from powerpulse.repositories.conversations import REPLY_EVENT_COLUMNS
from powerpulse.repositories.messages import INSERT_COLUMNS
from powerpulse.services.conversation_metrics import ReplyEventFacts


def test_a_messages_stored_fields_are_the_insert_columns_after_its_conversation() -> None:
    assert INSERT_COLUMNS[0] == "conversation_id"
    assert NormalisedMessage._fields[STORED_FIELDS_START:] == INSERT_COLUMNS[1:]


def test_reply_event_facts_are_in_reply_event_column_order() -> None:
    assert ReplyEventFacts._fields == REPLY_EVENT_COLUMNS

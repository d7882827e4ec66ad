"""Parsed chats in the form the database stores them.

A packed chat holds only tuples of plain values, with timestamps already in the storage
form of the database being written (SQLite: text; PostgreSQL: datetimes): storing it is a
bulk insert with no per-message conversion, and when the upload is parsed in a process of
its own, it crosses the process boundary cheaply (plain strings and numbers unpickle
several times faster than datetimes and objects). For PostgreSQL the messages, agents,
reply events and a new chat's conversation row go further: each is already in the binary
COPY form the server reads (ingest.pgcopy).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from ..services.conversation_metrics import ConversationMeasurements
from .pgcopy import (
    decode_message,
    encode_agent,
    encode_conversation,
    encode_message,
    encode_reply,
    first_text,
    message_key,
)
from .reader import ParsedChat
from .records import STORED_FIELDS_START, NormalisedMessage

# A UTC datetime in the database's storage form; None keeps datetimes as they are.
TimestampForm = Callable[[datetime], Any] | None

# Where a packed row (NormalisedMessage's stored fields) holds its parts.
ROW_KEY = 0
ROW_SENDER = 2
ROW_SENT_AT = 4
ROW_AGENT_USERNAME = 5
ROW_AGENT_EMAIL = 6


class PackedChat(NamedTuple):
    """One chat array of the upload, ready to store.

    `rows` are the messages' stored columns after conversation_id (MessageRepository's
    INSERT_COLUMNS order), in file order: tuples, or, packed for PostgreSQL's COPY,
    bytes (`row_values` and `row_key` read either). `measurement` is None when nothing of the chat
    is valid; otherwise its values follow ConversationRepository's MEASUREMENT_COLUMNS up
    to, not including, updated_at (which the store stamps), or, packed for COPY, they and
    the chat id are bytes (pgcopy.encode_conversation; `platform_of` reads either).
    `agents` are (agent, message count) and `replies` follow REPLY_EVENT_COLUMNS; packed
    for COPY, each of them is bytes too (pgcopy.encode_agent, pgcopy.encode_reply).
    """

    chat_id: str
    rows: list[Any]
    measurement: tuple[Any, ...] | bytes | None
    agents: list[Any]
    replies: list[Any]


def row_values(row: Any) -> tuple[Any, ...]:
    """A packed message's stored columns as a tuple, whichever form it was packed in."""
    if isinstance(row, bytes):
        return decode_message(row)
    return row  # type: ignore[no-any-return]


def row_key(row: Any) -> str:
    """A packed message's key, whichever form it was packed in."""
    if isinstance(row, bytes):
        return message_key(row)
    return row[ROW_KEY]  # type: ignore[no-any-return]


def platform_of(measurement: tuple[Any, ...] | bytes | None) -> str | None:
    """The platform of a packed chat's measurement, whichever form it was packed in."""
    if measurement is None:
        return None
    if isinstance(measurement, bytes):
        return first_text(measurement)
    return measurement[0]


def pack_rows(
    messages: Sequence[NormalisedMessage], timestamp: TimestampForm, *, copy: bool = False
) -> tuple[list[Any], Callable[[datetime], Any]]:
    """The messages' stored columns, and the conversion of any of their times to storage
    form: every time a measurement holds is one of its chat's messages' times, so each is
    converted once (a chat has about as many reply events as customer messages).

    `copy` packs each message as PostgreSQL's binary COPY reads it (ingest.pgcopy); it
    keeps timestamps as datetimes, so `timestamp` must be None.
    """
    if copy:
        if timestamp is not None:
            raise ValueError("COPY-packed rows keep timestamps as datetimes")
        return [encode_message(message[STORED_FIELDS_START:]) for message in messages], _same
    if timestamp is None:
        return [message[STORED_FIELDS_START:] for message in messages], _same
    times = [m[7] for m in messages]
    stamps = list(map(timestamp, times))
    # Positional: this runs once per message.
    rows = [
        (m[3], m[4], m[5], m[6], stamp, m[8], m[9], m[10], m[11])
        for m, stamp in zip(messages, stamps, strict=True)
    ]
    return rows, dict(zip(times, stamps, strict=True)).__getitem__


def pack_measured(
    chat_id: str,
    rows: list[Any],
    platform: str | None,
    measured: ConversationMeasurements,
    timestamp: TimestampForm,
    *,
    copy: bool = False,
) -> PackedChat:
    """A chat whose rows are packed already, with its measurement; `copy` packs its
    measurement, agents and reply events for PostgreSQL's COPY (timestamps stay datetimes:
    `timestamp` None)."""
    if copy:
        if timestamp is not None:
            raise ValueError("COPY-packed rows keep timestamps as datetimes")
        return PackedChat(
            chat_id,
            rows,
            encode_conversation(chat_id, _measurement(platform, measured, _same)),
            list(map(encode_agent, measured.agent_message_counts.items())),
            list(map(encode_reply, measured.reply_events)),
        )
    convert = timestamp if timestamp is not None else _same
    return PackedChat(
        chat_id,
        rows,
        _measurement(platform, measured, convert),
        list(measured.agent_message_counts.items()),
        [
            (agent, convert(waiting_since), convert(replied_at), minutes)
            for agent, waiting_since, replied_at, minutes in measured.reply_events
        ],
    )


def _measurement(
    platform: str | None, measured: ConversationMeasurements, convert: Callable[[datetime], Any]
) -> tuple[Any, ...]:
    return (
        platform,
        measured.message_count,
        measured.customer_message_count,
        measured.agent_message_count,
        measured.bot_message_count,
        convert(measured.first_message_at),
        convert(measured.last_message_at),
        measured.duration_minutes,
        measured.first_response_time_minutes,
        measured.first_response_agent,
        measured.avg_response_time_minutes,
        measured.reply_count,
        measured.contact_count,
    )


def pack_batch(
    batch: list[ParsedChat], timestamp: TimestampForm, *, copy: bool = False
) -> list[PackedChat]:
    packed: list[PackedChat] = []
    for chat in batch:
        rows, convert = pack_rows(chat.messages, timestamp, copy=copy)
        if chat.measured is None:
            packed.append(PackedChat(chat.chat_id, rows, None, [], []))
            continue
        platform = next((m.platform for m in chat.messages if m.platform), None)
        packed.append(
            pack_measured(
                chat.chat_id, rows, platform, chat.measured, None if copy else convert, copy=copy
            )
        )
    return packed


def _same(value: Any) -> Any:
    return value

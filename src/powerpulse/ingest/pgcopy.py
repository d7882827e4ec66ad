"""Message rows in PostgreSQL's binary COPY form, encoded where the upload is parsed.

On PostgreSQL the messages of an upload go in by COPY. Handing the driver tuples costs the
storing process twice: it unpickles every row's strings and datetimes from the parsing
process, then encodes them again for the server. Encoded once in the parsing process, a
message is one bytes object: it crosses the pipe several times cheaper than a tuple, and
storing it is a join.

A packed message here is its stored fields after conversation_id (MessageRepository's
INSERT_COLUMNS order), each as the binary COPY format writes a field: a signed 32-bit
length (-1 for NULL) and that many bytes. The storing process, which alone knows the
conversation's id, writes each row's field count, tenant and conversation in front
(`copy_data`). A chat's reply events and agents are packed the same way, after their
conversation_id (`encode_reply`, `encode_agent`): the 1M-message benchmark file has about
300,000 of the one and 110,000 of the other. So is a new chat's conversation row
(`encode_conversation`: its measurement and chat id), to which the storing process adds
the conversation's id in front and the upload's stamp behind (`copy_data`'s suffix).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from ..kinds import SenderKind

# PostgreSQL keeps timestamps as microseconds since this moment.
POSTGRES_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

# The file header (signature, flags, no extension area) and trailer of binary COPY data.
COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
COPY_TRAILER = struct.pack(">h", -1)

_LENGTH = struct.Struct(">i")
_TIMESTAMP = struct.Struct(">iq")
_INTEGER = struct.Struct(">ii")
_BIGINT = struct.Struct(">iq")
_DOUBLE = struct.Struct(">id")
_NULL = _LENGTH.pack(-1)
_BOOL_TRUE = _LENGTH.pack(1) + b"\x01"
_BOOL_FALSE = _LENGTH.pack(1) + b"\x00"
# A row's field count, then tenant_id and conversation_id (bigint: 8 bytes each).
_ROW_START = struct.Struct(">hiqiq")
# The fields of a packed message; where its sender and its time are (the rest is text).
MESSAGE_FIELDS = 9
_SENDER = 2
_SENT_AT = 4


def _text(value: str | None) -> bytes:
    if value is None:
        return _NULL
    data = value.encode()
    return _LENGTH.pack(len(data)) + data


class _Repeated(dict[Any, bytes]):
    """Encoded values of the fields whose values repeat from message to message (sender,
    agent, message type, channel): looked up instead of encoded again. Bounded, so a file
    of ever-new agent names only stops adding to it."""

    LIMIT = 4096

    def __missing__(self, value: str | None) -> bytes:
        data = _text(value)
        if len(self) < self.LIMIT:
            self[value] = data
        return data


_REPEATED = _Repeated()


def encode_message(fields: Sequence[Any]) -> bytes:
    """A message's stored fields (message_key, external_id, sender, content, sent_at as an
    aware datetime, agent_username, agent_email, message_type, via), COPY-encoded."""
    key, external_id, sender, content, sent_at, username, email, kind, via = fields
    repeated = _REPEATED
    return b"".join(
        (
            _text(key),
            _text(external_id),
            repeated[sender],
            _text(content),
            _time(sent_at),
            repeated[username],
            repeated[email],
            repeated[kind],
            repeated[via],
        )
    )


def _time(moment: datetime) -> bytes:
    return _TIMESTAMP.pack(8, (moment - POSTGRES_EPOCH) // _MICROSECOND)


def encode_reply(fields: Sequence[Any]) -> bytes:
    """A reply event's stored fields (agent, waiting_since and replied_at as aware
    datetimes, response_minutes), COPY-encoded."""
    agent, waiting_since, replied_at, minutes = fields
    return b"".join(
        (_REPEATED[agent], _time(waiting_since), _time(replied_at), _DOUBLE.pack(8, minutes))
    )


def encode_agent(fields: Sequence[Any]) -> bytes:
    """An agent's stored fields (agent, message_count), COPY-encoded."""
    agent, count = fields
    return _REPEATED[agent] + _INTEGER.pack(4, count)


def encode_conversation(chat_id: str, fields: Sequence[Any]) -> bytes:
    """A new conversation's measurement (ConversationRepository's MEASUREMENT_COLUMNS up to,
    not including, updated_at; times as aware datetimes), then its chat id, COPY-encoded."""
    (
        platform,
        messages,
        customer_messages,
        agent_messages,
        bot_messages,
        first_at,
        last_at,
        duration,
        first_response,
        first_agent,
        average_response,
        replies,
        contacts,
    ) = fields
    return b"".join(
        (
            _REPEATED[platform],
            _INTEGER.pack(4, messages),
            _INTEGER.pack(4, customer_messages),
            _INTEGER.pack(4, agent_messages),
            _INTEGER.pack(4, bot_messages),
            _time(first_at),
            _time(last_at),
            _DOUBLE.pack(8, duration),
            _NULL if first_response is None else _DOUBLE.pack(8, first_response),
            _REPEATED[first_agent],
            _NULL if average_response is None else _DOUBLE.pack(8, average_response),
            _INTEGER.pack(4, replies),
            _INTEGER.pack(4, contacts),
            _text(chat_id),
        )
    )


def first_text(data: bytes) -> str | None:
    """The first field of a packed row, a text (a message's key, a conversation's
    platform), without decoding the rest."""
    (length,) = _LENGTH.unpack_from(data, 0)
    if length < 0:
        return None
    return data[4 : 4 + length].decode()


def _nullable(encode: Callable[[Any], bytes]) -> Callable[[Any], bytes]:
    return lambda value: _NULL if value is None else encode(value)


# A field of each PostgreSQL type PowerPulse stores, COPY-encoded (NULL for None).
FIELD_ENCODERS: dict[str, Callable[[Any], bytes]] = {
    "text": _text,
    "int4": _nullable(lambda value: _INTEGER.pack(4, value)),
    "int8": _nullable(lambda value: _BIGINT.pack(8, value)),
    "float8": _nullable(lambda value: _DOUBLE.pack(8, value)),
    "bool": _nullable(lambda value: _BOOL_TRUE if value else _BOOL_FALSE),
    "timestamptz": _nullable(_time),
}


def decode_message(data: bytes) -> tuple[Any, ...]:
    """The fields `encode_message` was given (sender as a SenderKind, sent_at in UTC)."""
    fields: list[Any] = []
    position = 0
    for index in range(MESSAGE_FIELDS):
        (length,) = _LENGTH.unpack_from(data, position)
        position += 4
        if length < 0:
            fields.append(None)
            continue
        raw = data[position : position + length]
        position += length
        if index == _SENT_AT:
            microseconds = int.from_bytes(raw, "big", signed=True)
            fields.append(POSTGRES_EPOCH + timedelta(microseconds=microseconds))
        elif index == _SENDER:
            fields.append(SenderKind(raw.decode()))
        else:
            fields.append(raw.decode())
    if position != len(data):
        raise ValueError("a packed message has bytes after its last field")
    return tuple(fields)


def message_key(data: bytes) -> str:
    """A packed message's key (its first field, never NULL), without decoding the rest."""
    return cast(str, first_text(data))


def copy_data(
    tenant_id: int,
    chats: Iterable[tuple[int, Sequence[bytes]]],
    fields: int = MESSAGE_FIELDS,
    suffix: bytes = b"",
) -> bytes:
    """Binary COPY data for the columns tenant_id, conversation_id (or a conversation's own
    id) and `fields` more (by default a message's: "tenant_id", *INSERT_COLUMNS): each chat
    is (conversation_id, packed rows), and `suffix`, fields already encoded, ends every
    row (`fields` counts them). Empty chats add nothing."""
    parts = [COPY_HEADER]
    for conversation_id, rows in chats:
        if rows:
            start = _ROW_START.pack(fields + 2, 8, tenant_id, 8, conversation_id)
            parts.append(start)
            parts.append((suffix + start).join(rows))
            parts.append(suffix)
    parts.append(COPY_TRAILER)
    return b"".join(parts)

"""Builds tests/data/bad_inputs/: broken, hostile and odd grouped_chats exports, and the
manifest saying what PowerPulse must do with each.

    python tests/data/make_bad_inputs.py           # rewrite the committed corpus
    python tests/data/make_bad_inputs.py --check   # exit 1 if the committed files differ

Every expected outcome below was worked out by hand from the ingest rules (ingest/stream.py,
ingest/records.py, services/ingest.py), not recorded from a run:

* The file must be UTF-8 JSON (a UTF-8 BOM is skipped; UTF-16/32 and invalid UTF-8 are
  refused) holding one object of chat id -> array of records, nested at most 64 levels deep,
  with nothing after it. Anything else refuses the whole upload with INVALID_UPLOAD and
  stores nothing: one upload is one transaction.
* Inside a good file each record is judged on its own. A bad record (not an object, unknown
  or non-string DIRECTION, missing or implausible SOCIAL_CREATE_TIME, structured or boolean
  text fields, text over its limit, an empty or over-long chat id) is skipped and listed
  with its chat id and index; the good records are stored.
* Numbers are accepted where text belongs (a numeric UNIQUE_POST_ID is its text form).
  Timestamps are ISO 8601 (no offset means UTC) or epoch seconds/milliseconds, and must fall
  in [1970-01-01, 2100-01-01). NUL characters are removed, text is trimmed, labels are
  lower-cased and cut to 50 characters, bot messages matching "*977#" are dropped, and a
  chat id that appears twice is one chat whose repeated messages count as duplicates.

Two cases are too big to commit and are built at test time by the functions at the end:
`huge_message` (a 5 MB message, listed in the manifest with "generate") and `tiny_chats`
(a million one-message chats, used by the slow test only).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CORPUS_DIR = Path(__file__).parent / "bad_inputs"
MANIFEST_NAME = "manifest.json"
# The settings the corpus is judged under (PowerPulse's defaults, except the batch size:
# two chats per batch, so broken files fail after earlier chats reached the database and
# repeated chat ids are merged both within one batch and across batches).
SETTINGS = {"ingest_batch_chats": 2, "max_message_chars": 100_000, "max_reported_errors": 1000}

BOM = b"\xef\xbb\xbf"
T = "2025-03-01T10:00:00Z"
EPOCH_T = 1740823200  # 2025-03-01T10:00:00Z
MAX_DEPTH = 64

Record = dict[str, Any]


def minute(n: int, hour: int = 10) -> str:
    return f"2025-03-01T{hour:02d}:{n:02d}:00Z"


def customer(text: Any = "hello", at: Any = T, **extra: Any) -> Record:
    return {"DIRECTION": "to_company", "SOCIAL_CREATE_TIME": at, "MESSAGE_CONTENT": text, **extra}


def agent(text: Any = "hi", at: Any = T, username: Any = "jane", **extra: Any) -> Record:
    return {
        "DIRECTION": "to_client",
        "SOCIAL_CREATE_TIME": at,
        "MESSAGE_CONTENT": text,
        "AGENT_USERNAME": username,
        **extra,
    }


def bot(text: Any = "Thanks for contacting us", at: Any = T, **extra: Any) -> Record:
    return {"DIRECTION": "to_client", "SOCIAL_CREATE_TIME": at, "MESSAGE_CONTENT": text, **extra}


def export(
    chats: list[tuple[str, list[Any]]], *, ascii_only: bool = True, indent: Any = None
) -> bytes:
    """A grouped_chats object from (chat id, records) pairs; a chat id may repeat."""
    parts = [
        json.dumps(chat_id, ensure_ascii=ascii_only)
        + ": "
        + json.dumps(records, ensure_ascii=ascii_only, indent=indent)
        for chat_id, records in chats
    ]
    return ("{" + ", ".join(parts) + "}").encode("utf-8")


def rejected(message: str | None = None) -> dict[str, Any]:
    expect: dict[str, Any] = {"outcome": "rejected", "code": "INVALID_UPLOAD"}
    if message is not None:
        expect["message_contains"] = message
    return expect


def stored(
    *,
    chats_received: int,
    received: int,
    stored: int,
    conversations: dict[str, int],
    invalid: int = 0,
    duplicates: int = 0,
    autoresponses: int = 0,
    errors: list[tuple[str | None, int, str]] | None = None,
    errors_truncated: bool = False,
    **checks: Any,
) -> dict[str, Any]:
    """A file that is read: what the report says and which conversations it creates."""
    assert received == stored + invalid + duplicates + autoresponses, "report must add up"
    assert sum(conversations.values()) == stored, "every stored message is in a conversation"
    errors = errors or []
    listed = min(invalid, SETTINGS["max_reported_errors"])
    assert len(errors) == listed
    assert errors_truncated == (invalid > listed)
    expect: dict[str, Any] = {
        "outcome": "partial" if invalid else "accepted",
        "chats_received": chats_received,
        "received": received,
        "stored": stored,
        "invalid": invalid,
        "duplicates": duplicates,
        "autoresponses": autoresponses,
        "errors": [list(error) for error in errors],
        "errors_truncated": errors_truncated,
        "conversations": conversations,
        **checks,
    }
    if errors_truncated:
        # A long list says little in the manifest: its first entries and its length.
        expect["errors"] = expect["errors"][:5]
        expect["errors_listed"] = listed
    return expect


@dataclass
class Case:
    name: str
    description: str
    build: Callable[[], bytes]
    expect: dict[str, Any]
    suffix: str = ".json"
    generated: bool = False  # built at test time, not committed
    tags: list[str] = field(default_factory=list)

    @property
    def file(self) -> str:
        return self.name + self.suffix


CASES: list[Case] = []


def case(
    name: str, description: str, expect: dict[str, Any], **options: Any
) -> Callable[[Callable[[], bytes]], Callable[[], bytes]]:
    def register(build: Callable[[], bytes]) -> Callable[[], bytes]:
        CASES.append(Case(name, description, build, expect, **options))
        return build

    return register


# -- files that are not a grouped_chats export at all ---------------------------------------


@case("not_json", "Plain text.", rejected("not a JSON object"), suffix=".txt")
def _() -> bytes:
    return b"this is not json at all\n"


@case("syntax_missing_comma", "A missing comma between two members.", rejected("not valid JSON"))
def _() -> bytes:
    return b'{"syn-1": [{"DIRECTION": "to_company" "SOCIAL_CREATE_TIME": 1740823200}]}'


@case("syntax_trailing_comma", "A trailing comma after the last chat.", rejected("not valid JSON"))
def _() -> bytes:
    return export([("syn-2", [customer()])])[:-1] + b",}"


@case("syntax_single_quotes", "Single-quoted keys and strings.", rejected("not valid JSON"))
def _() -> bytes:
    return b"{'syn-3': [{'DIRECTION': 'to_company', 'SOCIAL_CREATE_TIME': 1740823200}]}"


@case("syntax_comment", "A /* comment */, which JSON does not have.", rejected("not valid JSON"))
def _() -> bytes:
    return b'{"syn-4": [] /* exported by hand */}'


@case("syntax_number_key", "An object key that is a bare number.", rejected("not valid JSON"))
def _() -> bytes:
    return b'{1: [{"DIRECTION": "to_company", "SOCIAL_CREATE_TIME": 1740823200}]}'


def _three_chats() -> bytes:
    # base-alpha is a chat of the database's earlier good upload: a broken file must not
    # change it even though its new message reaches the database before the break.
    return export(
        [
            ("base-alpha", [customer("one more question", minute(30, 11))]),
            ("trunc-1", [customer("first"), agent("second", minute(1))]),
            ("trunc-2", [customer("third", minute(2)), customer("fourth", minute(3))]),
        ]
    )


@case(
    "truncated",
    "A valid export cut off inside its third chat, after two chats were already read.",
    rejected("not valid JSON"),
)
def _() -> bytes:
    data = _three_chats()
    return data[: data.index(b'"fourth"') + 3]


@case(
    "truncated_after_value",
    "A valid export missing only its closing brace.",
    rejected("not valid JSON"),
)
def _() -> bytes:
    return _three_chats()[:-1]


@case("top_level_array", "An array of chats instead of an object.", rejected("array"))
def _() -> bytes:
    return json.dumps([{"top-1": [customer()]}]).encode()


@case("top_level_string", "A JSON string.", rejected("a string"))
def _() -> bytes:
    return b'"{\\"top-2\\": []}"'


@case("top_level_number", "A JSON number.", rejected("not a JSON object"))
def _() -> bytes:
    return b"42\n"


@case("top_level_null", "JSON null.", rejected("not a JSON object"))
def _() -> bytes:
    return b"null"


@case("top_level_boolean", "JSON true.", rejected("not a JSON object"))
def _() -> bytes:
    return b"true"


@case("empty", "A file of zero bytes.", rejected("empty"))
def _() -> bytes:
    return b""


@case("whitespace_only", "Spaces, tabs and newlines only.", rejected("empty"))
def _() -> bytes:
    return b" \n\t \r\n  \n"


@case("bom_only", "A UTF-8 byte order mark and a newline, nothing else.", rejected("empty"))
def _() -> bytes:
    return BOM + b"\n"


@case(
    "trailing_garbage",
    "A valid export followed by text.",
    rejected("not valid JSON"),
)
def _() -> bytes:
    return export([("trail-1", [customer()]), ("trail-2", [customer()])]) + b"\nEND OF EXPORT\n"


@case("two_objects", "Two exports concatenated.", rejected("not valid JSON"))
def _() -> bytes:
    return export([("twice-1", [customer()])]) + b"\n" + export([("twice-2", [customer()])])


@case(
    "nan_literal", "SOCIAL_CREATE_TIME: NaN, which JSON does not have.", rejected("not valid JSON")
)
def _() -> bytes:
    return b'{"nan-1": [{"DIRECTION": "to_company", "SOCIAL_CREATE_TIME": NaN}]}'


@case("infinity_literal", "SOCIAL_CREATE_TIME: Infinity.", rejected("not valid JSON"))
def _() -> bytes:
    return b'{"inf-1": [{"DIRECTION": "to_company", "SOCIAL_CREATE_TIME": Infinity}]}'


@case("negative_infinity_literal", "SOCIAL_CREATE_TIME: -Infinity.", rejected("not valid JSON"))
def _() -> bytes:
    return b'{"inf-2": [{"DIRECTION": "to_company", "SOCIAL_CREATE_TIME": -Infinity}]}'


@case(
    "float_overflow",
    "A number beyond the range of a double (1e400).",
    rejected("not valid JSON"),
)
def _() -> bytes:
    return b'{"float-1": [{"DIRECTION": "to_company", "SOCIAL_CREATE_TIME": 1e400}]}'


@case(
    "integer_overflow_post_id",
    "A 25-digit numeric UNIQUE_POST_ID. Valid JSON, but the parser (yajl) refuses integers "
    "beyond 64 bits, so the file is refused as a whole; quoted, the same id is fine.",
    rejected("not valid JSON"),
    tags=["parser-limit"],
)
def _() -> bytes:
    return (
        b'{"bigint-1": [{"DIRECTION": "to_company", "SOCIAL_CREATE_TIME": 1740823200, '
        b'"UNIQUE_POST_ID": 1234567890123456789012345}]}'
    )


# -- encodings ------------------------------------------------------------------------------


def _text_export() -> str:
    return json.dumps({"enc-1": [customer("habari, café ☕")]}, ensure_ascii=False)


@case("utf16_le_bom", "UTF-16 little-endian with a byte order mark.", rejected("UTF-16"))
def _() -> bytes:
    return _text_export().encode("utf-16")  # the BOM first, little-endian on every platform


@case("utf16_be_bom", "UTF-16 big-endian with a byte order mark.", rejected("UTF-16"))
def _() -> bytes:
    return b"\xfe\xff" + _text_export().encode("utf-16-be")


@case("utf16_le_no_bom", "UTF-16 little-endian without a byte order mark.", rejected("UTF-16"))
def _() -> bytes:
    return _text_export().encode("utf-16-le")


@case("utf16_be_no_bom", "UTF-16 big-endian without a byte order mark.", rejected("UTF-16"))
def _() -> bytes:
    return _text_export().encode("utf-16-be")


@case("utf32_le_bom", "UTF-32 with a byte order mark.", rejected("UTF-16"))
def _() -> bytes:
    return _text_export().encode("utf-32")


@case(
    "latin1_text",
    "Latin-1 bytes (\\xe9 for é) inside a message: not UTF-8.",
    rejected(),
)
def _() -> bytes:
    return json.dumps({"latin-1": [customer("caf\u00e9")]}, ensure_ascii=False).encode("latin-1")


@case("latin1_chat_id", "Latin-1 bytes in a chat id.", rejected())
def _() -> bytes:
    return json.dumps({"ch\u00e2t": [customer()]}, ensure_ascii=False).encode("latin-1")


@case(
    "utf8_encoded_surrogate",
    "The UTF-8-style bytes of a surrogate (ED A0 80), which UTF-8 forbids.",
    rejected("not valid UTF-8"),
)
def _() -> bytes:
    return b'{"cesu-1": [{"DIRECTION": "to_company", "SOCIAL_CREATE_TIME": 1740823200, ' + (
        b'"MESSAGE_CONTENT": "x\xed\xa0\x80y"}]}'
    )


@case("overlong_utf8", "An overlong UTF-8 encoding of '/' (C0 AF).", rejected())
def _() -> bytes:
    return b'{"overlong-1": [{"DIRECTION": "to_company", "SOCIAL_CREATE_TIME": 1740823200, ' + (
        b'"MESSAGE_CONTENT": "a\xc0\xafb"}]}'
    )


@case(
    "raw_control_character",
    "An unescaped U+0001 byte inside a string: JSON requires control characters escaped.",
    rejected("not valid JSON"),
)
def _() -> bytes:
    return export([("raw-1", [customer("before\x01after")])], ascii_only=False).replace(
        b"\\u0001", b"\x01"
    )


@case(
    "raw_nul_byte",
    "An unescaped NUL byte inside a message.",
    rejected("not valid JSON"),
)
def _() -> bytes:
    return export([("raw-2", [customer("before\x00after")])]).replace(b"\\u0000", b"\x00")


# -- structure ------------------------------------------------------------------------------


def _nested_arrays(depth: int, *, close: bool = True) -> bytes:
    """One chat with one record whose extra field nests `depth` arrays."""
    record = json.dumps(customer("deep")).encode()
    inner = b"[" * depth + (b"]" * depth if close else b"")
    return b'{"deep-1": [' + record[:-1] + b', "EXTRA": ' + inner + (b"}]}" if close else b"")


@case(
    "deep_nesting_10000_arrays",
    "10,000 nested arrays inside a record.",
    rejected("deep"),
)
def _() -> bytes:
    return _nested_arrays(10_000)


@case(
    "deep_nesting_10000_objects",
    "10,000 nested objects as a chat's value.",
    rejected("deep"),
)
def _() -> bytes:
    return b'{"deep-2": ' + b'{"a": ' * 10_000 + b"[]" + b"}" * 10_000 + b"}"


@case(
    "deep_nesting_unterminated",
    "10,000 opening brackets and nothing else.",
    rejected("deep"),
)
def _() -> bytes:
    return _nested_arrays(10_000, close=False)


@case(
    "nesting_past_the_limit",
    "A record nesting 65 levels counted from the top-level object: one past the limit.",
    rejected("deep"),
)
def _() -> bytes:
    return _nested_arrays(MAX_DEPTH - 3 + 1)


@case(
    "nesting_at_the_limit",
    "A record nesting exactly 64 levels counted from the top-level object.",
    stored(chats_received=1, received=1, stored=1, conversations={"deep-1": 1}),
)
def _() -> bytes:
    return _nested_arrays(MAX_DEPTH - 3)


def _good_then(bad_chat: str, value: bytes) -> bytes:
    # Two good chats fill the first batch (and reach the database) before the bad one.
    head = export(
        [
            ("base-bravo", [customer("a late follow-up", minute(45, 12))]),
            (bad_chat + "-good", [customer("fine")]),
        ]
    )
    return head[:-1] + b", " + json.dumps(bad_chat).encode() + b": " + value + b"}"


@case(
    "chat_value_object",
    "A chat holding one record object instead of an array of records.",
    rejected("not an array"),
)
def _() -> bytes:
    return _good_then("chatobj", json.dumps(customer()).encode())


@case("chat_value_null", "A chat holding null.", rejected("not an array"))
def _() -> bytes:
    return _good_then("chatnull", b"null")


@case("chat_value_string", "A chat holding a string.", rejected("not an array"))
def _() -> bytes:
    return _good_then("chatstr", b'"to_company"')


@case("chat_value_number", "A chat holding a number.", rejected("not an array"))
def _() -> bytes:
    return _good_then("chatnum", b"17")


# -- records of the wrong shape (the rest of the file is stored) ----------------------------


@case(
    "wrong_type_direction",
    "DIRECTION as a number, boolean, object, array, null and missing; one good record.",
    stored(
        chats_received=1,
        received=7,
        stored=1,
        invalid=6,
        conversations={"wt-dir": 1},
        errors=[
            ("wt-dir", 0, "DIRECTION must be a string"),
            ("wt-dir", 1, "DIRECTION must be a string"),
            ("wt-dir", 2, "DIRECTION must be a string"),
            ("wt-dir", 3, "DIRECTION must be a string"),
            ("wt-dir", 4, "DIRECTION is missing"),
            ("wt-dir", 5, "DIRECTION is missing"),
        ],
    ),
)
def _() -> bytes:
    def direction(value: Any) -> Record:
        return {**customer(), "DIRECTION": value}

    missing = customer()
    del missing["DIRECTION"]
    records = [direction(v) for v in (1, True, {"to": "company"}, ["to_company"], None)]
    return export([("wt-dir", [*records, missing, customer("good one")])])


@case(
    "wrong_type_time",
    "SOCIAL_CREATE_TIME as an object, array, boolean, null and missing; one good record.",
    stored(
        chats_received=1,
        received=6,
        stored=1,
        invalid=5,
        conversations={"wt-time": 1},
        errors=[
            ("wt-time", 0, "SOCIAL_CREATE_TIME must be a string or a number"),
            ("wt-time", 1, "SOCIAL_CREATE_TIME must be a string or a number"),
            ("wt-time", 2, "SOCIAL_CREATE_TIME must be a string or a number"),
            ("wt-time", 3, "SOCIAL_CREATE_TIME is missing"),
            ("wt-time", 4, "SOCIAL_CREATE_TIME is missing"),
        ],
    ),
)
def _() -> bytes:
    missing = customer()
    del missing["SOCIAL_CREATE_TIME"]
    records = [
        customer(at={"$date": T}),
        customer(at=[EPOCH_T]),
        customer(at=True),
        customer(at=None),
        missing,
        customer("good one"),
    ]
    return export([("wt-time", records)])


@case(
    "wrong_type_content",
    "MESSAGE_CONTENT as an object, array and booleans (invalid); as numbers, null and empty "
    "(stored: numbers as their text, null and empty as a message without text).",
    stored(
        chats_received=1,
        received=8,
        stored=4,
        invalid=4,
        conversations={"wt-content": 4},
        errors=[
            ("wt-content", 0, "MESSAGE_CONTENT must be a string"),
            ("wt-content", 1, "MESSAGE_CONTENT must be a string"),
            ("wt-content", 2, "MESSAGE_CONTENT must be a string"),
            ("wt-content", 3, "MESSAGE_CONTENT must be a string"),
        ],
        contents={"wt-content": ["42", "3.5", None, None]},
    ),
)
def _() -> bytes:
    records = [
        customer({"text": "hi"}),
        customer(["hi", "there"]),
        customer(True),
        customer(False),
        customer(42, minute(1)),
        customer(3.5, minute(2)),
        customer(None, minute(3)),
        customer("", minute(4)),
    ]
    return export([("wt-content", records)])


@case(
    "wrong_type_agent",
    "AGENT_USERNAME/AGENT_EMAIL as numbers (stored as text), objects, arrays, booleans and "
    "over 320 characters (invalid).",
    stored(
        chats_received=1,
        received=8,
        stored=3,
        invalid=5,
        conversations={"wt-agent": 3},
        errors=[
            ("wt-agent", 2, "AGENT_USERNAME must be a string"),
            ("wt-agent", 3, "AGENT_USERNAME must be a string"),
            ("wt-agent", 4, "AGENT_USERNAME must be a string"),
            ("wt-agent", 5, "AGENT_EMAIL must be a string"),
            ("wt-agent", 6, "AGENT_USERNAME is longer than 320 characters"),
        ],
        agents={"wt-agent": ["42", "7"]},
    ),
)
def _() -> bytes:
    records = [
        customer("my order?", minute(0)),
        agent("on it", minute(1), username=42),
        agent("x", minute(2), username={"name": "jane"}),
        agent("x", minute(3), username=["jane"]),
        agent("x", minute(4), username=True),
        agent("x", minute(5), username=None, AGENT_EMAIL=["jane@example.com"]),
        agent("x", minute(6), username="j" * 321),
        agent("done", minute(7), username=None, AGENT_EMAIL=7),
    ]
    return export([("wt-agent", records)])


@case(
    "records_not_objects",
    "Records that are a string, an array, null, a number, a boolean and an empty object.",
    stored(
        chats_received=2,
        received=8,
        stored=1,
        invalid=7,
        conversations={"rec-types": 1},
        errors=[
            ("rec-types", 0, "record must be an object"),
            ("rec-types", 1, "record must be an object"),
            ("rec-types", 2, "record must be an object"),
            ("rec-types", 3, "record must be an object"),
            ("rec-types", 4, "record must be an object"),
            ("rec-types", 5, "DIRECTION is missing"),
            ("rec-nulls", 0, "record must be an object"),
        ],
    ),
)
def _() -> bytes:
    records = ["to_company", ["to_company", T], None, 42, True, {}, customer()]
    return export([("rec-types", records), ("rec-nulls", [None])])


@case(
    "numbers_as_text",
    'Numbers where text belongs: UNIQUE_POST_ID 7 and "7" are the same message (a '
    "duplicate); a 19-digit post id, numeric content and numeric labels are stored as text.",
    stored(
        chats_received=1,
        received=5,
        stored=4,
        duplicates=1,
        conversations={"num-text": 4},
        contents={"num-text": ["big id", "first", "12345", "labels"]},
    ),
)
def _() -> bytes:
    records = [
        customer("big id", minute(0), UNIQUE_POST_ID=9223372036854775807),
        customer("first", minute(1), UNIQUE_POST_ID=7),
        customer("same id, quoted", minute(2), UNIQUE_POST_ID="7"),
        customer(12345, minute(3)),
        customer("labels", minute(4), PLATFORM=99, MESSAGE_TYPE=1.5, VIA=0),
    ]
    return export([("num-text", records)])


ACCEPTED_TIMES: dict[str, tuple[Any, str]] = {
    "ts-epoch-seconds": (EPOCH_T, "2025-03-01T10:00:00+00:00"),
    "ts-epoch-milliseconds": (EPOCH_T * 1000, "2025-03-01T10:00:00+00:00"),
    "ts-epoch-fraction": (EPOCH_T + 0.5, "2025-03-01T10:00:00.500000+00:00"),
    "ts-epoch-zero": (0, "1970-01-01T00:00:00+00:00"),
    "ts-epoch-last-second": (4102444799, "2099-12-31T23:59:59+00:00"),
    "ts-iso-z": ("2025-03-01T10:00:00Z", "2025-03-01T10:00:00+00:00"),
    "ts-iso-offset": ("2025-03-01T12:30:00+02:30", "2025-03-01T10:00:00+00:00"),
    "ts-iso-negative-offset": ("2025-02-28T23:00:00-11:00", "2025-03-01T10:00:00+00:00"),
    "ts-iso-no-zone": ("2025-03-01T10:00:00", "2025-03-01T10:00:00+00:00"),
    "ts-iso-space": ("2025-03-01 10:00:00", "2025-03-01T10:00:00+00:00"),
    "ts-iso-date-only": ("2025-03-01", "2025-03-01T00:00:00+00:00"),
    "ts-iso-basic": ("20250301T100000Z", "2025-03-01T10:00:00+00:00"),
    "ts-iso-padded": ("  2025-03-01T10:00:00Z\n", "2025-03-01T10:00:00+00:00"),
    "ts-iso-nanoseconds": ("2025-03-01T10:00:00.123456789Z", "2025-03-01T10:00:00.123456+00:00"),
    "ts-iso-leap-day": ("2024-02-29T10:00:00Z", "2024-02-29T10:00:00+00:00"),
    "ts-iso-last-second": ("2099-12-31T23:59:59Z", "2099-12-31T23:59:59+00:00"),
}


@case(
    "timestamps_accepted",
    "Every accepted timestamp form, one chat each: epoch seconds, milliseconds and fractions, "
    "ISO 8601 with Z, offsets, no zone (UTC), a space, date only, basic format, padding, "
    "nanoseconds, a leap day and the range's edges.",
    stored(
        chats_received=len(ACCEPTED_TIMES),
        received=len(ACCEPTED_TIMES),
        stored=len(ACCEPTED_TIMES),
        conversations=dict.fromkeys(ACCEPTED_TIMES, 1),
        first_message_at={chat: moment for chat, (_, moment) in ACCEPTED_TIMES.items()},
    ),
)
def _() -> bytes:
    return export(
        [(chat, [customer(f"sent {chat}", at)]) for chat, (at, _) in ACCEPTED_TIMES.items()]
    )


REJECTED_TIMES: list[tuple[Any, str]] = [
    ("2025-02-30T10:00:00Z", "not a valid timestamp"),
    ("2025-13-01T10:00:00Z", "not a valid timestamp"),
    ("2025-03-01T10:61:00Z", "not a valid timestamp"),
    ("2025-03-01T10:00:00+25:00", "not a valid timestamp"),
    ("yesterday", "not a valid timestamp"),
    ("Sat, 01 Mar 2025 10:00:00 GMT", "not a valid timestamp"),
    ("1740823200", "not a valid timestamp"),  # epoch seconds belong in a number
    ("", "is empty"),
    ("   ", "is empty"),
    ("9999-12-31T23:59:59Z", "outside 1970-01-01 to 2100-01-01"),
    ("9999-12-31T23:00:00-05:00", "out of range"),
    ("0001-01-01T00:00:00Z", "outside 1970-01-01 to 2100-01-01"),
    ("1969-12-31T23:59:59Z", "outside 1970-01-01 to 2100-01-01"),
    ("2100-01-01T00:00:00Z", "outside 1970-01-01 to 2100-01-01"),
    (-1, "outside 1970-01-01 to 2100-01-01"),
    (4102444800, "outside 1970-01-01 to 2100-01-01"),
    (99_999_999_999, "outside 1970-01-01 to 2100-01-01"),  # seconds: the year 5138
    (1e300, "out of range"),
    (9223372036854775807, "out of range"),
    (True, "must be a string or a number"),
]


@case(
    "timestamps_rejected",
    "Timestamps that must be refused: impossible dates, unparseable text, empty, epoch "
    "seconds as a string, the year 9999 and other out-of-range moments; one good record.",
    stored(
        chats_received=1,
        received=len(REJECTED_TIMES) + 1,
        stored=1,
        invalid=len(REJECTED_TIMES),
        conversations={"ts-bad": 1},
        errors=[("ts-bad", i, reason) for i, (_, reason) in enumerate(REJECTED_TIMES)],
    ),
)
def _() -> bytes:
    records = [customer(f"bad time {i}", at) for i, (at, _) in enumerate(REJECTED_TIMES)]
    return export([("ts-bad", [*records, customer("good time")])])


@case(
    "directions",
    "Unknown directions (invalid) and known ones in odd case or padding (stored).",
    stored(
        chats_received=1,
        received=7,
        stored=3,
        invalid=4,
        conversations={"dir": 3},
        errors=[
            ("dir", 0, "unknown DIRECTION"),
            ("dir", 1, "unknown DIRECTION"),
            ("dir", 2, "unknown DIRECTION"),
            ("dir", 3, "unknown DIRECTION"),
        ],
        senders={"dir": {"customer": 1, "agent": 1, "bot": 1}},
    ),
)
def _() -> bytes:
    records = [
        {**customer("x", minute(0)), "DIRECTION": "sideways"},
        {**customer("x", minute(1)), "DIRECTION": ""},
        {**customer("x", minute(2)), "DIRECTION": "to company"},
        {**customer("x", minute(3)), "DIRECTION": "inbound"},
        {**customer("upper", minute(4)), "DIRECTION": "TO_COMPANY"},
        {**agent("padded", minute(5)), "DIRECTION": "  to_client\n"},
        {**bot("mixed case", minute(6)), "DIRECTION": "To_Client"},
    ]
    return export([("dir", records)])


@case(
    "empty_chats",
    "Chats with no records: read, nothing stored, no conversation created.",
    stored(chats_received=2, received=0, stored=0, conversations={}),
)
def _() -> bytes:
    return b'{"empty-1": [], "empty-2": []}'


@case(
    "empty_object",
    "{}: a valid, empty export.",
    stored(chats_received=0, received=0, stored=0, conversations={}),
)
def _() -> bytes:
    return b"{}"


@case(
    "empty_object_padded",
    "An empty object surrounded by whitespace.",
    stored(chats_received=0, received=0, stored=0, conversations={}),
)
def _() -> bytes:
    return b"\r\n\n   {  \n }  \n\n"


@case(
    "utf8_bom",
    "UTF-8 with a byte order mark (as Windows tools write it): accepted.",
    stored(chats_received=2, received=3, stored=3, conversations={"bom-1": 2, "bom-\u00e9": 1}),
)
def _() -> bytes:
    body = export(
        [
            ("bom-1", [customer("caf\u00e9"), agent("ol\u00e1", minute(1))]),
            ("bom-\u00e9", [customer()]),
        ],
        ascii_only=False,
    )
    return BOM + body


@case(
    "duplicate_chat_keys",
    "One chat id three times (twice in one batch, once in a later one) and another twice: "
    "each is one conversation, and records repeated between its arrays are duplicates.",
    stored(
        chats_received=6,
        received=9,
        stored=6,
        duplicates=3,
        conversations={"dup-a": 4, "dup-b": 2},
    ),
)
def _() -> bytes:
    a1, a2, a3, a4 = (customer(f"a{i}", minute(i)) for i in range(1, 5))
    b1, b2 = customer("b1", minute(1)), agent("b2", minute(2))
    return export(
        [
            ("dup-a", [a1, a2]),
            ("dup-a", [dict(a2), a3]),  # same batch as the first dup-a
            ("dup-b", [b1]),
            ("dup-c", []),
            ("dup-a", [dict(a1), a4]),  # a later batch
            ("dup-b", [dict(b1), b2]),
        ]
    )


@case(
    "empty_chat_id",
    'Chat ids "", whitespace and a lone NUL: each of their records is invalid (chatId null).',
    stored(
        chats_received=4,
        received=5,
        stored=1,
        invalid=4,
        conversations={"cid-ok": 1},
        errors=[
            (None, 0, "chat id is empty"),
            (None, 1, "chat id is empty"),
            (None, 0, "chat id is empty"),
            (None, 0, "chat id is empty"),
        ],
    ),
)
def _() -> bytes:
    return export(
        [
            ("", [customer("a"), customer("b", minute(1))]),
            ("   \t", [customer("c")]),
            ("\x00", [customer("d")]),
            ("cid-ok", [customer("e")]),
        ]
    )


LONG_ID = "L" * 256
HUGE_ID = "H" * 100_000


@case(
    "long_chat_id",
    "Chat ids of 256 and 100,000 characters (invalid, reported by their first 60); 255 "
    "characters, 255 emoji and 255 characters padded with spaces (stored).",
    stored(
        chats_received=5,
        received=6,
        stored=3,
        invalid=3,
        conversations={"M" * 255: 1, "\U0001f600" * 255: 1, "N" * 255: 1},
        errors=[
            ("L" * 60, 0, "chat id is longer than 255 characters"),
            ("L" * 60, 1, "chat id is longer than 255 characters"),
            ("H" * 60, 0, "chat id is longer than 255 characters"),
        ],
    ),
)
def _() -> bytes:
    return export(
        [
            (LONG_ID, [customer(), customer("again", minute(1))]),
            ("M" * 255, [customer()]),
            ("\U0001f600" * 255, [customer()]),
            (" " + "N" * 255 + "  ", [customer()]),
            (HUGE_ID, [customer()]),
        ],
        ascii_only=False,
    )


@case(
    "escaped_control_characters",
    "Escaped control characters: NUL is removed from text, names and chat ids (so "
    '"ctl-\\u0000x" is the chat "ctl-x"), a message of only NUL has no text, others are kept.',
    stored(
        chats_received=2,
        received=6,
        stored=6,
        conversations={"ctl-x": 6},
        contents={"ctl-x": ["ab", "\x01mid\x02", "del\x7f", None, "tab\tand\nnewline", "last"]},
        agents={"ctl-x": ["jane"]},
    ),
)
def _() -> bytes:
    return export(
        [
            (
                "ctl-\x00x",
                [
                    customer("a\x00b", minute(0)),
                    customer("\x01mid\x02", minute(1)),
                    customer("del\x7f", minute(2)),
                    customer("\x00", minute(3)),
                    agent("tab\tand\nnewline", minute(4), username="ja\x00ne"),
                ],
            ),
            ("ctl-x", [customer("last", minute(5), PLATFORM="\x00")]),
        ]
    )


@case(
    "lone_high_surrogates",
    "Escaped unpaired high surrogates (\\ud83d, \\ud800) in text and an agent name, next to a "
    "proper pair: stored, with no unpaired surrogate left in what is stored.",
    stored(chats_received=1, received=4, stored=4, conversations={"sur-high": 4}),
    tags=["surrogates"],
)
def _() -> bytes:
    return (
        b'{"sur-high": ['
        b'{"DIRECTION": "to_company", "SOCIAL_CREATE_TIME": "2025-03-01T10:00:00Z", '
        b'"MESSAGE_CONTENT": "cut emoji \\ud83d"}, '
        b'{"DIRECTION": "to_company", "SOCIAL_CREATE_TIME": "2025-03-01T10:01:00Z", '
        b'"MESSAGE_CONTENT": "\\ud800"}, '
        b'{"DIRECTION": "to_client", "SOCIAL_CREATE_TIME": "2025-03-01T10:02:00Z", '
        b'"MESSAGE_CONTENT": "reply", "AGENT_USERNAME": "ag\\udbff"}, '
        b'{"DIRECTION": "to_company", "SOCIAL_CREATE_TIME": "2025-03-01T10:03:00Z", '
        b'"MESSAGE_CONTENT": "pair \\ud83d\\ude00"}]}'
    )


@case(
    "lone_low_surrogate",
    "An escaped unpaired low surrogate (\\udc00) in a message. Valid JSON; by the product's "
    "rule (clean_text) it becomes U+FFFD and the file is stored.",
    stored(chats_received=1, received=2, stored=2, conversations={"sur-low": 2}),
    tags=["surrogates"],
)
def _() -> bytes:
    return (
        b'{"sur-low": ['
        b'{"DIRECTION": "to_company", "SOCIAL_CREATE_TIME": 1740823200, '
        b'"MESSAGE_CONTENT": "fine"}, '
        b'{"DIRECTION": "to_company", "SOCIAL_CREATE_TIME": 1740823260, '
        b'"MESSAGE_CONTENT": "x\\udc00y"}]}'
    )


@case(
    "mixed_good_and_bad",
    "Good chats, a chat mixing good, invalid and autoresponse records, a chat of only invalid "
    "records, a chat of only an autoresponse and a repeated post id.",
    stored(
        chats_received=5,
        received=14,
        stored=6,
        invalid=5,
        duplicates=1,
        autoresponses=2,
        conversations={"mix-good": 3, "mix-some-bad": 2, "mix-dups": 1},
        errors=[
            ("mix-some-bad", 1, "unknown DIRECTION"),
            ("mix-some-bad", 3, "record must be an object"),
            ("mix-some-bad", 4, "SOCIAL_CREATE_TIME"),
            ("mix-all-bad", 0, "DIRECTION must be a string"),
            ("mix-all-bad", 1, "record must be an object"),
        ],
    ),
)
def _() -> bytes:
    return export(
        [
            (
                "mix-good",
                [customer("hello"), agent("hi", minute(2)), customer("thanks", minute(3))],
            ),
            (
                "mix-some-bad",
                [
                    customer("is anyone there", minute(0)),
                    {**customer("x", minute(1)), "DIRECTION": "sideways"},
                    agent("yes", minute(2), username="mike"),
                    "oops",
                    customer("when?", "never"),
                    bot("Dial *977# for your balance", minute(4)),
                ],
            ),
            ("mix-all-bad", [{**customer(), "DIRECTION": 5}, None]),
            ("mix-autoresponse-only", [bot("*977# menu")]),
            (
                "mix-dups",
                [
                    customer("once", UNIQUE_POST_ID="p-1"),
                    customer("once again", minute(1), UNIQUE_POST_ID="p-1"),
                ],
            ),
        ]
    )


MANY_BAD = 1200


@case(
    "many_invalid_records",
    f"{MANY_BAD} invalid records and one good one: all counted, the first 1,000 listed (in "
    "file order), the list marked truncated.",
    stored(
        chats_received=1,
        received=MANY_BAD + 1,
        stored=1,
        invalid=MANY_BAD,
        conversations={"many-bad": 1},
        errors=[("many-bad", i, "unknown DIRECTION") for i in range(1000)],
        errors_truncated=True,
    ),
)
def _() -> bytes:
    bad = {"DIRECTION": "bogus", "SOCIAL_CREATE_TIME": EPOCH_T}
    return export([("many-bad", [*([bad] * MANY_BAD), customer("the good one")])])


LIMIT = SETTINGS["max_message_chars"]


@case(
    "message_at_the_limit",
    f"Messages of exactly {LIMIT:,} characters (stored, also when padded with spaces that are "
    "trimmed) and one character more (invalid).",
    stored(
        chats_received=1,
        received=3,
        stored=2,
        invalid=1,
        conversations={"limit": 2},
        errors=[("limit", 1, f"MESSAGE_CONTENT is longer than {LIMIT} characters")],
    ),
)
def _() -> bytes:
    records = [
        customer("x" * LIMIT, minute(0)),
        customer("y" * (LIMIT + 1), minute(1)),
        customer("   " + "z" * LIMIT + "\n ", minute(2)),
    ]
    return export([("limit", records)])


@case(
    "unknown_fields",
    "Unknown fields of every type, nested 10 deep, and an FB_CHAT_ID that disagrees with the key.",
    stored(chats_received=1, received=2, stored=2, conversations={"extra-1": 2}),
)
def _() -> bytes:
    nested: Any = "bottom"
    for level in range(10):
        nested = {f"level{level}": nested, "list": [1, 2.5, None, True, "x"]}
    extra = {"FB_CHAT_ID": "someone-else", "SCORE": 4.5, "TAGS": ["a", "b"], "META": nested}
    return export([("extra-1", [customer("one", **extra), agent("two", minute(1), **extra)])])


@case(
    "duplicate_record_fields",
    "A record repeating DIRECTION: the last value wins (stored when it is valid, invalid when "
    "it is not).",
    stored(
        chats_received=1,
        received=2,
        stored=1,
        invalid=1,
        conversations={"dupfield": 1},
        errors=[("dupfield", 1, "unknown DIRECTION")],
    ),
)
def _() -> bytes:
    return (
        b'{"dupfield": ['
        b'{"DIRECTION": "sideways", "DIRECTION": "to_company", '
        b'"SOCIAL_CREATE_TIME": 1740823200, "MESSAGE_CONTENT": "last wins"}, '
        b'{"DIRECTION": "to_company", "DIRECTION": "sideways", '
        b'"SOCIAL_CREATE_TIME": 1740823260, "MESSAGE_CONTENT": "last loses"}]}'
    )


@case(
    "brackets_in_strings",
    "Strings full of brackets, quotes and backslashes, which are not nesting.",
    stored(chats_received=1, received=2, stored=2, conversations={"[{brackets}]": 2}),
)
def _() -> bytes:
    return export(
        [
            (
                "[{brackets}]",
                [
                    customer("[[[[{{{{" * 500 + '\\"]]' * 100, minute(0)),
                    agent('"' * 70 + "[" * 200 + "\\", minute(1), username="[" * 80),
                ],
            )
        ]
    )


@case(
    "pretty_printed_crlf",
    "Indented with tabs and Windows line endings.",
    stored(chats_received=2, received=3, stored=3, conversations={"crlf-1": 2, "crlf-2": 1}),
)
def _() -> bytes:
    data = {"crlf-1": [customer(), agent("hi", minute(1))], "crlf-2": [customer()]}
    return json.dumps(data, indent="\t").replace("\n", "\r\n").encode()


@case(
    "unicode_text",
    "Non-ASCII chat ids and text: accents, CJK, Arabic, emoji with joiners, combining marks.",
    stored(
        chats_received=4,
        received=5,
        stored=5,
        conversations={
            "\u00fcn\u00ef-\u00e7\u00f8d\u00e9": 2,
            "\u4e2d\u6587": 1,
            "\u0645\u0631\u062d\u0628\u0627": 1,
            "emoji-\U0001f468\u200d\U0001f469\u200d\U0001f467": 1,
        },
    ),
)
def _() -> bytes:
    return export(
        [
            (
                "\u00fcn\u00ef-\u00e7\u00f8d\u00e9",
                [customer("cr\u00e8me br\u00fbl\u00e9e"), agent("d\u00e9j\u00e0 vu", minute(1))],
            ),
            ("\u4e2d\u6587", [customer("\u4f60\u597d")]),
            ("\u0645\u0631\u062d\u0628\u0627", [customer("\u0634\u0643\u0631\u0627")]),
            (
                "emoji-\U0001f468\u200d\U0001f469\u200d\U0001f467",
                [customer("e\u0301\u0301\u0301 \U0001f1f0\U0001f1ea")],
            ),
        ],
        ascii_only=False,
    )


@case(
    "long_labels_and_post_ids",
    "An 8,000-character PLATFORM, labels whose lower case is longer than the text ('\u0130' "
    "lower-cases to two characters), and 300-character post ids, one repeated: labels are cut "
    "to 50 characters, long post ids still de-duplicate.",
    stored(
        chats_received=1,
        received=6,
        stored=5,
        duplicates=1,
        conversations={"labels": 5},
    ),
)
def _() -> bytes:
    long_id = "p" * 300
    records = [
        customer("long platform", minute(0), PLATFORM="Facebook" * 1000),
        customer("dotted I via", minute(1), VIA="\u0130" * 50),
        customer("dotted I type", minute(2), MESSAGE_TYPE="\u0130" * 60, PLATFORM="\u0130" * 50),
        customer("long id", minute(3), UNIQUE_POST_ID=long_id),
        customer("longer id", minute(4), UNIQUE_POST_ID=long_id + "x"),
        customer("long id again", minute(5), UNIQUE_POST_ID=long_id),
    ]
    return export([("labels", records)], ascii_only=False)


@case(
    "blank_values",
    "Blank text fields: whitespace content is a message without text, a blank agent name "
    "makes a to_client message a bot message.",
    stored(
        chats_received=1,
        received=3,
        stored=3,
        conversations={"blank": 3},
        senders={"blank": {"customer": 1, "agent": 1, "bot": 1}},
        contents={"blank": [None, "real agent", None]},
    ),
)
def _() -> bytes:
    records = [
        customer("   \n\t ", minute(0)),
        agent("real agent", minute(1), username="  jane  "),
        agent("  ", minute(2), username="   ", AGENT_EMAIL=""),
    ]
    return export([("blank", records)])


# -- generated at test time -----------------------------------------------------------------

HUGE_MESSAGE_CHARS = 5 * 1024 * 1024


def huge_message() -> bytes:
    """A 5 MB single message between two short ones (the limit is 100,000 characters)."""
    records = [
        customer("before", minute(0)),
        customer("h" * HUGE_MESSAGE_CHARS, minute(1)),
        agent("after", minute(2)),
    ]
    return export([("huge", records)])


CASES.append(
    Case(
        "huge_message",
        "A 5 MB message (over the 100,000-character limit, under the 50 MiB upload limit): "
        "that record is invalid, the others are stored. Built at test time.",
        huge_message,
        stored(
            chats_received=1,
            received=3,
            stored=2,
            invalid=1,
            conversations={"huge": 2},
            errors=[("huge", 1, f"MESSAGE_CONTENT is longer than {LIMIT} characters")],
        ),
        generated=True,
    )
)


def tiny_chats(count: int = 1_000_000) -> bytes:
    """`count` chats of one customer message each, about 66 bytes a chat (66 MB a million).

    Every chat is new and valid: all are stored. Note that a million of them exceed the
    default 50 MiB upload limit; the slow test raises the limit.
    """
    parts = [b"{"]
    for i in range(count):
        if i:
            parts.append(b",")
        parts.append(
            b'"tiny-%07d":[{"DIRECTION":"to_company","SOCIAL_CREATE_TIME":%d}]'
            % (i, EPOCH_T + i % 86_400)
        )
    parts.append(b"}")
    return b"".join(parts)


# -- the manifest -------------------------------------------------------------------------


def manifest() -> dict[str, Any]:
    cases = []
    for item in CASES:
        entry: dict[str, Any] = {"name": item.name, "description": item.description}
        if item.generated:
            entry["generate"] = item.name
        else:
            entry["file"] = item.file
        entry["expect"] = item.expect
        if item.tags:
            entry["tags"] = item.tags
        cases.append(entry)
    return {
        "about": "Bad and odd grouped_chats exports and what PowerPulse must do with each; "
        "built by tests/data/make_bad_inputs.py, checked by tests/test_bad_inputs.py. "
        "'rejected': status 200, a GraphQL error with the code, nothing stored. "
        "'accepted'/'partial': the upload report's counts, the records listed in `errors` "
        "as [chatId, index, part of the reason], and the conversations created with their "
        "message counts; nothing else is stored.",
        "settings": SETTINGS,
        "cases": cases,
    }


def corpus() -> dict[str, bytes]:
    """Every committed file by name, the manifest included."""
    files = {item.file: item.build() for item in CASES if not item.generated}
    assert len(files) == len([c for c in CASES if not c.generated]), "file names must be unique"
    text = json.dumps(manifest(), indent=1, ensure_ascii=False) + "\n"
    files[MANIFEST_NAME] = text.encode("utf-8")
    return files


def generate(name: str) -> bytes:
    """The bytes of a case built at test time."""
    for item in CASES:
        if item.name == name and item.generated:
            return item.build()
    raise KeyError(name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args(argv)
    files = corpus()
    if args.check:
        present = {path.name for path in CORPUS_DIR.iterdir()} if CORPUS_DIR.exists() else set()
        stale = sorted(
            name
            for name in files.keys() | present
            if name not in files
            or name not in present
            or (CORPUS_DIR / name).read_bytes() != files[name]
        )
        for name in stale:
            print(f"differs: {name}", file=sys.stderr)
        return 1 if stale else 0
    CORPUS_DIR.mkdir(parents=True, exist_ok=True)
    for path in CORPUS_DIR.iterdir():
        if path.name not in files:
            path.unlink()
    for name, content in files.items():
        (CORPUS_DIR / name).write_bytes(content)
    total = sum(len(content) for content in files.values())
    print(f"wrote {len(files)} files ({total:,} bytes) to {CORPUS_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

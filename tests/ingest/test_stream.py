"""iter_chats: one chat at a time off the stream; a broken file is an InvalidUpload."""

from __future__ import annotations

import contextlib
import io
import json
import tracemalloc
from typing import Any

import pytest

from powerpulse.errors import InvalidUpload
from powerpulse.ingest.stream import MAX_NESTING_DEPTH, iter_chats

SECRET = "SECRET_CUSTOMER_TEXT_4711"


def chats(data: bytes) -> list[tuple[str, list[Any]]]:
    return list(iter_chats(io.BytesIO(data)))


def rejection(data: bytes) -> str:
    with pytest.raises(InvalidUpload) as caught:
        chats(data)
    return caught.value.message


def test_valid_object_yields_each_chat_in_file_order() -> None:
    export = {
        "chat-b": [{"DIRECTION": "to_company", "MESSAGE_CONTENT": "hi"}],
        "chat-a": [],
        "chat-c": [{"x": 1}, {"y": 2.5}],
    }
    result = chats(json.dumps(export).encode())
    assert [chat_id for chat_id, _ in result] == ["chat-b", "chat-a", "chat-c"]
    assert result[0][1] == [{"DIRECTION": "to_company", "MESSAGE_CONTENT": "hi"}]
    assert result[1][1] == []
    assert result[2][1] == [{"x": 1}, {"y": 2.5}]


def test_non_integer_numbers_come_back_as_floats() -> None:
    ((_, records),) = chats(b'{"a": [{"SOCIAL_CREATE_TIME": 1700000000.5, "n": 3}]}')
    assert isinstance(records[0]["SOCIAL_CREATE_TIME"], float)
    assert records[0]["n"] == 3


def test_empty_object_yields_nothing() -> None:
    assert chats(b"{}") == []
    assert chats(b" \n { } \n") == []


def test_duplicate_chat_keys_are_yielded_twice() -> None:
    result = chats(b'{"a": [{"n": 1}], "b": [], "a": [{"n": 2}]}')
    assert result == [("a", [{"n": 1}]), ("b", []), ("a", [{"n": 2}])]


def test_non_ascii_chat_ids_and_text_are_decoded() -> None:
    export = {"chat-é": [{"MESSAGE_CONTENT": "habari 😀"}]}
    assert chats(json.dumps(export, ensure_ascii=False).encode("utf-8")) == [
        ("chat-é", [{"MESSAGE_CONTENT": "habari 😀"}])
    ]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b'[{"a": []}]', "array"),
        (b"  \n[]", "array"),
        (b'"just a string"', "string"),
        (b"42", "not a JSON object"),
        (b"-1.5", "not a JSON object"),
        (b"true", "not a JSON object"),
        (b"null", "not a JSON object"),
    ],
)
def test_top_level_value_other_than_an_object_is_rejected(data: bytes, expected: str) -> None:
    assert expected in rejection(data)


@pytest.mark.parametrize("data", [b"", b"   ", b" \n\t\r\n ", b" " * (70 * 1024)])
def test_empty_or_whitespace_file_is_rejected(data: bytes) -> None:
    assert "empty" in rejection(data)


def test_leading_whitespace_longer_than_the_peek_window_is_accepted() -> None:
    assert chats(b" " * (70 * 1024) + b'{"a": []}') == [("a", [])]


@pytest.mark.parametrize(
    "data",
    [
        b'{"a": [{"DIRECTION": "to_company"}], "b": [{"DIRECTION": "to_c',
        b'{"a": []',
        b'{"a": [], ',
        b"{",
        b'{"a"',
    ],
)
def test_truncated_json_is_rejected(data: bytes) -> None:
    assert "not valid JSON" in rejection(data)


def test_truncated_file_fails_only_after_the_chats_before_the_break() -> None:
    stream = iter_chats(io.BytesIO(b'{"good": [{"n": 1}], "bad": [{"n": 2'))
    assert next(stream) == ("good", [{"n": 1}])
    with pytest.raises(InvalidUpload):
        next(stream)


@pytest.mark.parametrize(
    "data", [b'{"a": []} xyz', b'{"a": []}{"b": []}', b'{"a": []}]', b'{"a": []},']
)
def test_trailing_garbage_is_rejected(data: bytes) -> None:
    assert "not valid JSON" in rejection(data)


@pytest.mark.parametrize(
    ("value", "described"),
    [
        (b'{"x": 1}', "an object"),
        (b'"text"', "a string"),
        (b"null", "null"),
        (b"12", "a number"),
        (b"true", "a boolean"),
    ],
)
def test_chat_value_that_is_not_an_array_is_rejected(value: bytes, described: str) -> None:
    message = rejection(b'{"ok": [], "chat-9": ' + value + b"}")
    assert "chat-9" in message
    assert described in message


@pytest.mark.parametrize(
    "data",
    [b'{"a": [NaN]}', b"{'a': []}", b'{"a": [1,]}', b"{a: []}", b'{"a": [01]}'],
)
def test_syntax_errors_are_rejected(data: bytes) -> None:
    assert "not valid JSON" in rejection(data)


def test_utf8_bom_is_accepted() -> None:
    assert chats(b'\xef\xbb\xbf{"a": [{"n": 1}]}') == [("a", [{"n": 1}])]
    assert chats(b'\xef\xbb\xbf \r\n{"a": []}') == [("a", [])]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_utf16_is_rejected(encoding: str) -> None:
    assert "UTF-16" in rejection('{"a": [{"MESSAGE_CONTENT": "hi"}]}'.encode(encoding))


@pytest.mark.parametrize(
    "data",
    [
        '{"café": []}'.encode("latin-1"),
        '{"a": [{"MESSAGE_CONTENT": "café"}]}'.encode("latin-1"),
        b'{"a": [], "b": [{"MESSAGE_CONTENT": "' + b"x" * 100_000 + b'caf\xe9"}]}',
    ],
)
def test_latin1_bytes_are_rejected(data: bytes) -> None:
    message = rejection(data)
    assert "UTF" in message or "UTF8" in message


def test_deep_nesting_inside_a_record_does_not_crash() -> None:
    depth = 1000
    data = b'{"a": [' + b"[" * depth + b"]" * depth + b"]}"
    try:
        result = chats(data)
    except InvalidUpload as error:
        assert "deep" in error.message
        return
    assert [chat_id for chat_id, _ in result] == ["a"]


def test_deeply_nested_objects_do_not_crash() -> None:
    depth = 1000
    data = b'{"a": [' + b'{"k":' * depth + b"1" + b"}" * depth + b"]}"
    try:
        result = chats(data)
    except InvalidUpload:
        return
    assert len(result) == 1


def test_deep_unterminated_nesting_is_rejected() -> None:
    rejection(b'{"a": ' + b"[" * 5000)


def test_huge_nesting_is_rejected_without_exhausting_memory() -> None:
    depth = 3000  # a 6 KB file; ijson's prefixes alone would need ~25 MB for it
    data = b'{"a": [' + b"[" * depth + b"]" * depth + b"]}"
    tracemalloc.start()
    try:
        with contextlib.suppress(InvalidUpload):
            chats(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 5 * 1024 * 1024


def test_nesting_up_to_the_limit_is_accepted_and_one_more_is_rejected() -> None:
    allowed = MAX_NESTING_DEPTH - 1  # levels below the top-level object
    ok = b'{"a": ' + b"[" * allowed + b"]" * allowed + b"}"
    assert [chat_id for chat_id, _ in chats(ok)] == ["a"]
    too_deep = b'{"a": ' + b"[" * (allowed + 1) + b"]" * (allowed + 1) + b"}"
    assert "deep" in rejection(too_deep)


class Trickle(io.RawIOBase):
    """A source that hands out at most `step` bytes per read, like a slow network upload."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data = data
        self._step = step
        self._position = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        size = min(len(buffer), self._step, len(self._data) - self._position)
        buffer[:size] = self._data[self._position : self._position + size]
        self._position += size
        return size


TRICKY_TEXTS = [
    "[" * 200,
    "{" * 100 + "}" * 30 + "]" * 70,
    'she said "[[[[" and left',
    "back\\slash [ \\",
    '\\"[{"',
    '"' * 50 + "[" * 80,
    "ends with a backslash \\",
    "\\" * 33 + '"' + "{" * 90,
    "a\u005b escaped bracket [",
]


@pytest.mark.parametrize("step", [1, 2, 3, 5, 7, 64 * 1024])
def test_brackets_quotes_and_backslashes_inside_strings_do_not_count_as_nesting(
    step: int,
) -> None:
    export = {
        f"chat[{index}]{{": [
            {"MESSAGE_CONTENT": text, "AGENT_USERNAME": "[" * 70},
            {"MESSAGE_CONTENT": text[::-1], "EXTRA": {"nested": [[["[" * 70]]]}},
        ]
        for index, text in enumerate(TRICKY_TEXTS)
    }
    data = json.dumps(export).encode()
    result = list(iter_chats(Trickle(data, step)))  # type: ignore[arg-type]
    assert dict(result) == export


def test_strings_full_of_brackets_across_read_boundaries_are_accepted() -> None:
    # Long enough that the default 64 KB reads split strings at many different points.
    export = {
        f"c{index}": [{"MESSAGE_CONTENT": ('[{\\"' * (index % 7 + 1)) * 400}] for index in range(60)
    }
    data = json.dumps(export).encode()
    assert len(data) > 3 * 64 * 1024
    assert dict(chats(data)) == export


@pytest.mark.parametrize("step", [1, 3, 4096])
def test_deep_nesting_is_rejected_whatever_the_read_size(step: int) -> None:
    depth = MAX_NESTING_DEPTH + 5
    data = b'{"a": ["' + b"[" * 500 + b'", ' + b"[" * depth + b"]" * depth + b"]}"
    with pytest.raises(InvalidUpload):
        list(iter_chats(Trickle(data, step)))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "data",
    [
        ('{"a": [], "b": [{"MESSAGE_CONTENT": "' + SECRET + '"} oops]}').encode(),
        ('{"a": [{"MESSAGE_CONTENT": "' + SECRET + '", ').encode(),
        ('{"a": []} ' + SECRET).encode(),
        ('{"a": [{"MESSAGE_CONTENT": "' + SECRET + '\x01"}]}').encode(),
        ('{"' + SECRET + '": [1, 2 oops').encode(),
        ('{"a": [{"MESSAGE_CONTENT": "' + SECRET + '"}]}').encode("latin-1") + b"\xe9",
        ("[" + SECRET + "]").encode(),
    ],
)
def test_error_messages_never_echo_file_content(data: bytes) -> None:
    message = rejection(data)
    assert SECRET not in message
    assert "\n" not in message
    assert len(message) < 300


def test_error_for_a_long_chat_id_shows_only_a_shortened_id() -> None:
    chat_id = "k" * 500
    message = rejection(('{"' + chat_id + '": {"x": 1}}').encode())
    assert chat_id not in message
    assert "k" * 60 in message
    assert len(message) < 300


def test_chats_are_read_lazily_one_at_a_time() -> None:
    first = b'{"first": [{"n": 1}], '
    filler = b", ".join(b'"c%d": [{"t": "%s"}]' % (i, b"x" * 1000) for i in range(2000))
    stream = io.BytesIO(first + filler + b"}")
    iterator = iter_chats(stream)
    assert next(iterator) == ("first", [{"n": 1}])
    assert stream.tell() < len(first) + len(filler)


class Pieces(io.RawIOBase):
    """A stream that hands its bytes out in pieces of the given sizes, in turn."""

    def __init__(self, data: bytes, sizes: list[int]) -> None:
        self._data = memoryview(data)
        self._sizes = sizes
        self._turn = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        size = min(len(buffer), len(self._data), self._sizes[self._turn % len(self._sizes)])
        self._turn += 1
        buffer[:size] = self._data[:size]
        self._data = self._data[size:]
        return size


# JSON string bodies holding surrogate escapes, as they stand in the file.
SURROGATE_ESCAPES = [
    rb"x\udc00y",  # a lone low surrogate
    rb"\uDFFF",  # upper-case hex
    rb"\ud83d\ude00",  # a pair: one emoji
    rb"\ud800\udc00 and \uDBFF\uDFFF",  # the first and the last pair
    rb"\udc00\ud83d\ude00\ude00",  # lone, pair, lone
    rb"\\udc00",  # an escaped backslash, then the text "udc00": no escape
    rb"\\\udc00",  # an escaped backslash, then a lone low surrogate
    rb"\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\udc00",
    rb"caf\u00e9 \u2713 \ude0a",  # other escapes around a lone one
]


def surrogate_document(body: bytes) -> bytes:
    return b'{"chat": [{"text": "' + body + b'"}], "after": [{"text": "still read"}]}'


def expected_text(body: bytes) -> str:
    """What the rule makes of the string: JSON's own decoding, then clean_text."""
    from powerpulse.ingest.records import clean_text

    return clean_text(json.loads(b'"' + body + b'"'))


@pytest.mark.parametrize("body", SURROGATE_ESCAPES, ids=range(len(SURROGATE_ESCAPES)))
def test_a_lone_low_surrogate_escape_is_read_as_the_replacement_character(body: bytes) -> None:
    """Wherever the reads of the file split it, a low surrogate escaped without its high
    half reads as U+FFFD, a pair as its character, and an escaped backslash as itself."""
    document = surrogate_document(body)
    expected = [("chat", [{"text": expected_text(body)}]), ("after", [{"text": "still read"}])]
    start = document.index(body)
    for split in range(start - 8, start + len(body) + 8):
        parsed = list(iter_chats(Pieces(document, [split, 1, 2, 3, 1 << 16])))
        assert parsed == expected, split
    assert list(iter_chats(Pieces(document, [1]))) == expected


def test_surrogate_escapes_read_a_few_bytes_at_a_time_come_out_whole() -> None:
    """Reads smaller than an escape (as a buffered reader may make) see the same bytes."""
    from powerpulse.ingest.stream import _LoneLowSurrogates

    document = surrogate_document(b"a\\udc00b\\ud83d\\ude00c\\\\udc00")
    for size in (1, 2, 5, 7, 64):
        reader = _LoneLowSurrogates(Pieces(document, [3, 11, 1]))
        pieces = []
        while piece := reader.read(size):
            assert len(piece) <= size
            pieces.append(piece)
        assert b"".join(pieces) == document.replace(b"a\\udc00b", b"a\\ufffdb"), size

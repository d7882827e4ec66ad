"""Batch sources: an upload read in a worker thread or in a parsing process gives the same
packed batches and the same report; a broken file, a failing stream or a dying process is
an error, never a silently shorter upload."""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import operator
import os
import pickle
import subprocess
import sys
import threading
from datetime import timedelta
from typing import Any

import pytest

from powerpulse.errors import InvalidUpload
from powerpulse.ingest import parse_process
from powerpulse.ingest.batches import FRAME_HEADER, ProcessSource, ThreadSource, open_source
from powerpulse.ingest.packing import PackedChat, pack_batch, pack_measured
from powerpulse.ingest.reader import ReadOptions, UploadReport
from powerpulse.kinds import sqlite_timestamp
from powerpulse.synthetic import write_export

TIMESTAMP_FORMS = {"sqlite": sqlite_timestamp, "postgres": None}


def options(timestamp: Any = sqlite_timestamp, batch_chats: int = 3) -> ReadOptions:
    return ReadOptions(
        max_message_chars=200,
        max_reported_errors=5,
        autoresponse_patterns=("is away",),
        session_gap=timedelta(hours=24),
        batch_chats=batch_chats,
        timestamp=timestamp,
    )


def message(direction: str, when: Any, text: str | None, **extra: Any) -> dict[str, Any]:
    return {"DIRECTION": direction, "SOCIAL_CREATE_TIME": when, "MESSAGE_CONTENT": text, **extra}


def mixed_export(chats: int = 12) -> bytes:
    """Valid chats with agents, bots and replies, and every kind of record that is dropped."""
    parts = []
    for number in range(chats):
        records: list[Any] = [
            message("to_company", f"2025-03-0{1 + number % 9}T10:00:00Z", f"help {number}"),
            message("to_client", "2025-03-01T10:00:05Z", "Agent is away", PLATFORM="FB"),
            message(
                "to_client",
                1740823260 + number,
                "on it",
                AGENT_USERNAME=f"agent{number % 4}",
                UNIQUE_POST_ID=f"p{number}",
            ),
            message("to_company", "2025-03-02T08:00:00+02:00", "thanks"),
            message("sideways", "2025-03-01T10:00:00Z", "bad direction"),
            message("to_company", "not a time", "bad time"),
            "not an object",
            message("to_company", "2025-03-01T10:00:00Z", "x" * 300),
        ]
        records.append(records[2])  # a repeated post id
        parts.append((f"chat-{number}", records))
    parts.append(("chat-0", [message("to_company", "2025-03-09T09:00:00Z", "again")]))
    parts.append(("", [message("to_company", "2025-03-09T09:00:00Z", "no id")]))
    parts.append(("chat-empty", []))
    body = ", ".join(f"{json.dumps(key)}: {json.dumps(value)}" for key, value in parts)
    return ("{" + body + "}").encode()


async def drain(source: Any) -> list[list[PackedChat]]:
    batches = []
    try:
        async for batch in source:
            batches.append(batch)
    finally:
        await source.aclose()
    return batches


async def read_in_process(data: bytes, read: ReadOptions) -> tuple[list[Any], UploadReport]:
    report = UploadReport()
    source = await open_source(io.BytesIO(data), read, report, process_min_bytes=0)
    assert isinstance(source, ProcessSource)
    return await drain(source), report


async def read_in_thread(data: bytes, read: ReadOptions) -> tuple[list[Any], UploadReport]:
    report = UploadReport()
    source = await open_source(io.BytesIO(data), read, report, process_min_bytes=None)
    assert isinstance(source, ThreadSource)
    return await drain(source), report


@pytest.mark.parametrize("engine", TIMESTAMP_FORMS)
async def test_a_process_reads_an_upload_exactly_as_a_thread_does(engine: str) -> None:
    read = options(TIMESTAMP_FORMS[engine])
    data = mixed_export()
    in_thread, thread_report = await read_in_thread(data, read)
    in_process, process_report = await read_in_process(data, read)

    assert in_process == in_thread
    assert process_report == thread_report
    # What the comparison covers: every kind of record was met and reported.
    assert thread_report.conversations_received == 15
    assert thread_report.invalid_records > 5 and thread_report.errors_truncated
    assert len(thread_report.errors) == 5
    assert thread_report.duplicates_skipped == 12
    assert thread_report.autoresponses_filtered == 12
    assert [len(batch) for batch in in_thread] == [3, 3, 3, 3, 2]
    first = in_thread[0][0]
    assert first.chat_id == "chat-0" and len(first.rows) == 3
    sent_at = first.rows[0][4]
    if engine == "sqlite":
        assert sent_at == "2025-03-01 10:00:00.000000"
    else:
        assert sent_at.isoformat() == "2025-03-01T10:00:00+00:00"
    assert first.measurement is not None and first.measurement[0] is None  # no platform
    assert first.agents == [("agent0", 1)]


async def test_a_broken_file_is_refused_with_the_same_message_from_a_process() -> None:
    data = mixed_export(4)[:-40]  # cut inside the last chat
    with pytest.raises(InvalidUpload) as in_thread:
        await read_in_thread(data, options())
    with pytest.raises(InvalidUpload) as in_process:
        await read_in_process(data, options())
    assert in_process.value.message == in_thread.value.message
    assert "not valid JSON" in in_process.value.message


async def test_a_refusal_keeps_its_details() -> None:
    data = b'{"ok": [], "chat-x": {"not": "an array"}}'
    with pytest.raises(InvalidUpload) as caught:
        await read_in_process(data, options())
    assert caught.value.details == {"chat_id": "chat-x"}


class FailingStream(io.RawIOBase):
    """Gives `good` bytes, then fails as a disk or connection might."""

    def __init__(self, good: bytes) -> None:
        self._good = io.BytesIO(good)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        size = self._good.readinto(buffer)
        if size:
            return size
        raise OSError("the upload could not be read")


async def test_a_failing_stream_is_the_error_not_a_file_cut_short() -> None:
    data = mixed_export(200)
    stream = FailingStream(data[: len(data) // 2])
    report = UploadReport()
    source = await open_source(stream, options(), report, process_min_bytes=0)  # type: ignore[arg-type]
    with pytest.raises(OSError, match="could not be read"):
        await drain(source)


async def test_a_failure_inside_the_process_is_an_error_not_a_refusal() -> None:
    # A timestamp form that cannot take a datetime: packing fails in the parsing process.
    with pytest.raises(RuntimeError, match="parsing the upload failed"):
        await read_in_process(mixed_export(2), options(operator.neg))


async def test_a_process_that_dies_is_an_error() -> None:
    report = UploadReport()
    source = await open_source(io.BytesIO(mixed_export(60)), options(), report, process_min_bytes=0)
    assert isinstance(source, ProcessSource)
    try:
        # Long before it has read anything: starting up alone takes it a tenth of a second.
        source.kill()
        with pytest.raises(RuntimeError, match=r"parsing process stopped \(exit code -9\)"):
            async for _ in source:
                pass
    finally:
        await source.aclose()
    assert source.returncode == -9


async def test_closing_early_stops_the_process_and_the_feeding() -> None:
    stream = io.BytesIO(mixed_export(20_000))
    report = UploadReport()
    source = await open_source(stream, options(batch_chats=2), report, process_min_bytes=0)
    assert isinstance(source, ProcessSource)
    assert len(await source.__anext__()) == 2
    await source.aclose()
    assert source.returncode is not None
    position = stream.tell()
    assert position < len(stream.getvalue())  # the rest was never read ...
    assert stream.read(1)  # ... and the stream is untouched and usable by its owner
    assert report.conversations_received < 20_000


async def test_the_upload_size_chooses_the_source() -> None:
    data = mixed_export(3)
    report = UploadReport()
    size = len(data)
    small = await open_source(io.BytesIO(data), options(), report, process_min_bytes=size + 1)
    big = await open_source(
        io.BytesIO(data), options(), UploadReport(), process_min_bytes=len(data)
    )
    assert isinstance(small, ThreadSource) and isinstance(big, ProcessSource)
    # The bytes read to decide are not lost to the thread source.
    small_batches = await drain(small)
    big_batches = await drain(big)
    assert small_batches == big_batches
    assert report.conversations_received == 6  # three chats, a repeat, no id, empty


@pytest.mark.parametrize("engine", TIMESTAMP_FORMS)
def test_packed_measurements_hold_the_same_times_as_their_messages(engine: str) -> None:
    timestamp = TIMESTAMP_FORMS[engine]
    export = io.BytesIO()
    write_export(export, messages=3000, seed=11)
    export.seek(0)
    parsed = options(timestamp).reader(export, UploadReport()).next_batch(10_000)
    packed = pack_batch(parsed, timestamp)
    assert sum(len(chat.replies) for chat in packed) > 300
    for chat, source in zip(packed, parsed, strict=True):
        assert source.measured is not None
        # Packed one time at a time, without reusing the messages' converted times.
        expected = pack_measured(
            chat.chat_id, chat.rows, chat.measurement[0], source.measured, timestamp
        )
        assert chat == expected
        times = {row[4] for row in chat.rows}
        assert {event[1] for event in chat.replies} | {event[2] for event in chat.replies} <= times


def options_frame(read: ReadOptions) -> bytes:
    body = pickle.dumps(read, protocol=pickle.HIGHEST_PROTOCOL)
    return FRAME_HEADER.pack(len(body)) + body


def read_frames(output: bytes) -> list[tuple[Any, ...]]:
    frames, position = [], 0
    while position < len(output):
        (size,) = FRAME_HEADER.unpack_from(output, position)
        position += FRAME_HEADER.size
        frames.append(pickle.loads(output[position : position + size]))
        position += size
    return frames


def test_the_parsing_process_collects_garbage_between_batches() -> None:
    collected = []
    output = io.BytesIO()
    source = io.BytesIO(options_frame(options(batch_chats=4)) + mixed_export(12))
    parse_process.run(source, output, between_batches=lambda: collected.append(output.tell()))
    frames = read_frames(output.getvalue())
    assert [kind for kind, _, _ in frames] == ["batch"] * len(frames)
    sizes = [len(body) for _, body, _ in frames]
    assert sizes == [4, 4, 4, 2, 0]  # 14 chats with an id (mixed_export)
    # Once after each batch was sent, none after the last (empty) one.
    assert len(collected) == len(sizes) - 1
    assert collected == sorted(set(collected))


def test_the_parsing_process_widens_both_of_its_pipes() -> None:
    """With 1 MiB of room, it rarely waits on the process serving its pipes."""
    capacity = parse_process.PIPE_CAPACITY_BYTES
    with open("/proc/sys/fs/pipe-max-size") as limit:
        allowed = os.geteuid() == 0 or int(limit.read()) >= capacity
    if not allowed:
        pytest.skip("this kernel refuses 1 MiB pipes to this user; the process keeps 64 KiB")
    data = options_frame(options(batch_chats=2)) + mixed_export(20_000)
    assert len(data) > 3 * capacity  # its first batch comes before the upload ends
    child = subprocess.Popen(
        [sys.executable, "-m", "powerpulse.ingest.parse_process"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert child.stdin is not None and child.stdout is not None
    stdin = child.stdin

    def feed() -> None:
        with contextlib.suppress(BrokenPipeError, ValueError):  # stopped below, once measured
            stdin.write(data)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        (size,) = FRAME_HEADER.unpack(child.stdout.read(FRAME_HEADER.size))
        kind, batch, _ = pickle.loads(child.stdout.read(size))
        assert kind == "batch" and len(batch) == 2
        # Still feeding, so both pipes are open on this side.
        assert fcntl.fcntl(stdin.fileno(), fcntl.F_GETPIPE_SZ) >= capacity
        assert fcntl.fcntl(child.stdout.fileno(), fcntl.F_GETPIPE_SZ) >= capacity
    finally:
        child.kill()
        child.wait()
        feeder.join(10)
        child.stdout.close()
        with contextlib.suppress(BrokenPipeError):
            stdin.close()

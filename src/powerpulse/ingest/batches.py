"""Reading an upload while the previous batch is stored: in a thread, or in a process.

Parsing, validating and measuring an export is pure Python and holds the interpreter lock,
as does preparing rows for the database, so in one process the two take turns on one core.
A big upload is therefore parsed by a child process (`python -m
powerpulse.ingest.parse_process`), which this process feeds the upload's bytes on its
standard input and which writes packed batches back on its standard output: parsing and
storing then use a core each. A small upload is read in a worker thread, where starting a
process would cost more than it saves.

Both sources yield the same packed batches and fill in the same upload report.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import pickle
import struct
import sys
from collections.abc import AsyncIterator
from typing import IO, Any

from ..errors import InvalidUpload
from .packing import PackedChat, pack_batch
from .reader import ReadOptions, UploadReport
from .stream import PrefixedStream

log = logging.getLogger(__name__)

PARSE_PROCESS_MODULE = "powerpulse.ingest.parse_process"
# Bytes of the upload read per write to the parsing process.
FEED_CHUNK_BYTES = 1 << 20
# The stream limit of the parsing process's output: this process buffers up to twice as
# much before it stops reading the pipe. It should hold a whole batch (0.8 MiB on average,
# 1.2 MiB at most, for 500 chats of the synthetic export): with much less, reading stalls
# every 64 KiB. Since the parsing process outpaces storing, batches wait here up to that
# bound: with 8 MiB, a 1M-message upload raised peak memory by 141 MiB, with 2 MiB 107 MiB.
PIPE_BUFFER_BYTES = 2 << 20
# Frames on the parsing process's pipes: an unsigned 64-bit length, then a pickle.
FRAME_HEADER = struct.Struct("<Q")
# The report's counters the reader keeps (storing adds to duplicates_skipped as well).
READER_COUNTERS = (
    "conversations_received",
    "messages_received",
    "duplicates_skipped",
    "autoresponses_filtered",
    "invalid_records",
)


class BatchSource:
    """Packed batches of an upload, each read while the caller stores the one before."""

    def __init__(self) -> None:
        self._pending: asyncio.Future[list[PackedChat]] | None = None
        self._finished = False

    def __aiter__(self) -> AsyncIterator[list[PackedChat]]:
        return self

    async def __anext__(self) -> list[PackedChat]:
        if self._finished:
            raise StopAsyncIteration
        if self._pending is None:
            self._pending = asyncio.ensure_future(self._read())
        batch = await self._pending
        if not batch:
            self._pending = None
            self._finished = True
            raise StopAsyncIteration
        self._pending = asyncio.ensure_future(self._read())
        return batch

    async def _read(self) -> list[PackedChat]:
        raise NotImplementedError

    async def aclose(self) -> None:
        """Stop reading; returns once nothing touches the stream any more."""
        self._finished = True
        await self._settle()

    async def _settle(self) -> None:
        if self._pending is not None:
            await asyncio.gather(self._pending, return_exceptions=True)
            self._pending = None


class ThreadSource(BatchSource):
    """Reads in a worker thread of this process."""

    def __init__(self, stream: IO[bytes], options: ReadOptions, report: UploadReport) -> None:
        super().__init__()
        self._reader = options.reader(stream, report)
        self._options = options

    def _next(self) -> list[PackedChat]:
        options = self._options
        return pack_batch(
            self._reader.next_batch(options.batch_chats),
            options.timestamp,
            copy=options.copy_rows,
        )

    async def _read(self) -> list[PackedChat]:
        return await asyncio.to_thread(self._next)


class ProcessSource(BatchSource):
    """Reads in a child process, which this process feeds the upload's bytes."""

    def __init__(
        self, head: bytes, stream: IO[bytes], options: ReadOptions, report: UploadReport
    ) -> None:
        super().__init__()
        self._head = head
        self._stream = stream
        self._options = options
        self._report = report
        self._process: asyncio.subprocess.Process | None = None
        self._feeder: asyncio.Task[None] | None = None
        self._feed_error: BaseException | None = None
        self._completed = False
        self.peak_rss_bytes: int | None = None

    async def start(self) -> None:
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            PARSE_PROCESS_MODULE,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            # A batch is read whole: without room for one, reading stalls every 64 KiB.
            limit=PIPE_BUFFER_BYTES,
        )
        self._feeder = asyncio.ensure_future(self._feed())

    async def _feed(self) -> None:
        assert self._process is not None and self._process.stdin is not None
        pipe = self._process.stdin
        try:
            options = pickle.dumps(self._options, protocol=pickle.HIGHEST_PROTOCOL)
            pipe.write(FRAME_HEADER.pack(len(options)) + options)
            pipe.write(self._head)
            self._head = b""
            await pipe.drain()
            while chunk := await asyncio.to_thread(self._stream.read, FEED_CHUNK_BYTES):
                pipe.write(chunk)
                await pipe.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the child stopped reading: its own result says why
        except Exception as exc:  # a failing stream is raised in place of the child's result
            self._feed_error = exc
        finally:
            pipe.close()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                await pipe.wait_closed()

    async def _read(self) -> list[PackedChat]:
        assert self._process is not None and self._process.stdout is not None
        pipe = self._process.stdout
        try:
            (size,) = FRAME_HEADER.unpack(await pipe.readexactly(FRAME_HEADER.size))
            payload = await pipe.readexactly(size)
        except asyncio.IncompleteReadError:
            code = await self._process.wait()
            self._raise_feed_error()
            raise RuntimeError(f"the upload's parsing process stopped (exit code {code})") from None
        kind, body, progress = await asyncio.to_thread(pickle.loads, payload)
        self._merge(progress)
        if kind == "batch":
            self._completed = not body
            return body  # type: ignore[no-any-return]
        self._raise_feed_error()
        if kind == "invalid":
            message, details = body
            raise InvalidUpload(message, **details)
        log.error("parsing an upload failed in its process:\n%s", body)
        raise RuntimeError("parsing the upload failed")

    def _raise_feed_error(self) -> None:
        # Reading the upload failed, so the child saw a file cut short: that is not the cause.
        if self._feed_error is not None:
            raise self._feed_error

    def _merge(self, progress: tuple[Any, ...]) -> None:
        counts, errors, truncated, peak_rss = progress
        report = self._report
        for name, count in zip(READER_COUNTERS, counts, strict=True):
            setattr(report, name, getattr(report, name) + count)
        report.errors.extend(errors)
        report.errors_truncated = report.errors_truncated or truncated
        if peak_rss:
            self.peak_rss_bytes = peak_rss

    @property
    def returncode(self) -> int | None:
        """The parsing process's exit status; None while it runs."""
        return None if self._process is None else self._process.returncode

    def kill(self) -> None:
        """Stop the parsing process at once."""
        if self._process is not None and self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()

    async def aclose(self) -> None:
        self._finished = True
        process = self._process
        if not self._completed:
            # Stopped early (an invalid file, a failure while storing): the rest is not wanted.
            self.kill()
        await self._settle()
        if self._feeder is not None:
            await asyncio.gather(self._feeder, return_exceptions=True)
        if process is not None:
            await process.wait()
        if self.peak_rss_bytes:
            log.debug(
                "upload parsed in a child process: peak RSS %d MiB", self.peak_rss_bytes >> 20
            )


async def open_source(
    stream: IO[bytes],
    options: ReadOptions,
    report: UploadReport,
    *,
    process_min_bytes: int | None,
) -> BatchSource:
    """A thread source, or a process source for an upload of at least `process_min_bytes`
    (None: never). The first bytes are read here to tell which."""
    if process_min_bytes is None:
        return ThreadSource(stream, options, report)
    head = await asyncio.to_thread(_read_up_to, stream, max(process_min_bytes, 1))
    if len(head) < process_min_bytes:
        replay = io.BufferedReader(PrefixedStream(head, stream))
        return ThreadSource(replay, options, report)
    source = ProcessSource(head, stream, options, report)
    await source.start()
    return source


def _read_up_to(stream: IO[bytes], size: int) -> bytes:
    parts: list[bytes] = []
    left = size
    while left > 0:
        part = stream.read(left)
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)

"""The upload's parsing process: `python -m powerpulse.ingest.parse_process`.

Reads a pickled ReadOptions frame and then the upload's bytes on standard input, and
writes one frame per packed batch on standard output (see powerpulse.ingest.batches):
("batch", chats, progress) until an empty batch ends the file, or ("invalid", (message,
details), progress) for a broken file, or ("failed", traceback, progress). Progress is
what the reader counted since the previous frame, the records it rejected, and, in the
last frame, the process's peak RSS.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import os
import pickle
import signal
import sys
import traceback
from collections.abc import Callable
from typing import IO, Any

from ..errors import InvalidUpload
from .batches import FEED_CHUNK_BYTES, FRAME_HEADER, READER_COUNTERS
from .packing import pack_batch
from .reader import ReadOptions, UploadReport

# The capacity asked of the kernel for the pipes this process reads and writes: 1 MiB, the
# most Linux grants an unprivileged process by default (/proc/sys/fs/pipe-max-size).
PIPE_CAPACITY_BYTES = 1 << 20


def _read_options(source: IO[bytes]) -> ReadOptions:
    header = source.read(FRAME_HEADER.size)
    (size,) = FRAME_HEADER.unpack(header)
    options = pickle.loads(source.read(size))
    if not isinstance(options, ReadOptions):
        raise TypeError("the first frame must hold ReadOptions")
    return options


def _peak_rss() -> int:
    """This process's own peak RSS. Not getrusage: on Linux its maximum also covers the
    moments between fork and exec, when the process was still a copy of its parent."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def widen_pipe(fd: int) -> None:
    """Give a pipe room for 1 MiB instead of the usual 64 KiB.

    The uploading process serves both pipes from its event loop, between the steps of
    storing a batch. With 64 KiB of room this process ran out of upload to read, or of
    room for its next batch, whenever such a step took longer than parsing 64 KiB (about
    3 ms), and then sat idle about a tenth of the time. With 1 MiB it keeps busy. A file
    rather than a pipe, or a kernel that refuses, leaves things as they are.
    """
    set_size = getattr(fcntl, "F_SETPIPE_SZ", None)
    if set_size is not None:
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, set_size, PIPE_CAPACITY_BYTES)


def run(
    source: IO[bytes], output: IO[bytes], *, between_batches: Callable[[], object] | None = None
) -> None:
    options = _read_options(source)
    report = UploadReport()
    reader = options.reader(source, report)
    sent = [0] * len(READER_COUNTERS)
    sent_errors = 0

    def send(kind: str, body: Any, final: bool) -> None:
        nonlocal sent, sent_errors
        now = [getattr(report, name) for name in READER_COUNTERS]
        counts = tuple(a - b for a, b in zip(now, sent, strict=True))
        errors = report.errors[sent_errors:]
        sent, sent_errors = now, len(report.errors)
        peak = _peak_rss() if final else 0
        frame = pickle.dumps(
            (kind, body, (counts, errors, report.errors_truncated, peak)),
            protocol=pickle.HIGHEST_PROTOCOL,
        )
        output.write(FRAME_HEADER.pack(len(frame)))
        output.write(frame)
        output.flush()

    try:
        while True:
            batch = pack_batch(
                reader.next_batch(options.batch_chats),
                options.timestamp,
                copy=options.copy_rows,
            )
            send("batch", batch, not batch)
            if not batch:
                return
            del batch
            if between_batches is not None:
                between_batches()
    except InvalidUpload as exc:
        send("invalid", (exc.message, exc.details), True)
    except (BrokenPipeError, ConnectionResetError):
        raise
    except Exception:
        send("failed", traceback.format_exc(), True)


def main() -> int:
    # Ctrl-C reaches the whole process group: the parent decides what stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for fd in (sys.stdin.fileno(), sys.stdout.fileno()):
        widen_pipe(fd)
    # Frames go to a private copy of standard output; anything else written there (a stray
    # warning, say) goes to standard error instead of corrupting the frames.
    output = os.fdopen(os.dup(sys.stdout.fileno()), "wb", buffering=FEED_CHUNK_BYTES)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    source = os.fdopen(os.dup(sys.stdin.fileno()), "rb", buffering=FEED_CHUNK_BYTES)
    # Garbage is collected once per batch, not every few hundred allocations: parsing
    # allocates a dict, a tuple and strings per record, nearly all freed by reference
    # counting, and the automatic collections (which also walk every live message of the
    # batch) took about a tenth of this process's time (BENCHMARKS.md). What was imported
    # is frozen first, so each collection walks only what the upload has alive.
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        run(source, output, between_batches=gc.collect)
        output.close()
    except (BrokenPipeError, ConnectionResetError):
        return 1  # the parent stopped listening: nothing is wanted any more
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

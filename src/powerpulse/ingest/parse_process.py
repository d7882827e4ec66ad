"""The upload's parsing process: `python -m powerpulse.ingest.parse_process`.

Reads a pickled ReadOptions frame and then the upload's bytes on standard input, and
writes one frame per packed batch on standard output (see powerpulse.ingest.batches):
("batch", chats, progress) until an empty batch ends the file, or ("invalid", (message,
details), progress) for a broken file, or ("failed", traceback, progress). Progress is
what the reader counted since the previous frame, the records it rejected, and, in the
last frame, the process's peak RSS.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import traceback
from typing import IO, Any

from ..errors import InvalidUpload
from .batches import FEED_CHUNK_BYTES, FRAME_HEADER, READER_COUNTERS
from .packing import pack_batch
from .reader import ReadOptions, UploadReport


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


def run(source: IO[bytes], output: IO[bytes]) -> None:
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
            batch = pack_batch(reader.next_batch(options.batch_chats), options.timestamp)
            send("batch", batch, not batch)
            if not batch:
                return
    except InvalidUpload as exc:
        send("invalid", (exc.message, exc.details), True)
    except (BrokenPipeError, ConnectionResetError):
        raise
    except Exception:
        send("failed", traceback.format_exc(), True)


def main() -> int:
    # Ctrl-C reaches the whole process group: the parent decides what stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Frames go to a private copy of standard output; anything else written there (a stray
    # warning, say) goes to standard error instead of corrupting the frames.
    output = os.fdopen(os.dup(sys.stdout.fileno()), "wb", buffering=FEED_CHUNK_BYTES)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    source = os.fdopen(os.dup(sys.stdin.fileno()), "rb", buffering=FEED_CHUNK_BYTES)
    try:
        run(source, output)
        output.close()
    except (BrokenPipeError, ConnectionResetError):
        return 1  # the parent stopped listening: nothing is wanted any more
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Where session-log bytes come from and go to: plain files, gzip, zstd, and `-` (stdin).

Every reader of a log (check, replay --verify, report, export, the TUI replay) goes through
`log_lines`, so a compressed log or a pipe reads wherever a plain file does. Compression is
recognised by its magic bytes, not the file name, so `zcat x.gz | slotlab check -` and
`slotlab check x.gz` and a gzip file misnamed `.jsonl` all read the same way.

Writers compress by suffix (`.gz`, `.zst`). What they write does not depend on the path: the
gzip header carries no file name and mtime 0, and one run written anywhere, compressed or not,
decompresses to identical bytes. (The compressed bytes themselves follow the flush points,
which are every 100 ms of wall time, so two compressed copies need not be equal byte for byte.)
"""

from __future__ import annotations

import gzip
import io
import sys
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, cast

import zstandard

STDIN = "-"
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class LogIOError(ValueError):
    """A log that cannot be opened or decompressed; the message names the file."""


def display_name(path: str | Path) -> str:
    return "<stdin>" if str(path) == STDIN else str(path)


def compression_for(path: str | Path) -> str:
    """The compression a writer uses for this path: 'gz', 'zst' or '' (plain)."""
    suffix = Path(path).suffix
    return {".gz": "gz", ".zst": "zst"}.get(suffix, "")


def _raw_input(path: str | Path) -> IO[bytes]:
    if str(path) == STDIN:
        return sys.stdin.buffer
    try:
        return Path(path).open("rb")
    except OSError as err:
        raise LogIOError(f"{path}: cannot read: {err.strerror}") from None


@contextmanager
def open_log(path: str | Path) -> Iterator[IO[bytes]]:
    """A binary stream of the log's decompressed bytes (plain, gzip or zstd, file or `-`)."""
    raw = _raw_input(path)
    buffered = (
        raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(cast(io.RawIOBase, raw))
    )
    try:
        magic = buffered.peek(4)[:4]
    except OSError as err:
        raise LogIOError(f"{display_name(path)}: cannot read: {err.strerror}") from None
    stream: IO[bytes]
    if magic.startswith(GZIP_MAGIC):
        stream = cast(IO[bytes], gzip.GzipFile(fileobj=buffered, mode="rb"))
    elif magic == ZSTD_MAGIC:
        # read_across_frames: a writer that was restarted may append a second frame.
        reader = zstandard.ZstdDecompressor().stream_reader(buffered, read_across_frames=True)
        stream = io.BufferedReader(cast(io.RawIOBase, reader))
    else:
        stream = buffered
    try:
        yield stream
    finally:
        if str(path) != STDIN:
            stream.close()
            raw.close()


def log_lines(path: str | Path) -> Iterator[bytes]:
    """The log's lines, each with its b"\\n" (a last line without one was cut mid-write).

    A compressed log whose writer was killed ends mid-stream; everything flushed before that
    is still yielded, and the stream simply ends there, as a plain file would.
    """
    name = display_name(path)
    with open_log(path) as stream:
        while True:
            try:
                line = stream.readline()
            except EOFError:
                return  # gzip: the stream was cut after its last flush
            except (OSError, zlib.error, zstandard.ZstdError) as err:
                if "truncated" in str(err).lower() or "incomplete" in str(err).lower():
                    return
                raise LogIOError(f"{name}: cannot decompress: {err}") from None
            if not line:
                return
            yield line


class _ZstdSink:
    """A zstd stream writer whose flush() ends a block, so every flush is decodable."""

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file
        self._writer = zstandard.ZstdCompressor(level=3).stream_writer(file, closefd=False)

    def write(self, data: bytes | bytearray) -> int:
        return self._writer.write(data)

    def flush(self) -> None:
        self._writer.flush(zstandard.FLUSH_BLOCK)
        self._file.flush()

    def close(self) -> None:
        self._writer.flush(zstandard.FLUSH_FRAME)
        self._writer.close()  # type: ignore[no-untyped-call]
        self._file.close()


class _GzipSink:
    """gzip with no file name and mtime 0 in its header; flush() is a zlib sync flush."""

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file
        self._gz = gzip.GzipFile(filename="", mode="wb", fileobj=file, mtime=0)

    def write(self, data: bytes | bytearray) -> int:
        return self._gz.write(data)

    def flush(self) -> None:
        self._gz.flush()  # zlib.Z_SYNC_FLUSH: a reader decodes up to here
        self._file.flush()

    def close(self) -> None:
        self._gz.close()
        self._file.close()


class _PlainSink:
    def __init__(self, file: IO[bytes]) -> None:
        self._file = file

    def write(self, data: bytes | bytearray) -> int:
        return self._file.write(data)

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


Sink = _PlainSink | _GzipSink | _ZstdSink


def open_sink(path: str | Path) -> Sink:
    """A writer for a log at this path, compressing by its suffix."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    file = p.open("wb")
    kind = compression_for(p)
    if kind == "gz":
        return _GzipSink(file)
    if kind == "zst":
        return _ZstdSink(file)
    return _PlainSink(file)

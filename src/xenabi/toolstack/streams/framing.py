"""Record framing shared by the libxl and libxc layers, and the byte I/O under the readers and writers.

``spec/streams.md`` §3: every record is ``u32 type, u32 body_length`` (little-endian), the body, then zero padding to
the next 8-byte boundary; ``body_length`` excludes the padding. Xen's C receivers refuse records longer than
128 MiB. The strict reader here also refuses non-zero padding (the C receivers skip it; Xen's verifier checks it).

:class:`StreamInput` reads a file or socket with ``readinto`` and counts the offset, so that every error can say where
it is; pages go straight into guest memory through :meth:`StreamInput.readinto`. :class:`VectorOutput` writes
lists of buffers with ``os.writev`` (files) or ``socket.sendmsg`` (sockets), so guest memory leaves as
``memoryview`` slices without a copy.
"""

from __future__ import annotations

import io
import os
import socket
import ssl
import stat
import struct
from collections.abc import Sequence
from typing import IO, BinaryIO

from xenabi.errors import StreamError

RECORD_HEADER = struct.Struct("<II")
MAX_RECORD_LENGTH = 128 << 20
ALIGN = 8
IOV_MAX = 1024  # buffers per writev call (Linux's UIO_MAXIOV)
READ_CHUNK = 1 << 20  # a record body is read in pieces of at most this, so a false length costs nothing

Buffer = bytes | bytearray | memoryview


def padding(length: int) -> int:
    return -length % ALIGN


def record_parts(rtype: int, body: Sequence[Buffer]) -> list[Buffer]:
    """A record as buffers: header, body parts (not copied), zero padding."""
    length = sum(len(part) for part in body)
    parts: list[Buffer] = [RECORD_HEADER.pack(rtype, length), *body]
    pad = padding(length)
    if pad:
        parts.append(bytes(pad))
    return parts


class StreamInput:
    """Exact reads from a binary file or socket file, with the running offset.

    A length read from the stream is a claim, not a fact: :meth:`read` grows its buffer as the bytes arrive, in
    pieces of at most :data:`READ_CHUNK`, so a 400-byte file claiming a 100 MiB record costs a megabyte and fails
    at its true end.
    """

    def __init__(self, source: BinaryIO, *, offset: int = 0) -> None:
        self.source = source
        self.offset = offset

    def read(self, size: int, *, layer: str, record: str, what: str) -> bytes:
        if size <= READ_CHUNK:
            buf = bytearray(size)
            self.readinto(memoryview(buf), layer=layer, record=record, what=what)
            return bytes(buf)
        start, data = self.offset, bytearray()
        while len(data) < size:
            piece = bytearray(min(READ_CHUNK, size - len(data)))
            try:
                self.readinto(memoryview(piece), layer=layer, record=record, what=what)
            except StreamError as exc:
                if exc.message.startswith("truncated"):  # say how far into the whole read the stream ended
                    got = self.offset - start
                    raise StreamError(
                        f"truncated: the stream ends {got} bytes into {size} of {what}",
                        layer=layer,
                        record=record,
                        offset=start,
                        expected=f"{size} bytes",
                    ) from None
                raise
            data += piece
        return bytes(data)

    def readinto(self, view: memoryview, *, layer: str, record: str, what: str) -> None:
        start = self.offset
        got = 0
        while got < len(view):
            try:
                n = self.source.readinto(view[got:])  # type: ignore[attr-defined]
            except (OSError, ValueError) as exc:
                raise StreamError(f"read failed: {exc}", layer=layer, record=record, offset=start) from exc
            if not n:
                raise StreamError(
                    f"truncated: the stream ends {got} bytes into {len(view)} of {what}",
                    layer=layer,
                    record=record,
                    offset=start,
                    expected=f"{len(view)} bytes",
                )
            got += n
            self.offset += n

    def remaining(self) -> int | None:
        """How many bytes follow the current offset, for a source with an end (a regular file or an in-memory
        buffer); None for a socket or pipe, whose end is the peer's to decide."""
        source = self.source
        if isinstance(source, io.BytesIO):
            return len(source.getbuffer()) - source.tell()
        try:
            info = os.fstat(source.fileno())
            position = source.tell()
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            return None
        if not stat.S_ISREG(info.st_mode):
            return None
        return max(info.st_size - position, 0)


class VectorOutput:
    """Vectored, zero-copy output to a file object, a raw fd, or a socket."""

    def __init__(self, target: IO[bytes] | socket.socket) -> None:
        self.target = target
        self.written = 0
        if isinstance(target, ssl.SSLSocket):  # TLS records cannot be written vectored: one buffer at a time
            self._send = self._sendall_each
        elif isinstance(target, socket.socket):
            self._send = self._sendmsg
        else:
            try:
                target.flush()
                self.fd = target.fileno()
                self._send = self._writev
            except (AttributeError, OSError, ValueError):
                self._send = self._write

    def write(self, parts: Sequence[Buffer]) -> None:
        views = [memoryview(part).cast("B") for part in parts if len(part)]
        while views:
            batch, views = views[:IOV_MAX], views[IOV_MAX:]
            while batch:
                sent = self._send(batch)
                self.written += sent
                batch = _advance(batch, sent)

    def _writev(self, views: list[memoryview]) -> int:
        return os.writev(self.fd, views)

    def _sendmsg(self, views: list[memoryview]) -> int:
        assert isinstance(self.target, socket.socket)
        return self.target.sendmsg(views)

    def _sendall_each(self, views: list[memoryview]) -> int:
        assert isinstance(self.target, socket.socket)
        for view in views:
            self.target.sendall(view)
        return sum(len(view) for view in views)

    def _write(self, views: list[memoryview]) -> int:
        total = 0
        for view in views:
            self.target.write(view)  # type: ignore[union-attr]
            total += len(view)
        return total


def _advance(views: list[memoryview], sent: int) -> list[memoryview]:
    """Drop ``sent`` bytes from the front of ``views`` (a partial writev)."""
    index = 0
    while index < len(views) and sent >= len(views[index]):
        sent -= len(views[index])
        index += 1
    rest = views[index:]
    if rest and sent:
        rest[0] = rest[0][sent:]
    return rest

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

import os
import socket
import struct
from collections.abc import Sequence
from typing import BinaryIO

from xenabi.errors import StreamError

RECORD_HEADER = struct.Struct("<II")
MAX_RECORD_LENGTH = 128 << 20
ALIGN = 8
IOV_MAX = 1024  # buffers per writev call (Linux's UIO_MAXIOV)

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
    """Exact reads from a binary file or socket file, with the running offset."""

    def __init__(self, source: BinaryIO, *, offset: int = 0) -> None:
        self.source = source
        self.offset = offset

    def read(self, size: int, *, layer: str, record: str, what: str) -> bytes:
        buf = bytearray(size)
        self.readinto(memoryview(buf), layer=layer, record=record, what=what)
        return bytes(buf)

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

    def at_eof(self) -> bool:
        """True if nothing follows (only meaningful for files)."""
        probe = self.source.read(1)
        if probe:
            self.offset += 1
            return False
        return True


class VectorOutput:
    """Vectored, zero-copy output to a file object, a raw fd, or a socket."""

    def __init__(self, target: BinaryIO | socket.socket) -> None:
        self.target = target
        self.written = 0
        if isinstance(target, socket.socket):
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

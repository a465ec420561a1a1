"""Migration between processes over TCP: ``xenabi host serve`` receives, ``Toolstack.migrate(domid, "host:port")``
sends. The bytes from sender to receiver are exactly a save file's (xl header, libxl and libxc streams); around
them runs a line-based handshake in the spirit of xl's (``tools/xl/xl_migrate.c``):

1. receiver: ``XENABI-MIGRATE 1 READY``; sender: ``MODE strict`` or ``MODE force`` (may the receiver override
   admission).
2. The sender pauses the source and sends the stream up to STATIC_DATA_END, then waits. The receiver decides the
   policy on arrival and runs admission before creating anything: ``ADMIT`` or ``REFUSED <json reasons>`` (or
   ``ERROR <text>`` for a bad stream).
3. After ``ADMIT`` the sender sends the pages and the rest; the receiver restores the domain, paused, and answers
   ``RECEIVED <domid>``.
4. The sender answers ``GO running`` or ``GO paused``; the receiver unpauses (if running) and answers ``DONE``.
   Only then does the sender destroy the source.

Failure handling, so that nothing is lost: up to ``RECEIVED``, any failure (refusal, bad stream, timeout, dropped
connection) resumes the source and the receiver destroys whatever it created. After ``GO`` has been sent the
outcome is unknown if ``DONE`` never arrives (the receiver may or may not have the domain running), so the source
is kept *paused*, as xl does, and the error says so. A receiver that never gets ``GO`` destroys its copy.
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO

from xenabi.errors import AbiIncompatible, MigrationError, XenabiError
from xenabi.hypervisor.domain import Lifecycle
from xenabi.policy import Refusal, RefusalKind
from xenabi.toolstack import saverestore
from xenabi.toolstack.streams.framing import VectorOutput

if TYPE_CHECKING:
    from xenabi.toolstack.toolstack import Toolstack

BANNER = b"XENABI-MIGRATE 1 READY"
MAX_LINE = 1 << 16


def parse_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:  # 0: any free port (to listen on)
        raise ValueError(f"{address!r} is not HOST:PORT")
    return host or "127.0.0.1", int(port)


def _readline(stream: BinaryIO, what: str) -> bytes:
    line = stream.readline(MAX_LINE)
    if not line.endswith(b"\n"):
        raise ConnectionError(f"connection closed while waiting for {what}")
    return line.rstrip(b"\n")


def _refusals(doc: str) -> tuple[Refusal, ...]:
    return tuple(Refusal(r["feature"], RefusalKind(r["kind"]), r["release"]) for r in json.loads(doc))


# --- sender ---------------------------------------------------------------------------------------------------
def migrate_tcp(ts: Toolstack, domid: int, address: str, *, force: bool = False, timeout: float = 30.0) -> int:
    d = ts.hv.domain(domid)
    ts.config(domid)
    saverestore.check_saveable(d)
    try:
        sock = socket.create_connection(parse_address(address), timeout=timeout)
    except (OSError, ValueError) as exc:
        raise MigrationError(f"cannot reach {address}: {exc}; the source was not touched", cause=exc) from exc
    with sock, sock.makefile("rb") as replies:
        was_running = d.lifecycle is Lifecycle.RUNNING
        paused = False
        try:
            if _readline(replies, "the receiver's banner") != BANNER:
                raise ConnectionError("not a xenabi migration receiver")
            sock.sendall(b"MODE force\n" if force else b"MODE strict\n")
            ts.hv.pause(domid)
            paused = True

            def wait_for_verdict() -> None:
                verdict = _readline(replies, "the admission verdict")
                if verdict == b"ADMIT":
                    return
                if verdict.startswith(b"REFUSED "):
                    raise AbiIncompatible(_refusals(verdict[8:].decode()), host=address)
                raise MigrationError(f"the receiver refused the stream: {verdict.decode(errors='replace')}")

            saverestore.write_domain(ts, domid, VectorOutput(sock), static_data_done=wait_for_verdict)
            answer = _readline(replies, "the receiver's confirmation")
            if not answer.startswith(b"RECEIVED "):
                raise MigrationError(f"the receiver failed: {answer.decode(errors='replace')}")
            remote = int(answer[9:])
        except BaseException as exc:
            if paused:
                ts.hv.unpause(domid)
            if isinstance(exc, AbiIncompatible | MigrationError):
                raise
            raise MigrationError(f"migration to {address} failed ({exc}); the source was resumed", cause=exc) from exc
        try:
            sock.sendall(b"GO running\n" if was_running else b"GO paused\n")
            if _readline(replies, "DONE") != b"DONE":
                raise ConnectionError("the receiver did not confirm")
        except (OSError, ConnectionError) as exc:
            raise MigrationError(
                f"d{domid} was sent to {address} but its start there was not confirmed ({exc}); the source is kept "
                "paused: check the receiver before resuming or destroying it",
                source="paused",
                cause=exc,
            ) from exc
    ts.destroy(domid)
    return remote


# --- receiver -------------------------------------------------------------------------------------------------
@dataclass
class Received:
    """One incoming migration, as the receiver saw it."""

    peer: str
    outcome: str  # started | received-paused | refused | failed | aborted
    domid: int | None = None
    detail: str = ""
    reasons: tuple[Refusal, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "peer": self.peer,
            "outcome": self.outcome,
            "domid": self.domid,
            "detail": self.detail,
            "reasons": [r.to_json() for r in self.reasons],
        }


class MigrationReceiver:
    """Accepts migrations into ``ts``'s host, one connection at a time."""

    def __init__(self, ts: Toolstack, host: str = "127.0.0.1", port: int = 0, *, timeout: float = 30.0) -> None:
        self.ts = ts
        self.timeout = timeout
        self.listener = socket.create_server((host, port))
        self.address = "{}:{}".format(*self.listener.getsockname()[:2])

    def close(self) -> None:
        self.listener.close()

    def serve(self, *, once: bool = False, report: Callable[[Received], None] | None = None) -> None:
        while True:
            conn, peer = self.listener.accept()
            result = self.handle(conn, f"{peer[0]}:{peer[1]}")
            if report is not None:
                report(result)
            if once:
                return

    def handle(self, conn: socket.socket, peer: str) -> Received:
        conn.settimeout(self.timeout)
        with conn, conn.makefile("rb") as stream:
            try:
                conn.sendall(BANNER + b"\n")
                mode = _readline(stream, "the sender's mode")
                if mode not in (b"MODE strict", b"MODE force"):
                    raise ConnectionError(f"unexpected {mode!r}")

                def admitted(_domid: int) -> None:
                    conn.sendall(b"ADMIT\n")

                domid = saverestore.restore(
                    self.ts, stream, force=mode == b"MODE force", paused=True, admitted=admitted
                )
            except AbiIncompatible as exc:
                reasons = tuple(exc.reasons)  # type: ignore[arg-type]
                _send_quietly(conn, b"REFUSED " + json.dumps([r.to_json() for r in reasons]).encode() + b"\n")
                return Received(peer, "refused", detail=str(exc), reasons=reasons)
            except (XenabiError, OSError, ConnectionError) as exc:
                _send_quietly(conn, b"ERROR " + str(exc).encode(errors="replace").replace(b"\n", b" ") + b"\n")
                return Received(peer, "failed", detail=str(exc))
            try:
                conn.sendall(f"RECEIVED {domid}\n".encode())
                go = _readline(stream, "GO")
                if go not in (b"GO running", b"GO paused"):
                    raise ConnectionError(f"unexpected {go!r}")
            except (OSError, ConnectionError) as exc:
                self.ts.destroy(domid)
                return Received(peer, "aborted", detail=f"no permission to start ({exc}); the copy was destroyed")
            if go == b"GO running":
                self.ts.hv.unpause(domid)
            _send_quietly(conn, b"DONE\n")
            return Received(peer, "started" if go == b"GO running" else "received-paused", domid)


def _send_quietly(conn: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):
        conn.sendall(data)

"""Migration between processes: over TCP (``xenabi host serve`` receives, ``Toolstack.migrate(domid, "host:port")``
sends) or over ssh (``xenabi migrate FILE user@host`` runs ``xenabi host receive`` at the far end, which speaks the
same protocol on its standard input and output). The bytes from sender to receiver are exactly a save file's (xl
header, libxl and libxc streams); around them runs a line-based handshake in the spirit of xl's
(``tools/xl/xl_migrate.c``):

1. receiver: ``XENABI-MIGRATE 1 READY``; sender: ``MODE strict`` or ``MODE force`` (may the receiver override
   admission).
2. The sender pauses the source and sends the stream up to STATIC_DATA_END, then waits. The receiver decides the
   policy on arrival and runs admission before creating anything: ``ADMIT`` or ``REFUSED <json reasons>`` (or
   ``ERROR <text>`` for a bad stream).
3. After ``ADMIT`` the sender sends the pages and the rest; the receiver restores the domain, paused, and answers
   ``RECEIVED <domid>``.
4. The sender answers ``GO running`` or ``GO paused``; the receiver unpauses (if running) and answers ``DONE``.
   Only then does the sender destroy the source.

Overrides belong to the receiver. A sender may ask for ``MODE force``; the receiver honours it only if its
operator allowed overrides (``allow_force``, ``host serve --allow-force``). Otherwise admission applies as for a
strict sender, and a refusal says that overrides are not allowed there: ``REFUSED {"reasons": [...], "overrides":
"not allowed here"}``. An honoured override is announced to the sender as ``ADMIT FORCED <json reasons>``, so both
sides report it.

No open listener: a receiver listens on a loopback address unless it is given TLS (``tls``: mutual TLS with Python's
``ssl``, the peer's certificate checked against the operator's client CA). A peer without a valid client
certificate is refused before a byte of its stream is read, and the refusal is logged. Between two machines,
``xenabi migrate FILE user@host`` runs the receiver over ssh instead (``host receive``), as ``xl migrate`` does.

A receiver busy with as many migrations as it runs at once (``max_concurrent``) tells a new sender so before its
banner, ``WAIT <text>`` every few seconds until a slot is free; the sender reports it and waits. A receiver with a
full queue as well answers ``BUSY <text>`` and closes.

Deadlines, so that one peer cannot hold the receiver: the handshake up to the admission verdict must finish within
``timeout`` seconds in all (not per read); after ``ADMIT`` the stream must keep up a minimum average rate
(``min_rate`` bytes a second, after a grace of ``timeout`` seconds), and each later line of the protocol again has
``timeout`` seconds. A peer that falls behind is cut off and whatever it started is destroyed. Every connection is
served on its own thread, each change to the host under one lock, and nothing one connection raises (a bug, a
``MemoryError``) reaches the accept loop: it is logged as that connection's failure and the VMs already held stay.

Failure handling, so that nothing is lost: up to ``RECEIVED``, any failure (refusal, bad stream, timeout, dropped
connection) resumes the source and the receiver destroys whatever it created. After ``GO`` has been sent the
outcome is unknown if ``DONE`` never arrives (the receiver may or may not have the domain running), so the source
is kept *paused*, as xl does, and the error says so. A receiver that never gets ``GO`` destroys its copy.
"""

from __future__ import annotations

import contextlib
import errno
import io
import ipaddress
import json
import logging
import shlex
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from xenabi.errors import AbiIncompatible, MigrationError, XenabiError
from xenabi.hypervisor.domain import Lifecycle
from xenabi.policy import Refusal, RefusalKind
from xenabi.toolstack import saverestore
from xenabi.toolstack.streams.framing import VectorOutput

if TYPE_CHECKING:
    from xenabi.toolstack.toolstack import Toolstack

BANNER = b"XENABI-MIGRATE 1 READY"
MAX_LINE = 1 << 16
WAIT_NOTICE_INTERVAL = 5.0  # seconds between WAIT lines to a queued sender
MIN_RATE = 256 << 10  # bytes a second a stream must average once pages flow
log = logging.getLogger("xenabi.transport")


def parse_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:  # 0: any free port (to listen on)
        raise ValueError(f"{address!r} is not HOST:PORT")
    return host or "127.0.0.1", int(port)


def _readline(stream: IO[bytes], what: str) -> bytes:
    line = stream.readline(MAX_LINE)
    if not line.endswith(b"\n"):
        raise ConnectionError(f"connection closed while waiting for {what}")
    return line.rstrip(b"\n")


def _refusals(doc: str) -> tuple[tuple[Refusal, ...], str]:
    """A REFUSED or ADMIT FORCED line's reasons, and what the receiver said about overrides."""
    parsed = json.loads(doc)
    items, overrides = (parsed, "") if isinstance(parsed, list) else (parsed["reasons"], parsed.get("overrides", ""))
    return tuple(Refusal(r["feature"], RefusalKind(r["kind"]), r["release"]) for r in items), overrides


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def server_tls(cert: str, key: str, client_ca: str) -> ssl.SSLContext:
    """Mutual TLS for a receiver: its certificate and key, and the CA that signs the clients it accepts."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=client_ca)
    context.load_cert_chain(cert, key)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_tls(cert: str, key: str, ca: str) -> ssl.SSLContext:
    """Mutual TLS for a sender: its client certificate and key, and the CA that signs the receivers it trusts. The
    receiver's certificate chain is checked; its name is not (receivers are addressed by IP address)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    context.check_hostname = False
    context.load_cert_chain(cert, key)
    return context


# --- sender ---------------------------------------------------------------------------------------------------
def migrate_tcp(
    ts: Toolstack,
    domid: int,
    address: str,
    *,
    force: bool = False,
    timeout: float = 30.0,
    notice: Callable[[str], None] | None = None,
    tls: ssl.SSLContext | None = None,
) -> int:
    d = ts.hv.domain(domid)
    ts.config(domid)
    saverestore.check_saveable(d)
    try:
        host, port = parse_address(address)
        sock = socket.create_connection((host, port), timeout=timeout)
        if tls is not None:
            sock = tls.wrap_socket(sock, server_hostname=host)
    except (OSError, ValueError) as exc:
        raise MigrationError(f"cannot reach {address}: {exc}; the source was not touched", cause=exc) from exc
    with sock, sock.makefile("rb") as replies:
        return _send_over(ts, domid, address, sock.sendall, VectorOutput(sock), replies, force=force, notice=notice)


def migrate_ssh(
    ts: Toolstack,
    domid: int,
    target: str,
    *,
    ssh_command: str = "ssh",
    force: bool = False,
    notice: Callable[[str], None] | None = None,
) -> int:
    """Migrate to ``target`` (``[user@]host``) as ``xl migrate`` does: run ``xenabi host receive`` there through
    ``ssh_command`` (split like a shell would, e.g. ``"ssh -p 2222 -i key"``) and speak the protocol over the
    channel; ssh authenticates both ends. The far side's operator chooses its release, ABI control and whether it
    allows overrides (for instance with a forced command in ``authorized_keys``): the sender passes no options."""
    d = ts.hv.domain(domid)
    ts.config(domid)
    saverestore.check_saveable(d)
    argv = [*shlex.split(ssh_command), target, "xenabi", "host", "receive"]
    try:
        process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    except OSError as exc:
        raise MigrationError(f"cannot run {argv[0]!r}: {exc}; the source was not touched", cause=exc) from exc
    assert process.stdin is not None and process.stdout is not None
    stdin = process.stdin

    def send(data: bytes) -> None:
        stdin.write(data)
        stdin.flush()

    try:
        return _send_over(ts, domid, target, send, VectorOutput(stdin), process.stdout, force=force, notice=notice)
    finally:
        with contextlib.suppress(OSError):
            stdin.close()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


def _send_over(
    ts: Toolstack,
    domid: int,
    address: str,
    send: Callable[[bytes], None],
    out: VectorOutput,
    replies: IO[bytes],
    *,
    force: bool,
    notice: Callable[[str], None] | None,
) -> int:
    """The sender's side of the protocol (the module docstring) over any channel."""
    d = ts.hv.domain(domid)
    was_running = d.lifecycle is Lifecycle.RUNNING
    paused = False
    try:
        banner = _readline(replies, "the receiver's banner")
        while banner.startswith(b"WAIT "):  # queued behind other migrations: the receiver keeps us informed
            if notice is not None:
                notice(f"{address}: {banner[5:].decode(errors='replace')}")
            banner = _readline(replies, "the receiver's banner")
        if banner.startswith(b"BUSY "):
            busy = banner[5:].decode(errors="replace")
            raise MigrationError(f"{address} is busy: {busy}; the source was resumed")
        if banner != BANNER:
            raise ConnectionError("not a xenabi migration receiver")
        send(b"MODE force\n" if force else b"MODE strict\n")
        ts.hv.pause(domid)
        paused = True

        def wait_for_verdict() -> None:
            verdict = _readline(replies, "the admission verdict")
            if verdict == b"ADMIT":
                return
            if verdict.startswith(b"ADMIT FORCED "):
                reasons, _ = _refusals(verdict[13:].decode())
                if notice is not None:
                    notice(f"{address} overrode admission: " + "; ".join(str(r) for r in reasons))
                return
            if verdict.startswith(b"REFUSED "):
                reasons, overrides = _refusals(verdict[8:].decode())
                where = f"{address} ({overrides})" if overrides else address
                raise AbiIncompatible(reasons, host=where)
            raise MigrationError(f"the receiver refused the stream: {verdict.decode(errors='replace')}")

        saverestore.write_domain(ts, domid, out, static_data_done=wait_for_verdict)
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
        send(b"GO running\n" if was_running else b"GO paused\n")
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
    outcome: str  # started | received-paused | refused | failed | aborted | busy
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


class TooSlow(TimeoutError):
    """A peer missed its deadline (the handshake's, or the stream's minimum rate)."""


class DeadlineReader(io.RawIOBase):
    """A socket's input under a deadline that the caller moves: a fixed one for a protocol step, or one that
    advances with every byte received (``min_rate``), so a peer trickling a byte every few seconds falls behind."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.received = 0
        self._deadline = time.monotonic()
        self._what = "the peer"
        self._rate_from: tuple[float, int, float] | None = None  # (start, bytes at start, rate)

    def readable(self) -> bool:
        return True

    def within(self, seconds: float, what: str) -> None:
        """The next reads must complete within ``seconds`` from now, in all."""
        self._rate_from = None
        self._deadline = time.monotonic() + seconds
        self._what = what

    def at_rate(self, grace: float, rate: float, what: str) -> None:
        """From now on the peer must average ``rate`` bytes a second, after ``grace`` seconds."""
        self._rate_from = (time.monotonic() + grace, self.received, rate)
        self._what = what

    def _current_deadline(self) -> float:
        if self._rate_from is None:
            return self._deadline
        start, base, rate = self._rate_from
        return start + (self.received - base) / rate

    def readinto(self, buffer: Any) -> int:
        remaining = self._current_deadline() - time.monotonic()
        if remaining <= 0:
            raise TooSlow(self._too_slow())
        self.sock.settimeout(remaining)
        try:
            n = self.sock.recv_into(buffer)
        except TimeoutError:
            raise TooSlow(self._too_slow()) from None
        self.received += n
        return n

    def _too_slow(self) -> str:
        if self._rate_from is None:
            return f"deadline passed waiting for {self._what}"
        _start, _base, rate = self._rate_from
        return f"{self._what} fell below the minimum rate of {rate / 1024:.0f} KiB/s"


class MigrationReceiver:
    """Accepts migrations into ``ts``'s host: up to ``max_concurrent`` at once, each on its own thread, up to
    ``max_queued`` more waiting (told so), the rest turned away with ``BUSY``."""

    def __init__(
        self,
        ts: Toolstack,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        timeout: float = 30.0,
        min_rate: float = MIN_RATE,
        max_concurrent: int = 4,
        max_queued: int = 16,
        allow_force: bool = False,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        if timeout <= 0 or min_rate <= 0 or max_concurrent < 1 or max_queued < 0:
            raise ValueError("timeout and min_rate must be positive, max_concurrent at least 1, max_queued >= 0")
        if tls is None and not is_loopback(host):
            raise MigrationError(
                f"refusing to listen on {host} without TLS: anyone who can reach it could send a VM. Listen on "
                "127.0.0.1, give --tls-cert, --tls-key and --client-ca for mutual TLS, or migrate over ssh "
                "(xenabi migrate FILE user@host)",
                source="none",
            )
        self.allow_force = allow_force
        self.tls = tls
        self.ts = ts
        self.timeout = timeout
        self.min_rate = min_rate
        self.max_concurrent = max_concurrent
        self.max_queued = max_queued
        self.host_lock = threading.RLock()  # every change to ts and its hypervisor
        self._slots = threading.Semaphore(max_concurrent)
        self._state = threading.Lock()
        self._active = 0
        self._queued = 0
        self._threads: set[threading.Thread] = set()
        self._report_lock = threading.Lock()
        self.listener = socket.create_server((host, port))
        self.address = "{}:{}".format(*self.listener.getsockname()[:2])

    def close(self) -> None:
        """Stop accepting: a ``serve`` loop blocked in ``accept`` on another thread returns."""
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes accept(); close() alone does not on Linux
        self.listener.close()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the connections in progress to finish."""
        for thread in list(self._threads):
            thread.join(timeout)

    def serve(
        self, *, once: bool = False, report: Callable[[Received], None] | None = None, limit: int | None = None
    ) -> None:
        """Accept connections until the listener is closed (or after ``limit`` of them; ``once`` serves one, in this
        thread). Nothing a connection raises stops the loop."""
        accepted = 0
        while limit is None or accepted < limit:
            try:
                conn, peer = self.listener.accept()
            except OSError as exc:
                if self.listener.fileno() < 0 or exc.errno == errno.EINVAL:  # closed or shut down: stopping
                    return
                log.warning("accept failed: %s", exc)
                time.sleep(0.05)  # out of file descriptors, say: let connections in progress finish
                continue
            accepted += 1
            name = f"{peer[0]}:{peer[1]}"
            if once:
                self._served(conn, name, report, queued=False)
                return
            self._dispatch(conn, name, report)
        self.join()

    def _dispatch(self, conn: socket.socket, peer: str, report: Callable[[Received], None] | None) -> None:
        with self._state:
            if self._active >= self.max_concurrent and self._queued >= self.max_queued:
                busy = True
            else:
                busy = False
                queued = self._active >= self.max_concurrent
                self._queued += queued
                self._active += not queued
        if busy:
            text = f"{self.max_concurrent} migrations in progress and {self._queued} waiting; try again later"
            _send_quietly(conn, b"BUSY " + text.encode() + b"\n")
            conn.close()
            self._report(report, Received(peer, "busy", detail=text))
            return
        thread = threading.Thread(target=self._served, args=(conn, peer, report), kwargs={"queued": queued},
                                  name=f"migration from {peer}", daemon=True)  # fmt: skip
        self._threads.add(thread)
        thread.start()

    def _served(
        self, conn: socket.socket, peer: str, report: Callable[[Received], None] | None, *, queued: bool
    ) -> None:
        try:
            if queued:
                if not self._wait_for_slot(conn):
                    conn.close()
                    self._report(report, Received(peer, "aborted", detail="the sender left while waiting"))
                    return
            else:
                self._slots.acquire()
            try:
                result = self.handle(conn, peer)
            except Exception as exc:  # the last resort: nothing one connection raises reaches the accept loop
                log.exception("migration from %s failed", peer)
                conn.close()
                result = Received(peer, "failed", detail=f"internal error: {type(exc).__name__}: {exc}")
            finally:
                self._slots.release()
                with self._state:
                    self._active -= 1
            self._report(report, result)
        finally:
            self._threads.discard(threading.current_thread())

    def _wait_for_slot(self, conn: socket.socket) -> bool:
        """Hold a queued connection until a slot frees, telling the sender every few seconds. False if the sender
        went away."""
        try:
            while not self._slots.acquire(timeout=WAIT_NOTICE_INTERVAL if self._told(conn) else 0):
                pass
        except OSError:
            with self._state:
                self._queued -= 1
            return False
        with self._state:
            self._queued -= 1
            self._active += 1
        return True

    def _told(self, conn: socket.socket) -> bool:
        text = f"WAIT {self.max_concurrent} migrations in progress here; yours is queued\n"
        conn.sendall(text.encode())
        return True

    def _report(self, report: Callable[[Received], None] | None, result: Received) -> None:
        log.info("%s: %s %s", result.peer, result.outcome, result.detail)
        if report is None:
            return
        with self._report_lock:
            try:
                report(result)
            except Exception:  # a reporting failure (a closed stdout) is not the migration's
                log.exception("reporting %s failed", result.peer)

    def handle(self, conn: socket.socket, peer: str) -> Received:
        """One migration, start to finish (see the module docstring for the protocol and its deadlines)."""
        if self.tls is not None:
            try:
                conn.settimeout(self.timeout)
                conn = self.tls.wrap_socket(conn, server_side=True)
            except (ssl.SSLError, OSError) as exc:
                log.warning("refused %s: TLS handshake failed (%s)", peer, exc)
                conn.close()
                return Received(peer, "refused", detail=f"TLS handshake failed ({exc}); nothing was read")
        raw = DeadlineReader(conn)
        raw.within(self.timeout, "the handshake")
        conn.settimeout(self.timeout)

        def on_admit() -> None:
            raw.at_rate(self.timeout, self.min_rate, "the stream")

        def on_received() -> None:
            raw.within(self.timeout, "GO")

        with conn, io.BufferedReader(raw, buffer_size=1 << 16) as stream:
            return receive(self.ts, stream, conn.sendall, peer, allow_force=self.allow_force,
                           host_lock=self.host_lock, on_admit=on_admit, on_received=on_received)  # fmt: skip


def receive(
    ts: Toolstack,
    stream: IO[bytes],
    send: Callable[[bytes], None],
    peer: str,
    *,
    allow_force: bool = False,
    host_lock: contextlib.AbstractContextManager[object] | None = None,
    on_admit: Callable[[], None] | None = None,
    on_received: Callable[[], None] | None = None,
) -> Received:
    """The receiver's side of the protocol over any channel: a TCP connection (``MigrationReceiver``, which moves
    its deadlines at ``on_admit`` and ``on_received``) or ssh's stdin and stdout (``xenabi host receive``)."""
    lock = host_lock if host_lock is not None else contextlib.nullcontext()

    def say(data: bytes) -> None:
        with contextlib.suppress(OSError):
            send(data)

    try:
        send(BANNER + b"\n")
        mode = _readline(stream, "the sender's mode")
        if mode not in (b"MODE strict", b"MODE force"):
            raise ConnectionError(f"unexpected {mode!r}")
        asked_force = mode == b"MODE force"

        def admitted(_domid: int, overridden: tuple[Refusal, ...]) -> None:
            if overridden:
                send(b"ADMIT FORCED " + json.dumps([r.to_json() for r in overridden]).encode() + b"\n")
            else:
                send(b"ADMIT\n")
            if on_admit is not None:
                on_admit()

        domid = saverestore.restore(
            ts,
            stream,  # type: ignore[arg-type]
            force=asked_force and allow_force,  # the receiver's operator decides, not the sender
            paused=True,
            admitted=admitted,
            host_lock=host_lock,
        )
    except AbiIncompatible as exc:
        reasons = exc.reasons
        overrides = "" if not asked_force else "overrides are not allowed here"
        say(b"REFUSED " + json.dumps({"reasons": [r.to_json() for r in reasons], "overrides": overrides}).encode()
            + b"\n")  # fmt: skip
        detail = str(exc) + (f"; the sender asked for force, but {overrides}" if overrides else "")
        return Received(peer, "refused", detail=detail, reasons=reasons)
    except (XenabiError, OSError, ConnectionError) as exc:
        say(b"ERROR " + str(exc).encode(errors="replace").replace(b"\n", b" ") + b"\n")
        return Received(peer, "failed", detail=str(exc))
    except Exception as exc:  # a bug or a MemoryError: this connection's failure, not the host's
        log.exception("migration from %s failed", peer)
        say(b"ERROR internal error in the receiver; nothing was kept\n")
        return Received(peer, "failed", detail=f"internal error: {type(exc).__name__}: {exc}")
    try:
        send(f"RECEIVED {domid}\n".encode())
        if on_received is not None:
            on_received()
        go = _readline(stream, "GO")
        if go not in (b"GO running", b"GO paused"):
            raise ConnectionError(f"unexpected {go!r}")
    except (OSError, ConnectionError) as exc:
        with lock:
            ts.destroy(domid)
        return Received(peer, "aborted", detail=f"no permission to start ({exc}); the copy was destroyed")
    if go == b"GO running":
        with lock:
            ts.hv.unpause(domid)
    say(b"DONE\n")
    forced = ts.overrides.get(domid, ())
    detail = ("forced over: " + "; ".join(str(r) for r in forced)) if forced else ""
    return Received(peer, "started" if go == b"GO running" else "received-paused", domid, detail, forced)


def _send_quietly(conn: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):
        conn.sendall(data)

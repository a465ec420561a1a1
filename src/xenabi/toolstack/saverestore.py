"""Save, restore and in-process migration (``DESIGN.md`` decisions 7-9; ``spec/streams.md``; ``spec/evtchn.md`` §7).

Save: the domain is paused, its stream written (to a temporary file renamed into place, so a failed save leaves no
partial file), then destroyed; if writing fails the domain is unpaused and nothing is lost. PV domains are refused
(PV save is not modelled).

Restore: the stream is read until its static data is complete; then the policy on arrival is decided: the
config's pinned policy, or else the legacy policy of the source release named in the libxc domain header (decision
7). Admission (decision 8) runs before anything is created; only then is the domain created, with exactly that
policy, and the pages read straight into its memory. Any failure after that destroys the new domain, so a refused
or broken stream leaves nothing behind. Event channel state is not carried: the new domain starts in 2-level mode,
and the toolstack gives it fresh xenstore and console ports through HVM params, as ``libxl__build_pre`` does.

Migration (in-process): the source is paused, its stream written by a thread into a socket pair and restored on
the destination (paused) as it arrives, so no copy of the stream is ever held; only when the destination holds the
domain is the source destroyed and the copy unpaused (if the source was running). If the
destination refuses or fails, the source is resumed. Pre-copy rounds are not modelled: the transfer is a stop-and-copy.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from xenabi.abi.domctl import GuestType
from xenabi.errors import AbiIncompatible, MigrationError, NotModelled, StreamError
from xenabi.hypervisor.domain import XEN_PAGES, Domain, Lifecycle
from xenabi.policy import Refusal
from xenabi.toolstack.arrival import arrival_config, arrival_features
from xenabi.toolstack.streams.framing import VectorOutput
from xenabi.toolstack.streams.reader import Log, PageTarget, StreamInfo, StreamReader
from xenabi.toolstack.streams.writer import write_stream

if TYPE_CHECKING:
    from xenabi.toolstack.toolstack import Toolstack

PAGE_SIZE = 4096


def config_json(ts: Toolstack, domid: int) -> bytes:
    return json.dumps(ts.config(domid).to_json(), separators=(",", ":")).encode()


def check_saveable(d: Domain) -> None:
    if d.guest_type is GuestType.PV:
        raise NotModelled(
            f"d{d.domid} is a PV domain: saving and migrating PV domains is not modelled (HVM and PVH are)"
        )


def write_domain(
    ts: Toolstack, domid: int, out: VectorOutput, static_data_done: Callable[[], None] | None = None
) -> None:
    d = ts.hv.domain(domid)
    write_stream(out, d, config_json(ts, domid), ts.hv.release.version, static_data_done=static_data_done)


def save(ts: Toolstack, domid: int, target: str | os.PathLike[str] | BinaryIO) -> None:
    d = ts.hv.domain(domid)
    ts.config(domid)
    check_saveable(d)
    ts.hv.pause(domid)
    tmp: Path | None = None
    try:
        if isinstance(target, str | os.PathLike):
            path = Path(target)
            tmp = path.with_name(f".{path.name}.xenabi-partial")
            with open(tmp, "wb") as stream:
                write_domain(ts, domid, VectorOutput(stream))
            os.replace(tmp, path)
            tmp = None
        else:
            write_domain(ts, domid, VectorOutput(target))
            target.flush()
    except BaseException as exc:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        ts.hv.unpause(domid)
        raise MigrationError(f"saving d{domid} failed ({exc}); the domain was resumed", cause=exc) from exc
    ts.destroy(domid)


def _page_target(d: Domain) -> PageTarget:
    memory = memoryview(d.memory)
    xen_pages = set(XEN_PAGES)

    def target(pfn: int, count: int) -> memoryview:
        if pfn + count > d.nr_pages:
            raise ValueError(f"pfns {pfn:#x}-{pfn + count - 1:#x} lie beyond the domain's {d.nr_pages} pages")
        clash = xen_pages.intersection(range(pfn, pfn + count))
        if clash:
            raise ValueError(f"pfn {min(clash):#x} is one of Xen's pages (shared_info, vcpu_info), not guest RAM")
        d.populate_memory(pfn * PAGE_SIZE, count * PAGE_SIZE)  # the batch arrives next: fault it in at once
        return memory[pfn * PAGE_SIZE : (pfn + count) * PAGE_SIZE]

    return target


def restore(
    ts: Toolstack,
    source: BinaryIO,
    *,
    force: bool = False,
    paused: bool = False,
    admitted: Callable[[int, tuple[Refusal, ...]], None] | None = None,
    log: Log | None = None,
    host_lock: AbstractContextManager[object] | None = None,
    source_gnttab_max_version: int | None = None,
) -> int:
    """Restore one stream into ``ts``'s host; returns the new domid. ``admitted(domid, overridden)`` runs once the
    domain is created, with the admission reasons ``force`` overrode (a migration receiver tells the sender to go
    on, and whether it overrode admission). ``host_lock`` is held around every change to the
    host (admission and creation, the finishing steps, the clean-up), not while pages arrive, so that a receiver
    can restore several streams at once."""
    hv = ts.hv
    lock = host_lock if host_lock is not None else contextlib.nullcontext()
    created: list[int] = []
    overridden: tuple[Refusal, ...] = ()
    basis = ""

    def begin(info: StreamInfo) -> PageTarget:
        nonlocal overridden, basis
        cfg = info.config
        if cfg is None:
            raise StreamError("no domain config: a restore needs the xl header", layer="xl", record="header", offset=0)
        cfg = arrival_config(info).with_uuid()
        features, basis = arrival_features(info, source_gnttab_max_version)
        policy = cfg.policy(features)
        with lock:
            overridden = ts.admit(policy, cfg, force=force)
            domid = ts.create_domain(cfg, ts.grantable(policy.features, cfg, overridden))
            created.append(domid)
        if admitted is not None:
            admitted(domid, overridden)
        return _page_target(hv.domain(domid))

    try:
        info = StreamReader(source, begin=begin, log=log).read()
        assert info.config is not None and created
        domid = created[0]
        with lock:
            d = hv.domain(domid)
            d.tsc_info = info.tsc_info
            d.hvm_params.update(info.hvm_params)
            d.emulator_context = info.emulator_context
            d.emulator_xenstore = dict(info.emulator_xenstore)
            ts.build_pre(domid)
            cfg = arrival_config(info)
            ts.configs[domid] = ts.pin(cfg, domid) if ts.pins else cfg
            if overridden:
                ts.overrides[domid] = overridden
            ts.policy_basis[domid] = basis
            if not paused:
                hv.unpause(domid)
        return domid
    except BaseException:
        with lock:
            for domid in created:
                if domid in hv.domains:
                    hv.destroy_domain(domid)
                ts.configs.pop(domid, None)
        raise


def migrate_local(ts: Toolstack, domid: int, dest: Toolstack, *, force: bool = False) -> int:
    d = ts.hv.domain(domid)
    ts.config(domid)
    check_saveable(d)
    was_running = d.lifecycle is Lifecycle.RUNNING
    ts.hv.pause(domid)
    # The stream goes through a socket pair, written by a thread as the receiver reads it: the pages are never
    # held twice (the BytesIO this replaced held the whole stream beside both domains).
    send_end, recv_end = socket.socketpair()
    failures: list[BaseException] = []

    def send() -> None:
        try:
            with send_end:
                write_domain(ts, domid, VectorOutput(send_end))
        except BaseException as exc:  # reported by the receiving side, which sees the stream end early
            failures.append(exc)

    writer = threading.Thread(target=send, name=f"migration of d{domid}", daemon=True)
    writer.start()
    try:
        with recv_end, recv_end.makefile("rb") as stream:
            # the receiving toolstack's operator decides whether a sender's request to force is honoured
            new = dest.restore(stream, force=force and dest.allow_force, paused=True)
    except AbiIncompatible as exc:
        ts.hv.unpause(domid)
        if force and not dest.allow_force:
            raise AbiIncompatible(exc.reasons, host=f"{dest.name} (overrides are not allowed here)") from exc
        raise
    except BaseException as exc:
        ts.hv.unpause(domid)
        cause = failures[0] if failures else exc
        raise MigrationError(
            f"migrating d{domid} to {dest.name} failed ({cause}); the source was resumed", cause=cause
        ) from exc
    finally:
        recv_end.close()  # a refused or failed restore stops reading; the writer's next send then fails
        writer.join()
    if was_running:
        dest.hv.unpause(new)
    ts.destroy(domid)
    return new

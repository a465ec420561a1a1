"""Writing a domain as Xen does: xl header, libxl v2 stream, libxc v3 stream inline (``spec/streams.md`` §3).

The libxc part follows Xen's x86 HVM saver: image header (v3), domain header (HVM, this host's Xen version),
STATIC_DATA_END (the model keeps no CPUID or MSR policy to send), PAGE_DATA for every page of guest RAM in batches of
at most 1024 pfns, X86_TSC_INFO, HVM_CONTEXT, HVM_PARAMS (the params Xen saves, zero values left out), END. The
libxl part wraps it: LIBXC_CONTEXT, the libxc stream, for HVM the emulator's xenstore data (when there is any)
and context (when the domain has one), END. PVH domains are saved like HVM ones, without emulator records: they
have no device model.

Guest memory is never copied: each PAGE_DATA record is its header, its pfn array and a ``memoryview`` of the
contiguous run of pages, handed to a vectored write. Xen's own pages (shared_info, vcpu_info) are not guest RAM
and are not sent; event channel state is not part of any record (``spec/evtchn.md`` §7).
"""

from __future__ import annotations

import array
from collections.abc import Callable, Iterator

from xenabi.abi.domctl import GuestType
from xenabi.abi.hvm import HVM_PARAM_CONSOLE_PFN, HVM_PARAM_STORE_PFN
from xenabi.hypervisor.domain import Domain
from xenabi.toolstack.streams import libxc, libxl, xl
from xenabi.toolstack.streams.framing import Buffer, VectorOutput, record_parts
from xenabi.toolstack.streams.hvmctx import MODEL_GTSC_KHZ, build_context
from xenabi.toolstack.streams.libxc import LibxcRecord
from xenabi.toolstack.streams.libxl import LibxlRecord

SAVED_HVM_PARAMS = (
    HVM_PARAM_STORE_PFN,
    5,  # IOREQ_PFN
    6,  # BUFIOREQ_PFN
    9,  # VIRIDIAN
    12,  # IDENT_PT
    HVM_PARAM_CONSOLE_PFN,
    19,  # ACPI_IOPORTS_LOCATION
    27,  # PAGING_RING_PFN
    28,  # MONITOR_RING_PFN
    29,  # SHARING_RING_PFN
    32,  # IOREQ_SERVER_PFN
    33,  # NR_IOREQ_SERVER_PAGES
    34,  # VM_GENERATION_ID_ADDR
    36,  # X87_FIP_WIDTH
    37,  # VM86_TSS_SIZED
    38,  # MCA_CAP
)
"""What Xen's HVM saver sends (``write_hvm_params``), in its order."""


def guest_ram_batches(d: Domain) -> Iterator[tuple[int, int]]:
    """(first pfn, count) runs of guest RAM, each at most MAX_BATCH_SIZE long."""
    pfn = 0
    while pfn < d.nr_pages:
        if not d.is_guest_ram(pfn):
            pfn += 1
            continue
        start = pfn
        while pfn < d.nr_pages and d.is_guest_ram(pfn) and pfn - start < libxc.MAX_BATCH_SIZE:
            pfn += 1
        yield start, pfn - start


def libxc_records(
    d: Domain, xen_version: tuple[int, int], static_data_done: Callable[[], None] | None
) -> Iterator[list[Buffer]]:
    yield [libxc.pack_image_header(), libxc.pack_domain_header(libxc.DHDR_TYPE_X86_HVM, xen_version)]
    yield record_parts(LibxcRecord.STATIC_DATA_END, ())
    if static_data_done is not None:
        static_data_done()
    memory = memoryview(d.memory)
    for start, count in guest_ram_batches(d):
        pfns = array.array("Q", range(start, start + count))  # type NOTAB (0) in bits 63-60
        head = libxc.PAGE_DATA_HEADER.pack(count, 0)
        pages = memory[start * libxc.PAGE_SIZE : (start + count) * libxc.PAGE_SIZE]
        yield record_parts(LibxcRecord.PAGE_DATA, (head, pfns.tobytes(), pages))
    mode, khz, nsec, incarnation = d.tsc_info or (0, MODEL_GTSC_KHZ, 0, 0)
    yield record_parts(LibxcRecord.X86_TSC_INFO, (libxc.TSC_INFO.pack(mode, khz, nsec, incarnation, 0),))
    yield record_parts(LibxcRecord.HVM_CONTEXT, (build_context(),))
    params = [(index, d.hvm_params[index]) for index in SAVED_HVM_PARAMS if d.hvm_params.get(index)]
    body = libxc.HVM_PARAMS_HEADER.pack(len(params), 0) + b"".join(libxc.HVM_PARAM_ENTRY.pack(*p) for p in params)
    yield record_parts(LibxcRecord.HVM_PARAMS, (body,))
    yield record_parts(LibxcRecord.END, ())


def stream_records(
    d: Domain,
    config_json: bytes,
    xen_version: tuple[int, int],
    *,
    xl_header: bool = True,
    static_data_done: Callable[[], None] | None = None,
) -> Iterator[list[Buffer]]:
    """The whole stream as buffer lists, one per record (the xl and libxl headers first)."""
    if xl_header:
        yield [xl.pack_header(config_json + b"\0")]
    yield [libxl.pack_header()]
    yield libxl.record(LibxlRecord.LIBXC_CONTEXT)
    yield from libxc_records(d, xen_version, static_data_done)
    if d.guest_type is GuestType.HVM:
        if d.emulator_xenstore:
            yield libxl.record(LibxlRecord.EMULATOR_XENSTORE_DATA, libxl.emulator_xenstore_body(d.emulator_xenstore))
        if d.emulator_context is not None:
            yield libxl.record(LibxlRecord.EMULATOR_CONTEXT, libxl.emulator_context_body(d.emulator_context))
    yield libxl.record(LibxlRecord.END)


def write_stream(
    out: VectorOutput,
    d: Domain,
    config_json: bytes,
    xen_version: tuple[int, int],
    *,
    xl_header: bool = True,
    static_data_done: Callable[[], None] | None = None,
) -> None:
    """Write the stream of ``d``. ``static_data_done`` runs after STATIC_DATA_END is written (a migration waits
    there for the receiver's admission verdict, before any page is sent)."""
    for parts in stream_records(d, config_json, xen_version, xl_header=xl_header, static_data_done=static_data_done):
        out.write(parts)

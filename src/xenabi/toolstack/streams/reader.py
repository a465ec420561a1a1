"""The strict stream reader: what Xen's C receivers accept, record by record (``spec/streams.md`` §3, §6).

It mirrors ``xl``'s header check, ``libxl_stream_read.c`` and ``xg_sr_restore*.c`` rather than Xen's Python verifier. It
refuses: a wrong magic, ident or version; a big-endian stream at any layer; unknown mandatory header flags or reserved
bits; any libxl record it does not know (checkpoint records included: checkpointed streams are not modelled); emulator
records for a domain that is not HVM; unknown mandatory libxc records (unknown optional ones, bit 31, are skipped);
records over 128 MiB; non-zero padding; a config whose guest type contradicts the libxc domain header (an x86 HVM stream
carries HVM and PVH guests only, as libxl's restore checks); bytes after the final END of a file (xl and Xen's verifier
ignore them, but a save file is exactly one stream, so they mean a damaged or concatenated file; both ``restore`` and
``stream verify`` use this one rule, and a socket's stream simply ends at END); in v3, PAGE_DATA before STATIC_DATA_END
and static records after it; an HVM stream that ends without HVM_CONTEXT; x86 PV streams (PV restore is not modelled);
truncation anywhere. Every error is a :class:`~xenabi.errors.StreamError` naming the layer, the record, its byte offset
and what was expected; nothing else escapes.

Pages are read straight into their destination. ``begin`` is called once, when the static data is complete
(STATIC_DATA_END in v3; the first PAGE_DATA, or END, in v2), with what has been read so far; it returns the
:data:`PageTarget` pages go into (a restore creates the domain there, after admission), or None to read them into a
scratch buffer (verification). Anything ``begin`` raises propagates unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

from xenabi.abi.domctl import GuestType
from xenabi.abi.hvm import HVM_NR_PARAMS
from xenabi.errors import ConfigError, StreamError, XlCfgError
from xenabi.releases import LINES
from xenabi.toolstack.config import DomainConfig
from xenabi.toolstack.streams import libxc, libxl, xl
from xenabi.toolstack.streams.framing import MAX_RECORD_LENGTH, RECORD_HEADER, StreamInput, padding
from xenabi.toolstack.streams.hvmctx import check_context
from xenabi.toolstack.streams.libxc import LibxcRecord
from xenabi.toolstack.streams.libxl import Emulator, LibxlRecord

PageTarget = Callable[[int, int], memoryview]
"""(first pfn, count) -> the writable memory those pages go to; raises ValueError for pfns it cannot take."""


@dataclass
class StreamInfo:
    """What a stream said, as far as it has been read."""

    xl_header: xl.XlHeader | None = None
    config: DomainConfig | None = None
    libxl_options: int = 0
    libxc_version: int = 0
    domain_type: int = 0
    domain_header_offset: int = 0
    xen_version: tuple[int, int] = (0, 0)
    cpuid_policy: list[tuple[int, ...]] = field(default_factory=list)
    msr_policy: list[tuple[int, ...]] = field(default_factory=list)
    tsc_info: tuple[int, int, int, int] | None = None
    hvm_context: bytes | None = None
    hvm_params: dict[int, int] = field(default_factory=dict)
    emulator_xenstore: dict[str, str] = field(default_factory=dict)
    emulator_context: bytes | None = None
    pages: int = 0
    page_records: int = 0
    skipped_optional: list[int] = field(default_factory=list)
    length: int = 0

    @property
    def guest_type(self) -> GuestType:
        return self.config.guest_type if self.config is not None else GuestType.HVM


Log = Callable[[str], None]


class StreamReader:
    """Reads one stream. ``fmt`` is where it starts: ``xl`` (a save file or migration), ``libxl`` or ``libxc``."""

    def __init__(
        self,
        source: BinaryIO,
        *,
        fmt: str = "xl",
        begin: Callable[[StreamInfo], PageTarget | None] | None = None,
        log: Log | None = None,
    ) -> None:
        if fmt not in ("xl", "libxl", "libxc"):
            raise ValueError(f"unknown stream format {fmt!r}")
        self.io = StreamInput(source)
        self.fmt = fmt
        self.begin = begin
        self.log = log or (lambda _msg: None)
        self.info = StreamInfo()
        self._target: PageTarget | None = None
        self._begun = False
        self._scratch = bytearray(libxc.MAX_BATCH_SIZE * libxc.PAGE_SIZE)

    # --- entry ----------------------------------------------------------------------------------------------
    def read(self) -> StreamInfo:
        if self.fmt == "xl":
            self._xl_header()
        if self.fmt in ("xl", "libxl"):
            self._libxl_stream()
        else:
            self._libxc_stream()
        self.info.length = self.io.offset
        trailing = self.io.remaining()
        if trailing:
            layer = "libxc" if self.fmt == "libxc" else "libxl"
            raise self.error(layer, "END", self.io.offset, f"{trailing} bytes after the final END", "end of file")
        return self.info

    def error(self, layer: str, record: str, offset: int, message: str, expected: str | None = None) -> StreamError:
        return StreamError(message, layer=layer, record=record, offset=offset, expected=expected)

    # --- xl -------------------------------------------------------------------------------------------------
    def _xl_header(self) -> None:
        start = self.io.offset
        raw = self.io.read(xl.HEADER_SIZE, layer="xl", record="header", what="the xl header")
        if raw[:32] != xl.XL_MAGIC:
            raise self.error(
                "xl", "header", start, "not an xl save file or migration stream (bad magic)", repr(xl.XL_MAGIC)
            )
        byteorder, mandatory, optional, optional_len = xl.FIELDS.unpack_from(raw, 32)
        if byteorder != xl.BYTEORDER:
            what = "big-endian" if byteorder == 0x04030201 else f"byte order {byteorder:#x}"
            raise self.error(
                "xl",
                "header",
                start + 32,
                f"{what} stream; only little-endian is supported",
                "0x01020304 in little-endian",
            )
        if mandatory & ~xl.KNOWN_MANDATORY:
            raise self.error(
                "xl", "header", start + 36, f"unknown mandatory flags {mandatory & ~xl.KNOWN_MANDATORY:#x}"
            )
        if not mandatory & xl.XL_MANDATORY_FLAG_STREAMv2:
            raise self.error(
                "xl",
                "header",
                start + 36,
                "a legacy (v1) libxc stream follows; only v2 is read",
                "XL_MANDATORY_FLAG_STREAMv2",
            )
        if optional & ~xl.KNOWN_OPTIONAL:
            raise self.error("xl", "header", start + 40, f"unknown optional flags {optional:#x}")
        if optional_len < xl.CONFIG_LEN.size or optional_len > MAX_RECORD_LENGTH:
            raise self.error(
                "xl",
                "header",
                start + 44,
                f"optional data length {optional_len}",
                "4 bytes of config length and the config",
            )
        data_at = self.io.offset
        data = self.io.read(optional_len, layer="xl", record="config", what="the domain config")
        (config_len,) = xl.CONFIG_LEN.unpack_from(data)
        if config_len > optional_len - xl.CONFIG_LEN.size:
            raise self.error(
                "xl",
                "config",
                data_at,
                f"config length {config_len} exceeds the optional data",
                f"at most {optional_len - 4}",
            )
        config = data[4 : 4 + config_len]
        header = xl.XlHeader(mandatory, optional, config)
        self.info.xl_header = header
        self.info.config = self._parse_config(header, data_at)
        self.log(
            f"xl header: flags {mandatory:#x} ({'JSON' if header.is_json else 'xl.cfg'} config, "
            f"{config_len} bytes), domain {self.info.config.name!r} ({self.info.config.guest_type.value})"
        )

    def _parse_config(self, header: xl.XlHeader, offset: int) -> DomainConfig:
        try:
            if header.is_json:
                if not header.config.endswith(b"\0"):
                    raise self.error("xl", "config", offset, "JSON config without its trailing NUL")
                return DomainConfig.from_json(header.config[:-1].decode("utf-8"))
            return DomainConfig.from_xl(header.config.decode("utf-8"), source="<embedded xl.cfg>")
        except (ConfigError, XlCfgError, ValueError, RecursionError) as exc:  # ValueError: bad JSON, UTF-8, ints
            raise self.error("xl", "config", offset, f"the domain config is not valid: {exc}") from exc

    # --- libxl ----------------------------------------------------------------------------------------------
    def _libxl_stream(self) -> None:
        start = self.io.offset
        raw = self.io.read(libxl.HEADER.size, layer="libxl", record="header", what="the libxl header")
        ident, version, options = libxl.HEADER.unpack(raw)
        if ident != libxl.IDENT:
            raise self.error("libxl", "header", start, f"ident {ident:#x}", "0x4c6962786c466d74 (LibxlFmt)")
        if version != libxl.VERSION:
            raise self.error("libxl", "header", start + 8, f"version {version}", "2")
        if options & libxl.OPT_BIG_ENDIAN:
            raise self.error("libxl", "header", start + 12, "big-endian stream; only little-endian is supported")
        if options & ~(libxl.OPT_BIG_ENDIAN | libxl.OPT_LEGACY):
            raise self.error("libxl", "header", start + 12, f"reserved option bits {options:#x}", "0")
        self.info.libxl_options = options
        self.log(f"libxl header: version 2, options {options:#x}")
        seen_libxc = False
        while True:
            offset, rtype, body = self._record("libxl", libxl_record_name)
            assert isinstance(body, bytes)
            name = libxl_record_name(rtype)
            self.log(f"libxl record: {name}, length {len(body)}")
            if rtype == LibxlRecord.END:
                self._expect_empty("libxl", name, offset, body)
                if not seen_libxc:
                    raise self.error("libxl", name, offset, "END before any LIBXC_CONTEXT", "LIBXC_CONTEXT")
                return
            if rtype == LibxlRecord.LIBXC_CONTEXT:
                self._expect_empty("libxl", name, offset, body)
                if seen_libxc:
                    raise self.error("libxl", name, offset, "a second LIBXC_CONTEXT")
                seen_libxc = True
                self._libxc_stream()
            elif rtype in (LibxlRecord.EMULATOR_XENSTORE_DATA, LibxlRecord.EMULATOR_CONTEXT):
                self._emulator(rtype, name, offset, body, seen_libxc)
            elif rtype in (LibxlRecord.CHECKPOINT_END, LibxlRecord.CHECKPOINT_STATE):
                raise self.error("libxl", name, offset, "checkpointed (Remus/COLO) streams are not modelled")
            else:
                raise self.error("libxl", name, offset, "libxl refuses every record type it does not know")

    def _emulator(self, rtype: int, name: str, offset: int, body: bytes, seen_libxc: bool) -> None:
        if not seen_libxc:
            raise self.error("libxl", name, offset, "emulator record before LIBXC_CONTEXT", "LIBXC_CONTEXT")
        if self.info.config is not None and self.info.config.guest_type is not GuestType.HVM:
            raise self.error(
                "libxl", name, offset, f"emulator record for a {self.info.guest_type.value} domain", "HVM guests only"
            )
        if len(body) < libxl.EMULATOR_HEADER.size:
            raise self.error("libxl", name, offset, f"body of {len(body)} bytes", "at least 8")
        emulator, _index = libxl.EMULATOR_HEADER.unpack_from(body)
        if emulator not in Emulator._value2member_map_:
            raise self.error("libxl", name, offset, f"unknown emulator id {emulator}", "0, 1 or 2")
        data = body[libxl.EMULATOR_HEADER.size :]
        if rtype == LibxlRecord.EMULATOR_CONTEXT:
            self.info.emulator_context = data
            return
        if data and not data.endswith(b"\0"):
            raise self.error("libxl", name, offset, "xenstore data not NUL-terminated")
        strings = data[:-1].split(b"\0") if data else []
        if len(strings) % 2:
            raise self.error("libxl", name, offset, f"{len(strings)} strings", "key/value pairs")
        try:
            pairs = [s.decode("utf-8") for s in strings]
        except UnicodeDecodeError as exc:
            raise self.error("libxl", name, offset, f"xenstore data is not UTF-8: {exc}") from exc
        self.info.emulator_xenstore.update(zip(pairs[::2], pairs[1::2], strict=True))

    # --- libxc ----------------------------------------------------------------------------------------------
    def _libxc_stream(self) -> None:
        start = self.io.offset
        raw = self.io.read(libxc.HEADER.size, layer="libxc", record="image header", what="the image header")
        marker, ident, version, options, res1, res2 = libxc.HEADER.unpack(raw)
        if marker != libxc.MARKER:
            raise self.error("libxc", "image header", start, f"marker {marker:#x}", "0xffffffffffffffff")
        if ident != libxc.IDENT:
            raise self.error("libxc", "image header", start + 8, f"id {ident:#x}", "0x58454e46 (XENF)")
        if version not in (2, 3):
            raise self.error("libxc", "image header", start + 12, f"version {version}", "2 or 3")
        if options & libxc.IHDR_OPT_BIG_ENDIAN:
            raise self.error("libxc", "image header", start + 16, "big-endian stream; only little-endian is supported")
        if options or res1 or res2:
            raise self.error("libxc", "image header", start + 16, "reserved bits set", "0")
        self.info.libxc_version = version
        start = self.io.offset
        raw = self.io.read(libxc.DOMAIN_HEADER.size, layer="libxc", record="domain header", what="the domain header")
        dtype, page_shift, res, major, minor = libxc.DOMAIN_HEADER.unpack(raw)
        if dtype == libxc.DHDR_TYPE_X86_PV:
            raise self.error(
                "libxc", "domain header", start, "an x86 PV stream: PV restore is not modelled", "type 2 (x86 HVM)"
            )
        if dtype != libxc.DHDR_TYPE_X86_HVM:
            raise self.error("libxc", "domain header", start, f"domain type {dtype}", "2 (x86 HVM)")
        if page_shift != libxc.PAGE_SHIFT:
            raise self.error("libxc", "domain header", start + 4, f"page shift {page_shift}", "12")
        if res:
            raise self.error("libxc", "domain header", start + 6, "reserved field set", "0")
        if major and f"{major}.{minor}" not in LINES:  # major 0: a legacy-converted stream (restore decides)
            raise self.error(
                "libxc", "domain header", start + 8, f"written by Xen {major}.{minor}, which is not in the release "
                f"table", f"a release from {next(iter(LINES))} to {list(LINES)[-1]}",
            )  # fmt: skip
        config = self.info.config
        if config is not None and config.guest_type is GuestType.PV:
            raise self.error(
                "libxc",
                "domain header",
                start,
                'the config says type = "pv" but the stream is of an x86 HVM domain',
                "an hvm or pvh config",
            )
        self.info.domain_type, self.info.xen_version = dtype, (major, minor)
        self.info.domain_header_offset = start
        self.log(f"libxc image header: version {version}; domain header: x86 HVM, Xen {major}.{minor}")
        seen_sde = False
        while True:
            offset, rtype, body = self._record("libxc", libxc.record_name, streamed=LibxcRecord.PAGE_DATA)
            name = libxc.record_name(rtype)
            if isinstance(body, int):  # PAGE_DATA: the body is read as it is checked, pages into place
                if version == 3 and not seen_sde:
                    raise self.error("libxc", name, offset, "PAGE_DATA before STATIC_DATA_END", "STATIC_DATA_END")
                self._start()
                self._page_data(offset, body)
                continue
            assert isinstance(body, bytes)
            self.log(f"libxc record: {name}, length {len(body)}")
            if rtype == LibxcRecord.END:
                self._expect_empty("libxc", name, offset, body)
                if version == 3 and not seen_sde:
                    raise self.error("libxc", name, offset, "END without STATIC_DATA_END", "STATIC_DATA_END")
                if self.info.hvm_context is None:
                    raise self.error("libxc", name, offset, "an HVM stream must carry HVM_CONTEXT", "HVM_CONTEXT")
                self._start()
                return
            if rtype == LibxcRecord.STATIC_DATA_END:
                self._expect_empty("libxc", name, offset, body)
                if version < 3:
                    raise self.error("libxc", name, offset, "STATIC_DATA_END in a v2 stream", "v3 only")
                if seen_sde:
                    raise self.error("libxc", name, offset, "a second STATIC_DATA_END")
                seen_sde = True
                self._start()
            elif rtype in (LibxcRecord.X86_CPUID_POLICY, LibxcRecord.X86_MSR_POLICY):
                self._policy_record(rtype, name, offset, body, version, seen_sde)
            elif rtype == LibxcRecord.X86_TSC_INFO:
                if len(body) != libxc.TSC_INFO.size:
                    raise self.error("libxc", name, offset, f"length {len(body)}", "24")
                mode, khz, nsec, incarnation, res = libxc.TSC_INFO.unpack(body)
                if res:
                    raise self.error("libxc", name, offset + 8 + 20, "reserved field set", "0")
                self.info.tsc_info = (mode, khz, nsec, incarnation)
            elif rtype == LibxcRecord.HVM_CONTEXT:
                problem = check_context(body) if body else "empty"
                if problem:
                    raise self.error("libxc", name, offset, f"invalid HVM context: {problem}")
                self.info.hvm_context = body
            elif rtype == LibxcRecord.HVM_PARAMS:
                self._hvm_params(name, offset, body)
            elif rtype in (LibxcRecord.CHECKPOINT, LibxcRecord.CHECKPOINT_DIRTY_PFN_LIST, LibxcRecord.VERIFY):
                raise self.error("libxc", name, offset, "checkpointed streams are not modelled")
            elif rtype & libxc.REC_TYPE_OPTIONAL:
                self.info.skipped_optional.append(rtype)  # the C receivers skip optional records they do not know
            else:
                raise self.error("libxc", name, offset, "unrecognised mandatory record for an x86 HVM restore")

    def _policy_record(self, rtype: int, name: str, offset: int, body: bytes, version: int, seen_sde: bool) -> None:
        if version < 3:
            raise self.error("libxc", name, offset, f"{name} in a v2 stream", "v3 only")
        if seen_sde:
            raise self.error("libxc", name, offset, "static data after STATIC_DATA_END", "before STATIC_DATA_END")
        entry = libxc.CPUID_LEAF if rtype == LibxcRecord.X86_CPUID_POLICY else libxc.MSR_ENTRY
        if not body or len(body) % entry.size:
            raise self.error("libxc", name, offset, f"length {len(body)}", f"a non-zero multiple of {entry.size}")
        entries = [entry.unpack_from(body, at) for at in range(0, len(body), entry.size)]
        if rtype == LibxcRecord.X86_MSR_POLICY:
            if any(flags for _idx, flags, _val in entries):
                raise self.error("libxc", name, offset, "MSR entry flags set", "0")
            self.info.msr_policy = entries
        else:
            self.info.cpuid_policy = entries

    def _hvm_params(self, name: str, offset: int, body: bytes) -> None:
        if len(body) < libxc.HVM_PARAMS_HEADER.size:
            raise self.error("libxc", name, offset, f"length {len(body)}", "at least 8")
        count, res = libxc.HVM_PARAMS_HEADER.unpack_from(body)
        if res:
            raise self.error("libxc", name, offset + 12, "reserved field set", "0")
        if len(body) != 8 + 16 * count:
            raise self.error("libxc", name, offset, f"length {len(body)} for {count} params", f"{8 + 16 * count}")
        for at in range(8, len(body), 16):
            index, value = libxc.HVM_PARAM_ENTRY.unpack_from(body, at)
            if index >= HVM_NR_PARAMS:
                raise self.error("libxc", name, offset + 8 + at, f"param index {index}", f"below {HVM_NR_PARAMS}")
            self.info.hvm_params[index] = value

    def _start(self) -> None:
        """The static data is complete: let the caller set up the destination (once)."""
        if not self._begun:
            self._begun = True
            if self.begin is not None:
                self._target = self.begin(self.info)

    def _page_data(self, offset: int, length: int) -> None:
        name = "PAGE_DATA"
        if length <= libxc.PAGE_DATA_HEADER.size:
            raise self.error("libxc", name, offset, f"length {length}", "more than 8")
        head = self.io.read(libxc.PAGE_DATA_HEADER.size, layer="libxc", record=name, what="the PAGE_DATA header")
        count, res = libxc.PAGE_DATA_HEADER.unpack(head)
        if res:
            raise self.error("libxc", name, offset + 12, "reserved field set", "0")
        if count == 0 or count > libxc.MAX_BATCH_SIZE:
            raise self.error("libxc", name, offset + 8, f"count {count}", f"1..{libxc.MAX_BATCH_SIZE}")
        if length < 8 + 8 * count:
            raise self.error("libxc", name, offset, f"length {length} for {count} pfns", f"at least {8 + 8 * count}")
        raw = self.io.read(8 * count, layer="libxc", record=name, what="the pfn array")
        entries = memoryview(raw).cast("Q").tolist()
        first = entries[0]
        if (first + count - 1) >> libxc.PFN_RESERVED_SHIFT == 0 and entries == list(range(first, first + count)):
            # What Xen's saver sends for HVM RAM: consecutive not-a-table pfns, all with data (a C-speed check).
            with_data = entries
        else:
            with_data = self._check_pfns(offset, entries)
        self.log(f"libxc record: PAGE_DATA, length {length}, {count} pfns from {first & libxc.PFN_MASK:#x}")
        expected = 8 + 8 * count + libxc.PAGE_SIZE * len(with_data)
        if length != expected:
            raise self.error("libxc", name, offset, f"length {length}", f"{expected} for {len(with_data)} pages")
        self._read_pages(offset, with_data)
        self.info.pages += len(with_data)
        self.info.page_records += 1

    def _check_pfns(self, offset: int, entries: list[int]) -> list[int]:
        """Every entry's reserved bits and type; returns the pfns that carry a page."""
        with_data: list[int] = []
        for i, entry in enumerate(entries):
            ptype = entry >> libxc.PFN_TYPE_SHIFT
            if (entry >> libxc.PFN_RESERVED_SHIFT) & libxc.PFN_RESERVED_MASK:
                raise self.error("libxc", "PAGE_DATA", offset + 16 + 8 * i, f"pfn entry {entry:#x} sets reserved bits",
                                 "0")  # fmt: skip
            if ptype in libxc.PFINFO_INVALID:
                raise self.error("libxc", "PAGE_DATA", offset + 16 + 8 * i, f"invalid page type {ptype:#x}")
            if libxc.page_type_has_data(ptype):
                with_data.append(entry & libxc.PFN_MASK)
        return with_data

    def _read_pages(self, offset: int, pfns: list[int]) -> None:
        """Runs of consecutive pfns go in with one readinto each."""
        i = 0
        while i < len(pfns):
            j = i + 1
            while j < len(pfns) and pfns[j] == pfns[j - 1] + 1:
                j += 1
            start, count = pfns[i], j - i
            if self._target is None:
                view = memoryview(self._scratch)[: count * libxc.PAGE_SIZE]
            else:
                try:
                    view = self._target(start, count)
                except ValueError as exc:
                    raise self.error("libxc", "PAGE_DATA", offset, str(exc)) from exc
            self.io.readinto(view, layer="libxc", record="PAGE_DATA", what=f"{count} pages from pfn {start:#x}")
            i = j

    # --- framing --------------------------------------------------------------------------------------------
    def _record(
        self, layer: str, namer: Callable[[int], str], *, streamed: int | None = None
    ) -> tuple[int, int, bytes | int]:
        """Read a record header and, unless its type is ``streamed``, its body and padding. Returns (offset of the
        record, type, body) or, for the streamed type, (offset, type, body length)."""
        offset = self.io.offset
        rtype, length = RECORD_HEADER.unpack(
            self.io.read(8, layer=layer, record="record header", what="a record header")
        )
        name = namer(rtype)
        if length > MAX_RECORD_LENGTH:
            raise self.error(layer, name, offset, f"length {length}", f"at most {MAX_RECORD_LENGTH} (128 MiB)")
        if rtype == streamed:
            # The body is consumed by the caller (PAGE_DATA bodies are multiples of 8: no padding follows).
            if padding(length):
                raise self.error(layer, name, offset, f"length {length} is not a multiple of 8")
            return offset, rtype, length
        body = self.io.read(length, layer=layer, record=name, what=f"the {length}-byte body")
        pad = padding(length)
        if pad:
            pad_at = self.io.offset
            if any(self.io.read(pad, layer=layer, record=name, what="the padding")):
                raise self.error(layer, name, pad_at, "non-zero padding", "zero bytes")
        return offset, rtype, body

    def _expect_empty(self, layer: str, name: str, offset: int, body: bytes) -> None:
        if body:
            raise self.error(layer, name, offset, f"length {len(body)}", "0")


def libxl_record_name(rtype: int) -> str:
    if rtype in LibxlRecord._value2member_map_:
        return LibxlRecord(rtype).name
    return f"unknown record {rtype:#x}"

"""``xen_version`` (hypercall 17), as ``do_xen_version`` in ``xen/common/kernel.c`` answers at each release
(``spec/gnttab-vcpu-version.md`` §2; read at every 4.x.0 tag).

The argument is one guest handle; the model takes it as a guest address in the caller's RAM
(:class:`~xenabi.abi.version.XenVersionArg`, 0 being the null handle), reads and writes the buffers there, and
answers -EFAULT for a range outside the domain's memory, as ``copy_to_guest`` fails. Every difference between
releases is a field of the release table (``xenver_*``, ``xenfeat_*``, ``platform_parameters_pv_only``,
``build_id_varbuf``), with its commit there.

What the model's Xen says about itself: its version is the release's; its extraversion is ``.<point>`` (Xen's
``XEN_EXTRAVERSION`` for a tagged release); its changeset is ``git:RELEASE-x.y.z``; its build identity
(compile_info) names the model; its capabilities are those of an x86-64 build with HVM and 32-bit PV support; its
command line is the host's (``Hypervisor(cmdline=...)``); its build id is 20 bytes derived from the release name
(Xen's is the linker's SHA-1). A domain's handle is the create struct's ``handle``.

Who may read what (the default XSM policy, ``xsm_xen_version``): every sub-op is open to every guest, except that
from 4.7 (``xenver_priv_strings``) commandline reads ``<denied>`` (9 bytes, the text and its NUL) and build_id is
-EPERM for any domain but the control domain, as are commandline2 (4.20) and build_id through the 4.20 code.

``XENVER_get_features``, submap 0, by guest type and release: translated guests (HVM, PVH) get
writable_page_tables 0, auto_translated_physmap 2, hvm_callback_vector 8 and hvm_safe_pvclock 9; PV guests
mmu_pt_update_preserve_ad 5, highmem_assist 6 and gnttab_map_avail_bits 7; hvm_pirqs 10 goes to every HVM guest up
to 4.8 (the model's PVH included: it is an HVM container in every release) and from 4.9 only to a domain with
PIRQ emulation (``X86_EMU_USE_PIRQ``, so never PVH); the hardware domain
(dom0) gets dom0 11 (in the model dom0 is both domain 0 and the hardware domain, so 4.5's change of that bit's
meaning shows nothing); memory_op_vnode_supported 13 from 4.6; direct_mapped 17 (PV) or not_direct_mapped 16 from
4.16; runstate_phys_area 18 and vcpu_time_phys_area 19 from 4.18, which belong to the registry's
``vcpu_phys_area`` row (``AbiFeature.xenfeat_bits``) and are clear wherever it is hidden; dm_msix_all_writes 20
from 4.19. Sub-ops 11-14 are the registry's ``xenver_varbuf`` row (4.20): where it is hidden, or before 4.20, the
hypercall entry answers -ENOSYS before this handler runs.
Not modelled (``releases.NOT_MODELLED``): bits 3 and 4, stale stack bytes before 4.6, FLASK, debug builds.

``XENVER_platform_parameters``: a 64-bit caller gets ``HYPERVISOR_VIRT_START``, a 32-bit one (``word_bits`` 32,
the compat entry) the 4-byte compat start of a PV domain, 0 for HVM; from 4.18 (``platform_parameters_pv_only``)
HVM and PVH get 0 on the 64-bit path too.

build_id (4.7+) before 4.20: -EPERM if denied; a non-null handle's ``len`` is read (-EFAULT) and 0 is -EINVAL;
then a null handle asks the size; a ``len`` below it is -ENOBUFS; else the id is copied after ``len`` and its size
returned. From 4.20 (``build_id_varbuf``) build_id and the four ``*2`` sub-ops share the varbuf order: -EPERM if
denied, -E2BIG over 64 KiB, a null handle asks the size, -EFAULT if ``len`` cannot be read, -ENOBUFS if it is too
short, else the bytes (no NUL) and their count.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from xenabi.abi import errno
from xenabi.abi.domctl import XEN_X86_EMU_USE_PIRQ
from xenabi.abi.features import REGISTRY
from xenabi.abi.version import (
    CAPABILITIES_LEN,
    CHANGESET_LEN,
    COMMANDLINE_LEN,
    COMPILE_INFO_FIELDS,
    DENIED,
    EXTRAVERSION_LEN,
    HYPERVISOR_COMPAT_VIRT_START,
    HYPERVISOR_VIRT_START,
    PAGE_SIZE,
    VARBUF_MAX,
    FeatureInfo,
    Xenfeat,
    XenVer,
    XenVersionArg,
)
from xenabi.hypervisor.guestmem import copy_from_guest, copy_to_guest

if TYPE_CHECKING:
    from xenabi.hypervisor.dispatch import Call
    from xenabi.hypervisor.domain import Domain
    from xenabi.hypervisor.hypervisor import Hypervisor

CAPABILITIES = "xen-3.0-x86_64 xen-3.0-x86_32p hvm-3.0-x86_32 hvm-3.0-x86_32p hvm-3.0-x86_64"
COMPILE_INFO = ("xenabi model of Xen", "xenabi", "model.invalid", "")
VARBUF_LEN = 4  # struct xen_varbuf / xen_build_id: uint32 len, then the bytes


def _fixed(text: str | bytes, size: int) -> bytes:
    """A NUL-terminated string in a zeroed buffer of ``size`` bytes (``safe_strcpy`` into a cleared array)."""
    raw = text.encode() if isinstance(text, str) else text
    return raw[: size - 1].ljust(size, b"\0")


def _put(cur: Domain, addr: int, data: bytes) -> int:
    return 0 if copy_to_guest(cur, addr, data) else -errno.EFAULT


def _denied(hv: Hypervisor, cur: Domain) -> bool:
    """XSM_PRIV in ``xsm_xen_version``: from 4.7, commandline and build_id are the control domain's."""
    return hv.release.xenver_priv_strings and not cur.privileged


def extraversion(hv: Hypervisor) -> str:
    return f".{hv.release.point[2]}"


def changeset(hv: Hypervisor) -> str:
    return f"git:RELEASE-{hv.release.name}"


def saved_cmdline(hv: Hypervisor) -> bytes:
    """Xen keeps its command line in a ``xen_commandline_t`` (``safe_strcpy``): at most 1023 bytes of it."""
    return hv.cmdline.encode()[: COMMANDLINE_LEN - 1]


def build_id(hv: Hypervisor) -> bytes:
    return hashlib.sha1(f"xenabi model of Xen {hv.release.name}".encode()).digest()


def features(hv: Hypervisor, cur: Domain) -> int:
    """Submap 0 of XENVER_get_features for ``cur`` on this release (see the module docstring)."""
    release = hv.release
    bits: list[int] = [Xenfeat.dom0] if cur.domid == 0 else []
    if cur.is_hvm:
        bits += [Xenfeat.writable_page_tables, Xenfeat.auto_translated_physmap, Xenfeat.hvm_callback_vector,
                 Xenfeat.hvm_safe_pvclock]  # fmt: skip
        # every HVM container until 4.9 (the model's "pvh" is one in every release: PVHv1 is not modelled)
        pirq = True
        if release.xenfeat_pirqs_need_emulation:
            pirq = bool(cur.config.effective_emulation_flags & XEN_X86_EMU_USE_PIRQ)
        if pirq:
            bits.append(Xenfeat.hvm_pirqs)
    else:
        bits += [Xenfeat.mmu_pt_update_preserve_ad, Xenfeat.highmem_assist, Xenfeat.gnttab_map_avail_bits]
    if release.xenfeat_vnode:
        bits.append(Xenfeat.memory_op_vnode_supported)
    if release.xenfeat_direct_mapped:
        bits.append(Xenfeat.not_direct_mapped if cur.is_hvm else Xenfeat.direct_mapped)
    for row in REGISTRY:  # Xen's own advertisement of a registry feature: clear while the feature is hidden
        if row.xenfeat_bits and row.name in cur.exposed_features:
            bits += row.xenfeat_bits
    if release.xenfeat_dm_msix_all_writes:
        bits.append(Xenfeat.dm_msix_all_writes)
    return sum(1 << bit for bit in bits)


def _platform_parameters(hv: Hypervisor, cur: Domain, addr: int) -> int:
    if cur.word_bits == 32:  # the compat entry: a 4-byte virt_start, the domain's compat start (PV only)
        start = 0 if cur.is_hvm else HYPERVISOR_COMPAT_VIRT_START
        return _put(cur, addr, start.to_bytes(4, "little"))
    start = 0 if cur.is_hvm and hv.release.platform_parameters_pv_only else HYPERVISOR_VIRT_START
    return _put(cur, addr, start.to_bytes(8, "little"))


def _get_features(hv: Hypervisor, cur: Domain, addr: int) -> int:
    raw = copy_from_guest(cur, addr, FeatureInfo.size())
    if raw is None:
        return -errno.EFAULT
    info = FeatureInfo.unpack(raw)
    if info.submap_idx != 0:
        return -errno.EINVAL
    info.submap = features(hv, cur)
    return _put(cur, addr, info.pack())


def _commandline(hv: Hypervisor, cur: Domain, addr: int) -> int:
    if _denied(hv, cur):
        return _put(cur, addr, DENIED + b"\0")
    return _put(cur, addr, _fixed(saved_cmdline(hv), COMMANDLINE_LEN))


def _build_id_before_varbuf(hv: Hypervisor, cur: Domain, addr: int) -> int:
    if _denied(hv, cur):
        return -errno.EPERM
    length = None
    if addr:
        raw = copy_from_guest(cur, addr, VARBUF_LEN)
        if raw is None:
            return -errno.EFAULT
        length = int.from_bytes(raw, "little")
        if length == 0:
            return -errno.EINVAL
    data = build_id(hv)
    if length is None:
        return len(data)
    if len(data) > length:
        return -errno.ENOBUFS
    return len(data) if copy_to_guest(cur, addr + VARBUF_LEN, data) else -errno.EFAULT


def _varbuf(data: bytes, cur: Domain, addr: int) -> int:
    """``xenver_varbuf_op`` from -E2BIG on (the caller checked XSM). No string of the model reaches 64 KiB (the
    longest is the 1023-byte command line), as none of Xen's does; the check is kept in Xen's place."""
    if len(data) > VARBUF_MAX:
        return -errno.E2BIG
    if not addr:
        return len(data)
    raw = copy_from_guest(cur, addr, VARBUF_LEN)
    if raw is None:
        return -errno.EFAULT
    if len(data) > int.from_bytes(raw, "little"):
        return -errno.ENOBUFS
    return len(data) if copy_to_guest(cur, addr + VARBUF_LEN, data) else -errno.EFAULT


VARBUF_STRINGS: dict[int, Callable[[Hypervisor], bytes]] = {
    XenVer.build_id: build_id,
    XenVer.extraversion2: lambda hv: extraversion(hv).encode(),
    XenVer.capabilities2: lambda hv: CAPABILITIES.encode(),
    XenVer.changeset2: lambda hv: changeset(hv).encode(),
    XenVer.commandline2: saved_cmdline,
}
PRIVILEGED_VARBUF = frozenset({XenVer.build_id, XenVer.commandline2})


def xen_version(hv: Hypervisor, cur: Domain, arg: XenVersionArg, cmd: int, call: Call) -> int:
    """The whole hypercall: ``cmd`` is the sub-op."""
    addr, release = arg.addr, hv.release
    if cmd == XenVer.version:
        major, minor = release.version
        return major << 16 | minor
    if cmd == XenVer.extraversion:
        return _put(cur, addr, _fixed(extraversion(hv), EXTRAVERSION_LEN))
    if cmd == XenVer.compile_info:
        return _put(cur, addr, b"".join(_fixed(text, size) for text, size in zip(COMPILE_INFO, COMPILE_INFO_FIELDS,
                                                                                  strict=True)))  # fmt: skip
    if cmd == XenVer.capabilities:
        return _put(cur, addr, _fixed(CAPABILITIES, CAPABILITIES_LEN))
    if cmd == XenVer.changeset:
        return _put(cur, addr, _fixed(changeset(hv), CHANGESET_LEN))
    if cmd == XenVer.platform_parameters:
        return _platform_parameters(hv, cur, addr)
    if cmd == XenVer.get_features:
        return _get_features(hv, cur, addr)
    if cmd == XenVer.pagesize:
        return -errno.EINVAL if addr else PAGE_SIZE
    if cmd == XenVer.guest_handle:
        return _put(cur, addr, cur.handle)
    if cmd == XenVer.commandline:
        return _commandline(hv, cur, addr)
    if cmd == XenVer.build_id and release.xenver_build_id and not release.build_id_varbuf:
        return _build_id_before_varbuf(hv, cur, addr)
    # sub-ops 11-14 reach here only where the registry's xenver_varbuf row is exposed: the hypercall entry
    # answers -ENOSYS for them otherwise (before 4.20 they did not exist, and a hidden feature answers the same)
    if cmd in VARBUF_STRINGS and (cmd != XenVer.build_id or release.build_id_varbuf):
        if cmd in PRIVILEGED_VARBUF and not cur.privileged:  # XSM_PRIV; 4.20 has xenver_priv_strings
            return -errno.EPERM
        return _varbuf(VARBUF_STRINGS[cmd](hv), cur, addr)
    return -errno.ENOSYS

"""Copying to and from a guest's RAM, as Xen's ``copy_to_guest`` / ``copy_from_guest`` do for the hypercalls whose
arguments are guest addresses (hypfs_op, xen_version, grant_table_op, vcpu_op): a range outside the domain's
memory fails (the caller answers -EFAULT), nothing is partly copied."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from xenabi.hypervisor.domain import Domain


# The PML4 slots Xen reserves for itself in every PV guest's address space (256-271): no PV handle may point there.
HYPERVISOR_VIRT_START = 0xFFFF800000000000
HYPERVISOR_VIRT_END = 0xFFFF880000000000


def guest_handle_okay(d: Domain, addr: int, length: int) -> bool:
    """``guest_handle_okay`` / ``access_ok``: an HVM guest's handles are never range-checked (its accesses go
    through its own page tables); a 64-bit PV guest's must stay out of Xen's range. Whether the bytes are RAM is
    found out by the copy that follows."""
    if d.is_hvm or d.word_bits == 32:
        return True
    return addr + length <= HYPERVISOR_VIRT_START or addr >= HYPERVISOR_VIRT_END


def copy_from_guest(d: Domain, addr: int, length: int) -> bytes | None:
    if addr < 0 or length < 0 or addr + length > len(d.memory):
        return None
    return bytes(d.memory[addr : addr + length])


def copy_to_guest(d: Domain, addr: int, data: bytes) -> bool:
    if addr < 0 or addr + len(data) > len(d.memory):
        return False
    d.memory[addr : addr + len(data)] = data
    return True

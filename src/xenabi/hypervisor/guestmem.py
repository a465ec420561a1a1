"""Copying to and from a guest's RAM, as Xen's ``copy_to_guest`` / ``copy_from_guest`` do for the hypercalls whose
arguments are guest addresses (hypfs_op, xen_version): a range outside the domain's memory fails (the caller
answers -EFAULT), nothing is partly copied."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from xenabi.hypervisor.domain import Domain


def copy_from_guest(d: Domain, addr: int, length: int) -> bytes | None:
    if addr < 0 or length < 0 or addr + length > len(d.memory):
        return None
    return bytes(d.memory[addr : addr + length])


def copy_to_guest(d: Domain, addr: int, data: bytes) -> bool:
    if addr < 0 or addr + len(data) > len(d.memory):
        return False
    d.memory[addr : addr + len(data)] = data
    return True

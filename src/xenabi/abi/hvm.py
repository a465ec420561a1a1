"""HVMOP_* numbers, HVM params and their argument structs (``xen/include/public/hvm/{hvm_op,params}.h``).

Modelled: the sub-op the ABI feature registry gates (``spec/abi-control.md`` §1.3), HVMOP_get_param, through
which a guest finds the xenstore and console rings and ports the toolstack gave it (``spec/evtchn.md`` §7), and
HVMOP_set_param for ``HVM_PARAM_CALLBACK_IRQ``, how a Linux guest asks for its event-channel callback
(``spec/linux-guests.md`` §1). The other HVMOPs are not in the dispatch table and answer -ENOSYS.
"""

from __future__ import annotations

from xenabi.abi.cstruct import CStruct, cstruct

HVMOP_set_param = 0
HVMOP_get_param = 1
HVMOP_set_evtchn_upcall_vector = 23

# HVM params (xen/include/public/hvm/params.h, Xen 4.14)
HVM_PARAM_CALLBACK_IRQ = 0
HVM_PARAM_STORE_PFN = 1
HVM_PARAM_STORE_EVTCHN = 2
HVM_PARAM_CONSOLE_PFN = 17
HVM_PARAM_CONSOLE_EVTCHN = 18
HVM_NR_PARAMS = 39

# HVM_PARAM_CALLBACK_IRQ's value: the callback type in bits 63:56 (0 a GSI, 1 a PCI INTx, 2 a vector), the GSI,
# PCI device or vector below.
HVM_PARAM_CALLBACK_TYPE_SHIFT = 56
HVM_PARAM_CALLBACK_TYPE_VECTOR = 2


def hvm_callback_vector(vector: int) -> int:
    """The HVM_PARAM_CALLBACK_IRQ value that asks for ``vector`` (Linux's ``HVM_CALLBACK_VECTOR``)."""
    return HVM_PARAM_CALLBACK_TYPE_VECTOR << HVM_PARAM_CALLBACK_TYPE_SHIFT | vector


# Vectors below 0x10 are exceptions and reserved ranges: hvmop_set_evtchn_upcall_vector refuses them.
HVM_UPCALL_VECTOR_MIN = 0x10


@cstruct("IB3s")
class EvtchnUpcallVector(CStruct):
    """``struct xen_hvm_evtchn_upcall_vector {uint32 vcpu; uint8 vector;}`` (8 bytes with tail padding)."""

    vcpu: int = 0
    vector: int = 0
    _pad: bytes = bytes(3)


@cstruct("H2xIQ", out=("value",))
class HvmParam(CStruct):
    """``struct xen_hvm_param {domid_t domid; uint32 index; uint64 value;}`` (16 bytes)."""

    domid: int = 0
    index: int = 0
    value: int = 0

"""HVMOP_* numbers and the argument of HVMOP_set_evtchn_upcall_vector (``xen/include/public/hvm/hvm_op.h``).

Only the sub-op the ABI feature registry gates is modelled (``spec/abi-control.md`` §1.3); every other HVMOP
answers -ENOSYS, as ``do_hvm_op``'s default case does.
"""

from __future__ import annotations

from xenabi.abi.cstruct import CStruct, cstruct

HVMOP_set_param = 0
HVMOP_get_param = 1
HVMOP_set_evtchn_upcall_vector = 23

# Vectors below 0x10 are exceptions and reserved ranges: hvmop_set_evtchn_upcall_vector refuses them.
HVM_UPCALL_VECTOR_MIN = 0x10


@cstruct("IB3s")
class EvtchnUpcallVector(CStruct):
    """``struct xen_hvm_evtchn_upcall_vector {uint32 vcpu; uint8 vector;}`` (8 bytes with tail padding)."""

    vcpu: int = 0
    vector: int = 0
    _pad: bytes = bytes(3)

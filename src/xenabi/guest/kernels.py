"""Linux guest kernels as data (issue 21): where Linux 5.10 and 6.x differ as Xen guests, a field of this table.

A guest kernel is named by its version, as a Xen release is, and :class:`~xenabi.guest.linux.LinuxKernel` reads the
fields; no code compares versions. The facts are ``spec/linux-guests.md`` §1, §2 and §8 (from
``arch/x86/xen/enlighten.c``, ``enlighten_hvm.c``, ``smp.c``, ``time.c`` and ``drivers/xen/events/events_base.c``).
The Linux tree at v5.10 and v6.1 cannot be fetched here; the vector and vcpu_info rows were checked against the
patch mails that changed them and against v5.x and v6.x copies of those files, the VIRQ_DEBUG row is the spec's.

- **The per-vCPU upcall vector** (``xen_init_setup_upcall_vector``): 5.10 never calls
  ``HVMOP_set_evtchn_upcall_vector``. 6.x (from 6.0) calls it only when CPUID leaf 0x40000x04 EAX bit 6
  (``XEN_HVM_CPUID_UPCALL_VECTOR``, which Xen sets from 4.17, and clears where ABI control hides ``evtchn_upcall``)
  is set, and only goes on to the other vCPUs when vCPU 0's call succeeds.
- **VIRQ_DEBUG** (``xen_smp_intr_init``): 5.10 binds it on every CPU; from 5.11 only under 2-level.
- **A refused VCPUOP_register_vcpu_info** (``xen_vcpu_setup``): 5.10 warns, stops placing vcpu_info for later
  CPUs (``xen_have_vcpu_info_placement`` cleared) and uses the CPU's slot in shared_info (a CPU numbered 32 or more
  has none and stays down); 5.16 removed that flag ("x86/xen: remove xen_have_vcpu_info_placement flag") and 6.x
  panics (``register_vcpu_info failed: cpu=N err=E``). Read from v5.x copies of ``arch/x86/xen/enlighten.c`` and the
  patch mail.
- Common to both, and so not fields: per CPU the RESCHEDULE, CALL_FUNCTION and CALL_FUNCTION_SINGLE IPIs and
  VIRQ_TIMER, whose priority is then set to the highest with ``EVTCHNOP_set_priority`` (-ENOSYS under 2-level,
  which Linux ignores); FIFO by one ``init_control`` on the boot CPU, any negative answer meaning 2-level.
"""

from __future__ import annotations

from dataclasses import dataclass

from xenabi.errors import UnknownKernel


@dataclass(frozen=True)
class LinuxVersion:
    """One Linux guest kernel: its name and how it behaves as a Xen guest where versions differ."""

    name: str
    upcall_vector: bool  # uses HVMOP_set_evtchn_upcall_vector when CPUID leaf 4 bit 6 says Xen offers it
    virq_debug_with_fifo: bool  # binds VIRQ_DEBUG under FIFO too (not only under 2-level)
    vcpu_info_failure_panics: bool  # a refused register_vcpu_info panics (else: shared_info slots from then on)
    era: str = ""

    def __str__(self) -> str:
        return f"Linux {self.name}"


KERNELS: dict[str, LinuxVersion] = {
    kernel.name: kernel
    for kernel in (
        LinuxVersion("5.10", upcall_vector=False, virq_debug_with_fifo=True, vcpu_info_failure_panics=False,
                     era="December 2020, the seed's era"),
        LinuxVersion("6.1", upcall_vector=True, virq_debug_with_fifo=False, vcpu_info_failure_panics=True,
                     era="a 6.x LTS (6.0 added the vector)"),
    )
}
DEFAULT_KERNEL = "5.10"


def get_kernel(name: str) -> LinuxVersion:
    """The kernel of that name (:class:`UnknownKernel` naming the known ones)."""
    try:
        return KERNELS[name]
    except (KeyError, TypeError):
        raise UnknownKernel(f"unknown guest kernel {name!r} (known: {', '.join(KERNELS)})") from None

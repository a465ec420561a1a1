"""A guest's own page allocator: RAM pages the kernel hands to Xen (control blocks, event array pages).

Pages below :data:`FIRST_FREE_GFN` are left alone: gfn 0 and Xen's pages (shared_info and the vcpu_info pages,
``xenabi.hypervisor.domain``). Allocated pages are zeroed, as Linux's ``get_zeroed_page``/``clear_page`` do.
"""

from __future__ import annotations

from xenabi.abi.xen import PAGE_SIZE
from xenabi.hypervisor.domain import XEN_PAGES, Domain

FIRST_FREE_GFN = max(XEN_PAGES) + 1


class PageAllocator:
    def __init__(self, domain: Domain, first_gfn: int = FIRST_FREE_GFN) -> None:
        self.domain = domain
        self.next_gfn = first_gfn
        self.freed: list[int] = []

    def alloc(self) -> int:
        if self.freed:
            gfn = self.freed.pop()
        else:
            gfn = self.next_gfn
            if gfn >= self.domain.nr_pages:
                raise MemoryError(f"d{self.domain.domid}: out of guest pages")
            self.next_gfn += 1
        start = gfn * PAGE_SIZE
        self.domain.memory[start : start + PAGE_SIZE] = bytes(PAGE_SIZE)
        return gfn

    def free(self, gfn: int) -> None:
        self.freed.append(gfn)

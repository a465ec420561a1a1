/*
 * xenabi test oracle: lets Debian's real `xl create -n` (a dry run) run on a machine without Xen.
 *
 * Preloaded into xl (LD_PRELOAD), it answers the few hypervisor and xenstore calls that a dry run makes before it
 * prints the domain configuration as libxl JSON: opening the handles, the host's physical information, its CPU and
 * node counts, the version, and memory-sharing counters. Every answer describes a small x86 host with HVM, PV, HAP
 * and shadow paging, 4 CPUs on one node and 8 GiB of RAM. Nothing here touches a real hypervisor; a call outside
 * this list reaches the real library, which fails for want of /dev/xen, and the test reports it.
 *
 * Written for xenabi from the public ABI (struct xen_sysctl_physinfo, XEN_SYSCTL_PHYSCAP_* and XENVER_* numbers
 * of Xen 4.17's public headers); no Xen code is copied.
 */
#include <stdint.h>
#include <string.h>
#include <errno.h>

static char dummy_xc[64], dummy_xs[64];

/* the leading fields of struct xen_sysctl_physinfo (public/sysctl.h, 4.17) */
struct physinfo_head {
    uint32_t threads_per_core, cores_per_socket, nr_cpus, max_cpu_id, nr_nodes, max_node_id, cpu_khz,
             capabilities, arch_capabilities, pad;
    uint64_t total_pages, free_pages, scrub_pages, outstanding_pages, max_mfn;
    uint32_t hw_cap[8];
};

enum { PHYSCAP_HVM = 1u << 0, PHYSCAP_PV = 1u << 1, PHYSCAP_DIRECTIO = 1u << 2, PHYSCAP_HAP = 1u << 3,
       PHYSCAP_SHADOW = 1u << 4, PHYSCAP_GNTTAB_V1 = 1u << 8, PHYSCAP_GNTTAB_V2 = 1u << 9 };
enum { HOST_CPUS = 4, HOST_PAGES = 8u << 18 /* 8 GiB of 4 KiB pages */ };

void *xc_interface_open(void *logger, void *dombuild_logger, unsigned open_flags)
{
    (void)logger; (void)dombuild_logger; (void)open_flags;
    return dummy_xc;
}

int xc_interface_close(void *xch) { (void)xch; return 0; }

void *xs_open(unsigned long flags) { (void)flags; return dummy_xs; }

void xs_close(void *xsh) { (void)xsh; }

int xc_physinfo(void *xch, void *out)
{
    struct physinfo_head info;
    (void)xch;
    memset(&info, 0, sizeof(info));
    info.threads_per_core = 1;
    info.cores_per_socket = HOST_CPUS;
    info.nr_cpus = HOST_CPUS;
    info.max_cpu_id = HOST_CPUS - 1;
    info.nr_nodes = 1;
    info.cpu_khz = 2000000;
    info.capabilities = PHYSCAP_HVM | PHYSCAP_PV | PHYSCAP_DIRECTIO | PHYSCAP_HAP | PHYSCAP_SHADOW
                        | PHYSCAP_GNTTAB_V1 | PHYSCAP_GNTTAB_V2;
    info.total_pages = HOST_PAGES;
    info.free_pages = HOST_PAGES / 2;
    info.max_mfn = HOST_PAGES - 1;
    memcpy(out, &info, sizeof(info));
    return 0;
}

long xc_sharing_freed_pages(void *xch) { (void)xch; errno = ENOSYS; return -1; }

long xc_sharing_used_frames(void *xch) { (void)xch; errno = ENOSYS; return -1; }

int xc_get_max_cpus(void *xch) { (void)xch; return HOST_CPUS; }

int xc_get_online_cpus(void *xch) { (void)xch; return HOST_CPUS; }

int xc_get_max_nodes(void *xch) { (void)xch; return 1; }

/* XENVER_version (0): 4.17; the string sub-ops (extraversion, compile info, capabilities, changeset) get text */
int xc_version(void *xch, int cmd, void *arg)
{
    (void)xch;
    switch (cmd) {
    case 0: return (4 << 16) | 17;
    case 1: if (arg) strcpy((char *)arg, ".0"); return 0;
    case 3: if (arg) strcpy((char *)arg, "xen-3.0-x86_64 hvm-3.0-x86_32 hvm-3.0-x86_32p hvm-3.0-x86_64"); return 0;
    case 4: if (arg) strcpy((char *)arg, "unavailable"); return 0;
    default: if (arg) memset(arg, 0, 16); return 0;
    }
}

/* XENMEM_* queries a dry run may make (maximum reservation, current reservation): a generous answer */
long xc_memory_op(void *xch, unsigned cmd, void *arg, size_t len)
{
    (void)xch; (void)cmd; (void)arg; (void)len;
    return HOST_PAGES;
}

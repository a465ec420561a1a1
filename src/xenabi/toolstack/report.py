"""What a config means on a given host: the report behind ``xenabi config show``.

Creates the VM on a scratch host of the requested release, sized to hold it (whether a VM fits a given host is not a
question about its config; its RAM is only mapped, never touched, so inspecting a 64 GiB VM costs nothing) (so every
figure comes from the model: the admission verdict, the create flags libxl would pass, the CPUID leaves the guest reads,
the hypfs nodes dom0 sees) and returns it as plain data. The hypfs walk reads like ``xenhypfs tree``: directories
through their dirlist entries, leaves decoded by type.
"""

from __future__ import annotations

import struct
from typing import Any

from xenabi.abi.cpuid import XEN_CPUID_FIRST_LEAF
from xenabi.abi.features import REGISTRY
from xenabi.abi.hypfs import HypfsDirentry, HypfsType, parse_dirlist
from xenabi.errors import AbiIncompatible
from xenabi.hypervisor import Hypervisor
from xenabi.hypervisor.cpuid import max_leaf
from xenabi.hypervisor.hypervisor import DOM0_MEMORY_MB
from xenabi.toolstack.config import DomainConfig
from xenabi.toolstack.toolstack import Toolstack


def flag_names(hv: Hypervisor, flags: int) -> list[str]:
    """The names of ``flags`` on this host: its release's own create flags and where it puts the series'."""
    bits = hv.release.cdf_bits | hv.feature_cdf_bits
    return [f"XEN_DOMCTL_CDF_{name}" for name, bit in sorted(bits.items(), key=lambda kv: kv[1]) if flags >> bit & 1]


def decode_leaf(head: HypfsDirentry, contents: bytes) -> Any:
    kind = HypfsType(head.type)
    if kind is HypfsType.BOOL:
        return bool(contents[0])
    if kind in (HypfsType.UINT, HypfsType.INT):
        fmt = {1: "B", 2: "H", 4: "I", 8: "Q"}[len(contents)]
        return struct.unpack("<" + (fmt if kind is HypfsType.UINT else fmt.lower()), contents)[0]
    if kind is HypfsType.STRING:
        return contents.rstrip(b"\0").decode(errors="replace")
    return contents.hex()


def hypfs_walk(hv: Hypervisor, path: str = "/", caller: int = 0) -> list[dict[str, Any]]:
    """Every node under ``path`` as dom0 reads it: path, type, whether writable, and a leaf's value."""
    rc, data = hv.hypfs.read(caller, path)
    if rc < 0:
        return [{"path": path, "error": rc}]
    head = HypfsDirentry.unpack(data)
    contents = data[HypfsDirentry.size() :]
    if head.type != HypfsType.DIR:
        return [
            {
                "path": path,
                "type": HypfsType(head.type).name.lower(),
                "writable": head.max_write_len > 0,
                "value": decode_leaf(head, contents),
            }
        ]
    nodes: list[dict[str, Any]] = []
    for name, _ in parse_dirlist(contents) if contents else []:
        nodes += hypfs_walk(hv, path.rstrip("/") + "/" + name, caller)
    return nodes


def config_report(cfg: DomainConfig, release: str, abi_control: bool) -> dict[str, Any]:
    """The report for ``cfg`` on a host (``release``, ``abi_control``). ``refused`` lists admission reasons."""
    hv = Hypervisor(release, abi_control, memory_mb=DOM0_MEMORY_MB + max(cfg.max_memory_mb or 0, cfg.memory_mb))
    ts = Toolstack(hv)
    policy = ts.effective_policy(cfg)
    report: dict[str, Any] = {
        "host": {"release": hv.release.name, "abi_control": abi_control},
        "config": cfg.to_json(),
        # xl.cfg keys that reach no libxl field here: kept under "xenabi.xl", which real libxl drops
        "not_modelled": sorted(cfg.xl_settings),
        "requested_policy": policy.to_json(),
    }
    try:
        domid = ts.create(cfg)
    except AbiIncompatible as exc:
        report["refused"] = [reason.to_json() for reason in exc.reasons]
        return report
    d = hv.domain(domid)
    report["refused"] = []
    report["policy"] = d.policy.to_json()
    report["create_flags"] = {"value": f"{d.config.flags:#x}", "names": flag_names(hv, d.config.flags)}
    mask = d.config.abi_features
    report["abi_features"] = {"value": f"{mask:#x}", "names": [row.name for row in REGISTRY if mask >> row.bit & 1]}
    report["grant_opts"] = d.config.grant_opts  # None: the host's maximum (or no such field before 4.16)
    # what the domain really got, where the policy says -1 (the host's default, which legacy hosts always give)
    report["grant_limits"] = {"max_grant_frames": d.grant_table.max_frames,
                              "max_maptrack_frames": d.grant_table.max_maptrack}  # fmt: skip
    report["cpuid"] = [
        {"leaf": f"{leaf:#010x}", "regs": [f"{reg:#010x}" for reg in hv.cpuid(domid, leaf)]}
        for leaf in range(XEN_CPUID_FIRST_LEAF, XEN_CPUID_FIRST_LEAF + max_leaf(hv) + 1)
    ]
    report["hypfs"] = hypfs_walk(hv, f"/domain/{domid}") if abi_control else []
    report["hypfs_present"] = hv.hypfs.present
    report["stored_config"] = ts.config(domid).to_xl()
    report["pinned"] = ts.config(domid).is_pinned
    return report

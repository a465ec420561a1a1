"""libxl's JSON for a domain, ``libxl_domain_config`` (``tools/libs/light/libxl_types.idl`` at 4.17; issue 19).

A save file's xl header carries the domain as this JSON, and a real ``xl restore`` builds the domain from it; ``xl
create -n`` prints it. libxl writes the fields of each struct in the IDL's order and leaves out every field that
still has its default (an integer 0, an absent string, a ``libxl_defbool`` that is neither ``"True"`` nor
``"False"``, an enumeration at its ``init_val``), so the same domain always reads the same way. Value types, as
libxl writes them: ``libxl_defbool`` is ``"True"``/``"False"``, an enumeration is its value name in lower case
(``"restart"``, ``"soft_reset"``, ``"qcow2"``), a keyed union is a key ``"type.hvm"`` next to its tag, a bitmap is
the list of its set bits.

:class:`~xenabi.toolstack.config.DomainConfig` interprets the fields the model needs (name, type, memory, vCPUs,
limits, kernel, the series' keys) and keeps every other field as it came, in :attr:`DomainConfig.libxl
<xenabi.toolstack.config.DomainConfig.libxl>`: devices, actions, display settings, xl's defaults, and anything a
newer libxl writes. :func:`merge` puts the two together in libxl's order; :func:`check` refuses a kept field whose
type libxl would refuse, naming it, so that a stream's JSON that real libxl cannot read is caught before anything is
created.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from xenabi.errors import ConfigError

# libxl_domain_config, libxl_domain_create_info and libxl_domain_build_info field order (the IDL's)
TOP_ORDER = ("c_info", "b_info", "disks", "nics", "pcidevs", "rdms", "dtdevs", "vfbs", "vkbs", "vtpms", "p9s",
             "pvcallsifs", "vdispls", "vsnds", "channels", "usbctrls", "usbdevs", "on_poweroff", "on_reboot",
             "on_watchdog", "on_crash", "on_soft_reset")  # fmt: skip
C_INFO_ORDER = ("type", "hap", "oos", "ssidref", "ssid_label", "name", "domid", "uuid", "xsdata", "platformdata",
                "poolid", "pool_name", "run_hotplug_scripts", "driver_domain", "passthrough",
                "xend_suspend_evtchn_compat")  # fmt: skip
B_INFO_ORDER = ("max_vcpus", "avail_vcpus", "cpumap", "nodemap", "vcpu_hard_affinity", "vcpu_soft_affinity",
                "numa_placement", "tsc_mode", "max_memkb", "target_memkb", "video_memkb", "shadow_memkb",
                "iommu_memkb", "rtc_timeoffset", "exec_ssidref", "exec_ssid_label", "localtime", "disable_migrate",
                "cpuid", "blkdev_start", "vnuma_nodes", "max_grant_frames", "max_maptrack_frames",
                "max_grant_version", "device_model_version", "device_model_stubdomain", "stubdomain_memkb",
                "stubdomain_kernel", "stubdomain_cmdline", "stubdomain_ramdisk", "device_model",
                "device_model_ssidref", "device_model_ssid_label", "device_model_user", "extra", "extra_pv",
                "extra_hvm", "sched_params", "ioports", "irqs", "iomem", "claim_mode", "event_channels", "kernel",
                "cmdline", "ramdisk", "device_tree", "acpi", "bootloader", "bootloader_args", "timer_mode",
                "nested_hvm", "apic", "dm_restrict", "tee", "type.hvm", "type.pv", "type.pvh", "arch_arm",
                "arch_x86", "altp2m", "vmtrace_buf_kb", "vpmu")  # fmt: skip
ORDERS = {"": TOP_ORDER, "c_info": C_INFO_ORDER, "b_info": B_INFO_ORDER}

ACTIONS = {"destroy": "destroy", "restart": "restart", "rename-restart": "restart_rename", "preserve": "preserve",
           "coredump-destroy": "coredump_destroy", "coredump-restart": "coredump_restart",
           "soft-reset": "soft_reset"}  # fmt: skip
"""``libxl_action_on_shutdown``: xl.cfg's names -> libxl's (``action_on_shutdown_names`` in xl_parse.c;
``rename-restart`` is libxl's ``restart_rename``)."""
ACTION_KEYS = ("on_poweroff", "on_reboot", "on_watchdog", "on_crash", "on_soft_reset")
LIBXL_ACTIONS = tuple(ACTIONS.values())


def ordered(doc: dict[str, Any], where: str = "") -> dict[str, Any]:
    """``doc`` with its keys in libxl's order (known fields first, in the IDL's order; others after, as they were)."""
    order = ORDERS.get(where, ())
    rank = {key: index for index, key in enumerate(order)}
    keys = sorted(doc, key=lambda key: rank.get(key, len(order)))
    return {key: ordered(doc[key], key) if isinstance(doc[key], dict) and key in ORDERS else doc[key] for key in keys}


def merge(base: dict[str, Any], kept: dict[str, Any]) -> dict[str, Any]:
    """``base`` (the fields DomainConfig interprets) with ``kept`` laid over it, objects merged key by key, in
    libxl's order; neither argument is changed."""
    out = copy.deepcopy(base)
    _merge_into(out, kept)
    return ordered(out)


def _merge_into(out: dict[str, Any], kept: dict[str, Any]) -> None:
    for key, value in kept.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            _merge_into(out[key], value)
        else:
            out[key] = copy.deepcopy(value)


def without(doc: dict[str, Any], paths: Iterable[tuple[str, ...]], containers: Iterable[tuple[str, ...]] = ()
            ) -> dict[str, Any]:  # fmt: skip
    """A deep copy of ``doc`` without the fields at ``paths`` (the interpreted ones), and without those of
    ``containers`` that this leaves empty (the objects the interpreted part writes anyway). Other empty objects stay,
    as libxl writes empty objects (``"sched_params": {}``) too."""
    out = copy.deepcopy(doc)
    for path in paths:
        parent = _parent(out, path)
        if parent is not None:
            parent.pop(path[-1], None)
    for path in containers:
        parent = _parent(out, path)
        if parent is not None and parent.get(path[-1]) == {}:
            del parent[path[-1]]
    return out


def _parent(doc: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any] | None:
    node: Any = doc
    for key in path[:-1]:
        node = node.get(key) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else None


# --- the types of the kept fields libxl checks when it reads JSON ------------------------------------------------
def check(kept: dict[str, Any]) -> None:
    """Refuse kept fields of a type libxl's JSON parser refuses, naming the field (:class:`ConfigError`)."""
    for key in ACTION_KEYS:
        if key in kept and kept[key] not in LIBXL_ACTIONS:
            raise ConfigError(f"must be one of {', '.join(LIBXL_ACTIONS)}", key=key, value=kept[key])
    for key, value in kept.items():
        if key in TOP_ORDER[2:17]:
            if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
                raise ConfigError("must be a list of objects", key=key, value=_brief(value))
            for index, device in enumerate(value):
                _check_object(device, f"{key}[{index}]")
        elif key in ("c_info", "b_info") and not isinstance(value, dict):
            raise ConfigError("must be an object", key=key, value=_brief(value))
    for section in ("c_info", "b_info"):
        if isinstance(kept.get(section), dict):
            _check_object(kept[section], section)


def _check_object(node: dict[str, Any], where: str) -> None:
    """Scalars are strings, integers or the literals libxl writes; defbool-looking fields hold "True"/"False"."""
    for key, value in node.items():
        name = f"{where}.{key}"
        if isinstance(value, dict):
            _check_object(value, name)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, dict):
                    _check_object(item, f"{name}[{index}]")
        elif isinstance(value, float) or (value is not None and not isinstance(value, str | int)):
            raise ConfigError("must be a string, an integer, a list or an object", key=name, value=value)


def _brief(value: object) -> object:
    text = repr(value)
    return value if len(text) <= 80 else text[:77] + "..."

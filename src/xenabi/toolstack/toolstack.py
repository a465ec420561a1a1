"""``Toolstack``: what xl and libxl do for one host: create VMs from their configs and keep those configs.

``DESIGN.md`` decisions 5, 6 and 8. ``create`` works out the features a VM asks for (its pinned set, else its
``xen_abi_features`` request on top of the default: the pool's levelled default if one is set, else the v5 default
of everything the release implements that applies), runs admission (decision 8) *before* anything is created, then
creates the domain with the create flags a host with ABI control understands, and stores the config. A host with
ABI control pins: the stored config lists the effective features explicitly, so that later boots, saves and
restores cannot drift. A toolstack on a host without ABI control is a legacy toolstack and pins nothing.
"""

from __future__ import annotations

import os
from typing import BinaryIO

from xenabi.abi import errno
from xenabi.abi import evtchn as E
from xenabi.abi.hvm import (
    HVM_PARAM_CONSOLE_EVTCHN,
    HVM_PARAM_CONSOLE_PFN,
    HVM_PARAM_STORE_EVTCHN,
    HVM_PARAM_STORE_PFN,
)
from xenabi.abi.xen import HYPERVISOR_event_channel_op
from xenabi.errors import XenError
from xenabi.hypervisor import Hypervisor
from xenabi.policy import AbiPolicy, Refusal, admission, admit
from xenabi.toolstack import saverestore
from xenabi.toolstack.config import DomainConfig


class Toolstack:
    """The toolstack of one host. ``configs`` maps each domain it created to its stored config."""

    def __init__(self, hv: Hypervisor, *, default_features: frozenset[str] | None = None, name: str = "") -> None:
        self.hv = hv
        self.default_features = default_features
        self.name = name or f"xen-{hv.release.name}{'' if hv.abi_control else '-legacy'}"
        self.configs: dict[int, DomainConfig] = {}
        self.overrides: dict[int, tuple[Refusal, ...]] = {}  # admission reasons that --force overrode

    @property
    def pins(self) -> bool:
        return self.hv.abi_control

    def effective_policy(self, cfg: DomainConfig) -> AbiPolicy:
        """The policy ``cfg`` asks of this host (not yet admitted)."""
        return cfg.policy(cfg.requested_features(self.hv.release, self.default_features))

    def admission(self, cfg: DomainConfig) -> tuple[Refusal, ...]:
        return admission(self.effective_policy(cfg), self.hv.release, self.hv.abi_control, cfg.guest_type)

    def create(self, cfg: DomainConfig, *, force: bool = False, start: bool = False) -> int:
        """Create the VM, paused (``start`` unpauses it). :class:`~xenabi.errors.AbiIncompatible` with every
        reason if this host cannot give it its policy, before anything is created (``force`` overrides; the
        overridden reasons are kept in ``overrides``)."""
        policy = self.effective_policy(cfg)
        overridden = admit(policy, self.hv.release, self.hv.abi_control, cfg.guest_type, host=self.name, force=force)
        features = policy.features
        if overridden:  # forced: give what this host can, which is what the guest will see
            features = frozenset(
                name for name in features if name in self.hv.release.applicable_features(cfg.guest_type)
            )
        create = cfg.create_domain(features, abi_control=self.hv.abi_control)
        domid = self.hv.create_domain(create, memory_mb=cfg.max_memory_mb or cfg.memory_mb)
        self.build_pre(domid)
        self.configs[domid] = cfg.pinned(self.hv.domain(domid).policy.features) if self.pins else cfg
        if overridden:
            self.overrides[domid] = overridden
        if start:
            self.hv.unpause(domid)
        return domid

    def build_pre(self, domid: int) -> None:
        """``libxl__build_pre``: fresh xenstore and console ports (remote end dom0) and their rings, handed to the
        guest through HVM params (for PV, the model keeps the start_info fields in the same table)."""
        d = self.hv.domain(domid)
        for port_param, pfn_param, default_pfn in (
            (HVM_PARAM_STORE_EVTCHN, HVM_PARAM_STORE_PFN, d.nr_pages - 2),
            (HVM_PARAM_CONSOLE_EVTCHN, HVM_PARAM_CONSOLE_PFN, d.nr_pages - 1),
        ):
            arg = E.AllocUnbound(dom=domid, remote_dom=0)
            rc = self.hv.hypercall(0, HYPERVISOR_event_channel_op, E.EVTCHNOP_alloc_unbound, arg)
            if rc:
                raise XenError(-rc, f"cannot allocate a toolstack port in d{domid}")
            d.hvm_params[port_param] = arg.port
            d.hvm_params.setdefault(pfn_param, default_pfn)

    # --- save, restore, migrate (saverestore.py) --------------------------------------------------------------
    def save(self, domid: int, target: str | os.PathLike[str] | BinaryIO) -> None:
        """Write an xl save file; the domain is destroyed. On failure it is resumed (MigrationError)."""
        saverestore.save(self, domid, target)

    def restore(self, source: str | os.PathLike[str] | BinaryIO, *, force: bool = False, paused: bool = False) -> int:
        """Restore a save file or stream; admission first (AbiIncompatible lists every reason), nothing is left
        behind on failure."""
        if isinstance(source, str | os.PathLike):
            with open(source, "rb") as stream:
                return saverestore.restore(self, stream, force=force, paused=paused)
        return saverestore.restore(self, source, force=force, paused=paused)

    def migrate(self, domid: int, dest: Toolstack | str, *, force: bool = False, timeout: float = 30.0) -> int:
        """Move a domain to another toolstack (in-process) or to a ``host:port`` running ``xenabi host serve``;
        returns its domid there. The source is resumed if anything fails before the destination holds it."""
        if isinstance(dest, Toolstack):
            return saverestore.migrate_local(self, domid, dest, force=force)
        from xenabi.toolstack.transport import migrate_tcp

        return migrate_tcp(self, domid, dest, force=force, timeout=timeout)

    def config(self, domid: int) -> DomainConfig:
        try:
            return self.configs[domid]
        except KeyError:
            raise XenError(errno.ESRCH, f"this toolstack did not create domain {domid}", field="domid") from None

    def destroy(self, domid: int) -> None:
        self.hv.destroy_domain(domid)
        self.configs.pop(domid, None)
        self.overrides.pop(domid, None)

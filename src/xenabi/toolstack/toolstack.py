"""``Toolstack``: what xl and libxl do for one host: create VMs from their configs and keep those configs.

``DESIGN.md`` decisions 5, 6 and 8. ``create`` works out the features a VM asks for (its pinned set, else its
``xen_abi_features`` request on top of the default: the pool's levelled default if one is set, else the v5 default
of everything the release implements that applies), runs admission (decision 8) *before* anything is created, then
creates the domain with the create flags a host with ABI control understands, and stores the config. A host with
ABI control pins: the stored config lists the effective features explicitly, so that later boots, saves and
restores cannot drift. A toolstack on a host without ABI control is a legacy toolstack and pins nothing.
"""

from __future__ import annotations

from xenabi.errors import XenError
from xenabi.hypervisor import Hypervisor
from xenabi.policy import AbiPolicy, Refusal, admit
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
        from xenabi.policy import admission

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
        self.configs[domid] = cfg.pinned(self.hv.domain(domid).policy.features) if self.pins else cfg
        if overridden:
            self.overrides[domid] = overridden
        if start:
            self.hv.unpause(domid)
        return domid

    def config(self, domid: int) -> DomainConfig:
        try:
            return self.configs[domid]
        except KeyError:
            raise XenError(2, f"this toolstack did not create domain {domid}", field="domid") from None

    def destroy(self, domid: int) -> None:
        self.hv.destroy_domain(domid)
        self.configs.pop(domid, None)
        self.overrides.pop(domid, None)

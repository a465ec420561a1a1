"""``Toolstack``: what xl and libxl do for one host: create VMs from their configs and keep those configs.

``DESIGN.md`` decisions 5, 6 and 8. ``create`` works out the features a VM asks for (its pinned set, else its
``xen_abi_features`` request on top of the default: the pool's levelled default if one is set, else the v5 default
of everything the release implements that applies), runs admission (decision 8) *before* anything is created, then
creates the domain with the create flags a host with ABI control understands, and stores the config. A host with
ABI control pins: the stored config lists the effective features explicitly, so that later boots, saves and
restores cannot drift. A toolstack on a host without ABI control pins nothing.

``legacy=True`` models the toolstacks that predate ABI control altogether (the world the series was written for):
they neither pin nor run admission, because they know nothing of a VM's policy; a VM simply gets whatever its host
exposes. The scenarios run their "uncontrolled" hosts this way.

A toolstack also keeps the VMs that are not running, as xl keeps configs and disks beside each domain: ``shutdown``
stores a VM's config by name, ``start`` boots it again, ``disk_path`` is the VM's disk (a file: hibernation
images go there), and ``upgrade`` replaces the hypervisor in place (decision 5: moving to a host with ABI control
pins every stored config without a policy to the legacy policy of the release the host ran until then).
"""

from __future__ import annotations

import os
import ssl
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from xenabi.abi import errno
from xenabi.abi import evtchn as E
from xenabi.abi.hvm import (
    HVM_PARAM_CONSOLE_EVTCHN,
    HVM_PARAM_CONSOLE_PFN,
    HVM_PARAM_STORE_EVTCHN,
    HVM_PARAM_STORE_PFN,
)
from xenabi.abi.sched import ShutdownReason
from xenabi.abi.xen import HYPERVISOR_event_channel_op
from xenabi.errors import NotModelled, XenError
from xenabi.hypervisor import Hypervisor
from xenabi.policy import AbiPolicy, Refusal, admit, features_of_version, legacy_limits
from xenabi.policy import default_features as release_default
from xenabi.toolstack import saverestore
from xenabi.toolstack.config import DomainConfig
from xenabi.toolstack.libxljson import ACTIONS
from xenabi.toolstack.xlkeys import ACTION_INIT

XL_SHUTDOWN_ACTIONS = {"poweroff": "on_poweroff", "reboot": "on_reboot", "crash": "on_crash",
                       "watchdog": "on_watchdog", "soft_reset": "on_soft_reset"}  # fmt: skip
"""Shutdown reason -> the config key whose action xl takes (``handle_domain_death``)."""
SHUTDOWN_CODES = {reason.name: str(int(reason)) for reason in ShutdownReason}
XL_ACTION_NAMES = {libxl: xl for xl, libxl in ACTIONS.items()}  # get_action_on_shutdown_name


@dataclass(frozen=True)
class ShutdownHandled:
    """What :meth:`Toolstack.handle_shutdown` did: the reason, the action taken, the domain that runs on (None if
    none does), and what xl says."""

    reason: str
    action: str
    domid: int | None
    message: str


class Toolstack:
    """The toolstack of one host. ``configs`` maps each domain it created to its stored config."""

    def __init__(
        self,
        hv: Hypervisor,
        *,
        default_features: frozenset[str] | None = None,
        name: str = "",
        legacy: bool = False,
        state_dir: str | os.PathLike[str] | None = None,
        allow_force: bool = False,
    ) -> None:
        self.hv = hv
        # Whether a migration arriving here may override admission when its sender asks: the receiving host's
        # operator decides, never the sender (a restore run here by this operator may always force).
        self.allow_force = allow_force
        self.default_features = default_features
        self.legacy = legacy
        self._name = name
        self.configs: dict[int, DomainConfig] = {}
        self.overrides: dict[int, tuple[Refusal, ...]] = {}  # admission reasons that --force overrode
        self.policy_basis: dict[int, str] = {}  # for a restored VM: where its policy came from (decision 7)
        self.stored: dict[str, DomainConfig] = {}  # VMs that are not running, by name
        self._state_dir = Path(state_dir) if state_dir is not None else None

    @property
    def name(self) -> str:
        return self._name or f"xen-{self.hv.release.name}{'' if self.hv.abi_control else '-legacy'}"

    @property
    def pins(self) -> bool:
        return self.hv.abi_control and not self.legacy

    @property
    def enforces_admission(self) -> bool:
        return not self.legacy

    def admit(self, policy: AbiPolicy, cfg: DomainConfig, *, force: bool) -> tuple[Refusal, ...]:
        """Decision 8 for this host (a legacy toolstack checks nothing). Returns the reasons ``force`` overrode."""
        if not self.enforces_admission:
            return ()
        return admit(policy, self.hv.release, self.hv.abi_control, cfg.guest_type, host=self.name, force=force,
                     boot_hidden=self.hv.boot_hidden)  # fmt: skip

    def grantable(self, features: frozenset[str], cfg: DomainConfig, overridden: tuple[Refusal, ...]) -> frozenset[str]:
        """The features to create the domain with. Admitted: exactly ``features``. Forced past admission, or on a
        legacy toolstack that never checked: what this host can give, which is what the guest will see."""
        if overridden or self.legacy:
            return features & self.hv.release.applicable_features(cfg.guest_type) & self.hv.features
        return features

    def effective_policy(self, cfg: DomainConfig) -> AbiPolicy:
        """The policy ``cfg`` asks of this host (not yet admitted)."""
        default = self.default_features
        if default is None:  # the v5 default: what this host can give (its boot options may hide some)
            default = release_default(self.hv.release, cfg.guest_type) - self.hv.boot_hidden
        return cfg.policy(cfg.requested_features(self.hv.release, default))

    def create(self, cfg: DomainConfig, *, force: bool = False, start: bool = False) -> int:
        """Create the VM, paused (``start`` unpauses it). :class:`~xenabi.errors.AbiIncompatible` with every
        reason if this host cannot give it its policy, before anything is created (``force`` overrides; the
        overridden reasons are kept in ``overrides``)."""
        cfg = cfg.with_uuid()  # xl gives a VM without one a fresh UUID when it creates it; it keeps it from then on
        policy = self.effective_policy(cfg)
        overridden = self.admit(policy, cfg, force=force)
        domid = self.create_domain(cfg, self.grantable(policy.features, cfg, overridden))
        try:
            self.build_pre(domid)
        except BaseException:
            self.hv.destroy_domain(domid)  # a half-built VM is not left behind
            raise
        self.configs[domid] = self.pin(cfg, domid) if self.pins else cfg
        if overridden:
            self.overrides[domid] = overridden
        if start:
            self.hv.unpause(domid)
        return domid

    def pin(self, cfg: DomainConfig, domid: int) -> DomainConfig:
        """Decision 5 and 10: the domain's features and the grant limits it really has, written down."""
        d = self.hv.domain(domid)
        return cfg.pinned(d.policy.features, (d.grant_table.max_frames, d.grant_table.max_maptrack))

    def create_domain(self, cfg: DomainConfig, features: frozenset[str]) -> int:
        """``XEN_DOMCTL_createdomain`` for ``cfg`` with exactly ``features`` (admission has run). A VM that does not
        fit in the host's free memory is refused before anything is allocated, saying what was asked and what is
        free."""
        memory_mb = cfg.max_memory_mb or cfg.memory_mb
        create = cfg.create_domain(features, feature_bits=self.hv.feature_cdf_bits, abi_control=self.hv.abi_control,
                                   release=self.hv.release)  # fmt: skip
        try:
            return self.hv.create_domain(create, memory_mb=memory_mb)
        except XenError as exc:
            if exc.errno != errno.ENOMEM:
                raise
            raise XenError(
                errno.ENOMEM,
                f"VM {cfg.name!r} needs {memory_mb} MiB; host {self.name} has {self.hv.free_memory_mb} MiB free "
                f"of {self.hv.memory_mb} MiB",
                field="memory",
            ) from exc

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

    def restore(
        self,
        source: str | os.PathLike[str] | BinaryIO,
        *,
        force: bool = False,
        paused: bool = False,
        source_gnttab_max_version: int | None = None,
    ) -> int:
        """Restore a save file or stream; admission first (AbiIncompatible lists every reason), nothing is left
        behind on failure. ``source_gnttab_max_version`` is the operator's word on the source host's boot option
        gnttab=max-ver, for a stream from before 4.16 that cannot say it (``policy_basis`` records what was used)."""
        if isinstance(source, str | os.PathLike):
            with open(source, "rb") as stream:
                return self.restore(stream, force=force, paused=paused,
                                    source_gnttab_max_version=source_gnttab_max_version)  # fmt: skip
        return saverestore.restore(self, source, force=force, paused=paused,
                                   source_gnttab_max_version=source_gnttab_max_version)  # fmt: skip

    def migrate(
        self,
        domid: int,
        dest: Toolstack | str,
        *,
        force: bool = False,
        timeout: float = 30.0,
        notice: Callable[[str], None] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> int:
        """Move a domain to another toolstack (in-process) or to a ``host:port`` running ``xenabi host serve``;
        returns its domid there. The source is resumed if anything fails before the destination holds it.
        ``force`` asks the receiver to override admission; it does so only if its operator allowed it
        (``allow_force``). ``notice`` hears what the receiver says along the way (a queue, an override);
        ``tls`` is the client side of mutual TLS (``transport.client_tls``)."""
        if isinstance(dest, Toolstack):
            return saverestore.migrate_local(self, domid, dest, force=force)
        from xenabi.toolstack.transport import migrate_tcp

        return migrate_tcp(self, domid, dest, force=force, timeout=timeout, notice=notice, tls=tls)

    def config(self, domid: int) -> DomainConfig:
        try:
            return self.configs[domid]
        except KeyError:
            raise XenError(errno.ESRCH, f"this toolstack did not create domain {domid}", field="domid") from None

    def destroy(self, domid: int) -> None:
        self.hv.destroy_domain(domid)
        self.configs.pop(domid, None)
        self.overrides.pop(domid, None)
        self.policy_basis.pop(domid, None)

    # --- VMs that are not running -----------------------------------------------------------------------------
    @property
    def state_dir(self) -> Path:
        if self._state_dir is None:
            self._state_dir = Path(tempfile.mkdtemp(prefix=f"xenabi-{self.name}-"))
        self._state_dir.mkdir(parents=True, exist_ok=True)
        return self._state_dir

    def disk_path(self, name: str) -> Path:
        """The VM's disk, kept with its config."""
        return self.state_dir / f"{name}.disk"

    def shutdown(self, domid: int) -> DomainConfig:
        """The VM powered off (or was destroyed): its domain goes, its config is kept under its name."""
        cfg = self.config(domid)
        self.destroy(domid)
        self.stored[cfg.name] = cfg
        return cfg

    def handle_shutdown(self, domid: int) -> ShutdownHandled:
        """What xl does when a domain it created shuts down (``handle_domain_death``), by the VM's ``on_*`` action
        for the reason (a config read from xl.cfg carries xl's defaults; libxl's JSON leaves destroy out):
        ``destroy`` (the config is kept by name, as :meth:`shutdown` keeps it), ``restart`` (destroyed and created
        again from its config: a fresh domain, whose kernel must boot), ``preserve`` (left as it is), ``soft-reset``
        (4.7+: paused, ``XEN_DOMCTL_soft_reset``, its toolstack ports made again as ``libxl__build_pre`` makes
        them, unpaused: the same domain and memory, for a kexec'd kernel). A reason xl does not know, which includes
        ``soft_reset`` before 4.7, destroys the domain with xl's message. A soft reset Xen refuses destroys it too.
        ``suspend`` is left to the save that asked for it. The other actions (``rename-restart``, ``coredump-*``)
        are not modelled."""
        d = self.hv.domain(domid)
        reason = d.shutdown_reason
        if reason is None:
            raise XenError(errno.EINVAL, f"d{domid} has not shut down", field="domid")
        cfg = self.config(domid)
        if reason == "suspend":
            return ShutdownHandled(reason, "none", domid, "Domain has suspended.")
        if reason not in XL_SHUTDOWN_ACTIONS or (reason == "soft_reset" and not self.hv.release.soft_reset):
            code = SHUTDOWN_CODES.get(reason, reason.removeprefix("code "))
            self.shutdown(domid)
            return ShutdownHandled(reason, "destroy", None, f"Unknown shutdown reason code {code}. Destroying domain.")
        key = XL_SHUTDOWN_ACTIONS[reason]
        action = cfg.libxl.get(key) or ACTION_INIT  # libxl's JSON leaves an action out when it is destroy
        said = f"Action for shutdown reason code {SHUTDOWN_CODES[reason]} is {XL_ACTION_NAMES.get(action, action)}"
        cleanup = f"{said}; Domain {domid} needs to be cleaned up: destroying the domain"
        if action == "destroy":
            self.shutdown(domid)
            return ShutdownHandled(reason, action, None, cleanup)
        if action == "preserve":
            return ShutdownHandled(reason, action, domid, said)
        if action == "restart":
            self.shutdown(domid)
            return ShutdownHandled(reason, action, self.start(cfg.name), cleanup)
        if action == "soft_reset":
            return self._soft_reset(domid, reason, said)
        raise NotModelled(f"on_{reason} action {action!r} (xl's {key})")

    def _soft_reset(self, domid: int, reason: str, said: str) -> ShutdownHandled:
        """libxl's soft reset (``libxl__destroy_domid`` with ``soft_reset``): pause, XEN_DOMCTL_soft_reset,
        unpause, and the domain built again over the same memory, whose ``libxl__build_pre`` makes fresh toolstack
        ports. A reset Xen refuses fails the re-creation, and the domain is destroyed."""
        self.hv.pause(domid)
        try:
            self.hv.soft_reset(domid)
        except XenError as exc:
            self.shutdown(domid)
            return ShutdownHandled(reason, "destroy", None, f"{said}; the soft reset failed ({exc}): destroyed")
        self.build_pre(domid)
        self.hv.unpause(domid)
        return ShutdownHandled(reason, "soft_reset", domid, said)

    def start(self, name: str, *, force: bool = False) -> int:
        """Boot a stored VM again from its (pinned) config."""
        try:
            cfg = self.stored[name]
        except KeyError:
            raise XenError(errno.ENOENT, f"no stored VM named {name!r}", field="name") from None
        domid = self.create(cfg, force=force, start=True)
        del self.stored[name]
        return domid

    def upgrade(self, release: str, *, abi_control: bool) -> Hypervisor:
        """Replace the hypervisor in place with ``release`` (the host reboots: no domU may be running). Moving to
        a host with ABI control pins every unpinned stored config to the legacy policy of the old release."""
        running = [domid for domid in self.hv.domains if domid != 0]
        if running:
            raise XenError(errno.EBUSY, f"domains {running} are still running; migrate or shut them down first")
        old = self.hv.release
        new = Hypervisor(release, abi_control=abi_control)
        if abi_control and not self.legacy:
            for name, cfg in list(self.stored.items()):
                if cfg.pinned_features is None:
                    features = features_of_version(old.version, cfg.guest_type) - cfg.knob_hidden
                    self.stored[name] = cfg.pinned(features, legacy_limits(old))
        self.hv.close()  # the old hypervisor is gone with the reboot (only dom0 was left on it)
        self.hv = new
        return new

"""``DomainConfig``: what a VM is, from its xl.cfg or libxl-style JSON, and its ABI feature request.

Keys read from xl.cfg (``docs/man/xl.cfg.5.pod.in``; ``spec/streams.md`` §5): ``name`` (required), ``type`` (``hvm``,
``pv``, ``pvh``; the old ``builder = "hvm"`` also means HVM; neither means PV, as xl decides), ``memory`` (MiB,
default 32, libxl's), ``maxmem``, ``vcpus`` (default 1), ``maxvcpus``, ``max_event_channels`` (default 1023),
``max_grant_frames``, ``max_maptrack_frames``, ``max_grant_version`` (4.16: 1 or 2), ``kernel`` (on HVM, one named
``hvmloader`` is dropped, with xl's warning), ``ramdisk``, ``cmdline`` or ``root`` and ``extra`` (xl's
``parse_cmdline``), ``uuid``, and ``xen_abi_features`` (v5 series, ``spec/abi-control.md`` §1.4-§1.5). The devices
(:mod:`~xenabi.toolstack.xldevices`) and the display, firmware, platform and action keys
(:mod:`~xenabi.toolstack.xlkeys`) go into libxl's own JSON fields, as xl 4.17 puts them (issue 19), and are kept in
:attr:`DomainConfig.libxl` with every libxl field xenabi does not interpret (:mod:`~xenabi.toolstack.libxljson`).
Any other key is kept as written, under ``xenabi.xl`` in the JSON (not modelled: real libxl drops it), so that
nothing the operator wrote is lost on the way to JSON and back.

``xen_abi_features`` entries: a feature name enables it, ``!name`` disables it, ``all`` enables every feature
that applies. Features not mentioned take the host's default (decision 6). Errors, each naming the entry: an unknown
name, a feature both enabled and disabled, and a feature enabled by name for a guest type it does not apply to
(``evtchn_upcall`` for pv). ``all`` only enables what applies.

Xen's own knobs (decision 10): ``max_grant_version = 1`` is how xl hides grant v2 on a 4.16+ host (the create
struct's ``grant_opts``). It takes ``gnttab_v2`` out of the default and of ``all``, and naming ``gnttab_v2`` in
``xen_abi_features`` (or pinning it) beside it is an error naming both keys. Which knob hides which feature is
the registry's (``AbiFeature.xen_knob``) and :data:`KNOB_SETTINGS`'.

Pinning (decision 5): the toolstack records the effective feature set as ``pinned_features``; a pinned config
means exactly that set on every later boot, restore and migration, whatever the host's defaults. In the JSON,
``b_info.xen_abi_features`` holds the entries as written and ``b_info.xen_abi_features_pinned`` the pinned set
(in xl.cfg: ``xen_abi_features_pinned = [ "evtchn_fifo" ]``, which the toolstack writes and reads back).
libxl never had these keys (the series was not merged), so they are xenabi's; the other keys are libxl's own
(``c_info.type``/``name``, ``b_info.max_vcpus``, ``max_memkb``, ``target_memkb``, ``event_channels``,
``max_grant_frames``, ``max_maptrack_frames``, ``kernel``, ``ramdisk``, ``cmdline``, the keyed union
``type.hvm``/``type.pv``/``type.pvh``).

A VM without a ``uuid`` has none until the toolstack first creates it (:meth:`DomainConfig.with_uuid`, as xl's
``libxl_uuid_generate``); from then on its stored config carries it, and it is the domain's handle.
"""

from __future__ import annotations

import json
import uuid as uuidlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from xenabi.abi.domctl import CreateDomain, GuestType
from xenabi.abi.features import REGISTRY
from xenabi.errors import ConfigError
from xenabi.policy import AbiPolicy, Release, default_features, get_release
from xenabi.toolstack import libxljson, xlcfg, xldevices, xlkeys

ABI_KEY = "xen_abi_features"
PINNED_KEY = "xen_abi_features_pinned"
ALL = "all"
DEFAULT_MEMORY_MB = 32  # libxl__domain_build_info_setdefault (libxl_create.c): max_memkb 32 MiB, target = max
DEFAULT_EVENT_CHANNELS = 1023
MODELLED_XL_KEYS = frozenset(
    {
        "name", "type", "builder", "memory", "maxmem", "vcpus", "maxvcpus", "max_event_channels",
        "max_grant_frames", "max_maptrack_frames", "max_grant_version", "kernel", "ramdisk", "extra", "cmdline",
        "root", "uuid", ABI_KEY, PINNED_KEY,
    }
)  # fmt: skip
KNOB_SETTINGS: dict[str, tuple[str, int]] = {"gnttab_grant_opts": ("max_grant_version", 1)}
"""A per-domain Xen knob (``AbiFeature.xen_knob``) -> the DomainConfig field and value that use it to hide."""
MAX_GRANT_VERSIONS = (1, 2)
INTERPRETED = (
    ("c_info", "type"), ("c_info", "name"), ("c_info", "uuid"),
    *(("b_info", key) for key in ("max_vcpus", "avail_vcpus", "max_memkb", "target_memkb", "event_channels",
                                  "max_grant_frames", "max_maptrack_frames", "max_grant_version", "kernel",
                                  "ramdisk", "cmdline", ABI_KEY, PINNED_KEY)),
)  # fmt: skip
"""The libxl JSON fields DomainConfig reads into its own attributes; every other field is kept in ``libxl``."""
CONTAINERS = (*(("b_info", f"type.{kind.value}") for kind in GuestType), ("b_info",), ("c_info",))
"""Objects :meth:`DomainConfig.to_json` writes anyway: not kept when nothing else is in them."""


@dataclass(frozen=True, slots=True)
class FeatureRequest:
    """``xen_abi_features`` after validation: what is enabled, what disabled, and whether ``all`` was given."""

    enable: frozenset[str] = frozenset()
    disable: frozenset[str] = frozenset()
    all: bool = False

    def resolve(self, default: frozenset[str], release: Release, guest_type: GuestType) -> frozenset[str]:
        """The features asked of a host: its default, plus ``all`` and the enabled ones, minus the disabled.
        A feature the host does not implement stays in the set, so that admission names it."""
        features = set(default)
        if self.all:
            features |= release.applicable_features(guest_type)
        features |= self.enable
        features -= self.disable
        return frozenset(features)


def parse_feature_entries(entries: list[str] | tuple[str, ...], guest_type: GuestType) -> FeatureRequest:
    enable: set[str] = set()
    disable: set[str] = set()
    every = False
    for entry in entries:
        if not isinstance(entry, str):
            raise ConfigError("entries must be strings", key=ABI_KEY, value=entry)
        negated = entry.startswith("!")
        name = entry[1:] if negated else entry
        if name == ALL and not negated:
            every = True
            continue
        if name not in REGISTRY:
            known = ", ".join((ALL, *REGISTRY.names()))
            raise ConfigError(f"unknown ABI feature {entry!r} (known: {known})", key=ABI_KEY, value=entry)
        (disable if negated else enable).add(name)
        if name in enable and name in disable:
            raise ConfigError(f"{name!r} is both enabled and disabled", key=ABI_KEY, value=entry)
        if not negated and not REGISTRY[name].applies_to(guest_type):
            raise ConfigError(f"{name!r} does not apply to {guest_type.value} guests", key=ABI_KEY, value=entry)
    return FeatureRequest(frozenset(enable), frozenset(disable), every)


@dataclass(frozen=True)
class DomainConfig:
    """One VM's configuration. Build it with :meth:`from_xl` or :meth:`from_json`; construction validates."""

    name: str
    guest_type: GuestType = GuestType.PV
    memory_mb: int = DEFAULT_MEMORY_MB
    max_memory_mb: int | None = None
    vcpus: int = 1
    max_vcpus: int | None = None
    max_event_channels: int = DEFAULT_EVENT_CHANNELS
    max_grant_frames: int | None = None
    max_maptrack_frames: int | None = None
    max_grant_version: int | None = None
    kernel: str | None = None
    ramdisk: str | None = None
    cmdline: str | None = None
    abi_features: tuple[str, ...] | None = None
    pinned_features: frozenset[str] | None = None
    uuid: str | None = None  # c_info.uuid; the toolstack gives one at the VM's first creation (as xl does)
    # libxl JSON fields kept as they came, not interpreted here: devices, actions, display, xl's defaults, ...
    libxl: dict[str, Any] = field(default_factory=dict, hash=False)
    # xl.cfg keys that reach no libxl field here: not modelled, carried under "xenabi.xl"
    xl_settings: dict[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "guest_type", GuestType(self.guest_type))
        if not self.name:
            raise ConfigError("a domain name must be given", key="name", value=self.name)
        if self.uuid is not None:
            object.__setattr__(self, "uuid", xlkeys.parse_uuid(self.uuid, "uuid"))
        libxljson.check(self.libxl)
        # what to_json writes anyway is not kept empty, so that every way of building a config compares the same
        object.__setattr__(self, "libxl", libxljson.without(self.libxl, (), CONTAINERS))
        _check_int("memory", self.memory_mb, 1)
        _check_int("vcpus", self.vcpus, 1)
        _check_int("max_event_channels", self.max_event_channels, 1, 0xFFFFFFFF)
        for key, value in (
            ("maxmem", self.max_memory_mb),
            ("maxvcpus", self.max_vcpus),
            ("max_grant_frames", self.max_grant_frames),
            ("max_maptrack_frames", self.max_maptrack_frames),
        ):
            if value is not None:
                _check_int(key, value, 0)
        if self.max_memory_mb is not None and self.max_memory_mb < self.memory_mb:
            raise ConfigError(f"maxmem {self.max_memory_mb} is below memory {self.memory_mb}", key="maxmem",
                              value=self.max_memory_mb)  # fmt: skip
        if self.max_vcpus is not None and self.max_vcpus < self.vcpus:
            raise ConfigError(f"maxvcpus {self.max_vcpus} is below vcpus {self.vcpus}", key="maxvcpus",
                              value=self.max_vcpus)  # fmt: skip
        if self.max_grant_version is not None and (
            not isinstance(self.max_grant_version, int) or isinstance(self.max_grant_version, bool)
            or self.max_grant_version not in MAX_GRANT_VERSIONS
        ):  # fmt: skip
            raise ConfigError("must be 1 or 2", key="max_grant_version", value=self.max_grant_version)
        if self.abi_features is not None:
            object.__setattr__(self, "abi_features", tuple(self.abi_features))
            request = parse_feature_entries(self.abi_features, self.guest_type)
            for name in sorted(request.enable & self.knob_hidden):
                setting = KNOB_SETTINGS[REGISTRY[name].xen_knob]
                raise ConfigError(f"{name!r} is asked for, but {setting[0]} = {setting[1]} hides it", key=ABI_KEY,
                                  value=name)  # fmt: skip
        if self.pinned_features is not None:
            pinned = frozenset(self.pinned_features)
            object.__setattr__(self, "pinned_features", pinned)
            for name in sorted(pinned):
                if name not in REGISTRY:
                    raise ConfigError(f"unknown ABI feature {name!r}", key=PINNED_KEY, value=name)
                if not REGISTRY[name].applies_to(self.guest_type):
                    raise ConfigError(f"{name!r} does not apply to {self.guest_type.value} guests", key=PINNED_KEY,
                                      value=name)  # fmt: skip
                if name in self.knob_hidden:
                    setting = KNOB_SETTINGS[REGISTRY[name].xen_knob]
                    raise ConfigError(f"{name!r} is pinned, but {setting[0]} = {setting[1]} hides it",
                                      key=PINNED_KEY, value=name)  # fmt: skip

    # --- what it asks for ----------------------------------------------------------------------------------
    @property
    def knob_hidden(self) -> frozenset[str]:
        """The registry features this config's Xen knobs hide (``max_grant_version = 1``: grant v2)."""
        hidden = set()
        for row in REGISTRY:
            setting = KNOB_SETTINGS.get(row.xen_knob)
            if setting is not None and getattr(self, setting[0]) == setting[1]:
                hidden.add(row.name)
        return frozenset(hidden)

    @property
    def feature_request(self) -> FeatureRequest:
        return parse_feature_entries(self.abi_features or (), self.guest_type)

    @property
    def is_pinned(self) -> bool:
        return self.pinned_features is not None

    def requested_features(self, release: str | Release, default: frozenset[str] | None = None) -> frozenset[str]:
        """The exact features this VM asks of a host of ``release``: the pinned set if there is one, else the
        request applied to ``default`` (the v5 default when None: everything the release implements that
        applies)."""
        if self.pinned_features is not None:
            return self.pinned_features
        host = get_release(release)
        base = default_features(host, self.guest_type) if default is None else default
        base = frozenset(name for name in base if REGISTRY[name].applies_to(self.guest_type))
        return self.feature_request.resolve(base, host, self.guest_type) - self.knob_hidden

    def policy(self, features: frozenset[str]) -> AbiPolicy:
        return AbiPolicy(
            features,
            max_evtchn_port=self.max_event_channels,
            max_grant_frames=-1 if self.max_grant_frames is None else self.max_grant_frames,
            max_maptrack_frames=-1 if self.max_maptrack_frames is None else self.max_maptrack_frames,
        )

    def create_domain(
        self, features: frozenset[str], *, feature_bits: Mapping[str, int], abi_control: bool, release: Release
    ) -> CreateDomain:
        """The ``XEN_DOMCTL_createdomain`` libxl builds for a host of ``release``. With ABI control: the series'
        flags where ``feature_bits`` (``Hypervisor.feature_cdf_bits``) puts them and every feature in the
        ``abi_features`` mask; without, neither (that hypervisor would refuse them). ``grant_opts`` from 4.16: the
        config's ``max_grant_version``, or 1 where the release's own knob must hide a feature the VM lacks (a host
        without ABI control, decision 10), else the host's maximum (None)."""
        flags = mask = 0
        for name in features:
            if name in feature_bits:
                flags |= 1 << feature_bits[name]
            if abi_control:
                mask |= REGISTRY[name].mask_flag
        grant_opts = None
        if release.gnttab_grant_opts:
            grant_opts = self.max_grant_version
            for row in REGISTRY:
                knob_hides = not abi_control and release.can_hide(row) and row.applies_to(self.guest_type)
                if knob_hides and row.name not in features and row.xen_knob in KNOB_SETTINGS:
                    grant_opts = KNOB_SETTINGS[row.xen_knob][1]
        grant_frames = -1 if self.max_grant_frames is None else self.max_grant_frames
        if (
            grant_frames < 0
            and release.gnttab_per_domain_limits
            and release.xl_grant_frames_default != release.gnttab_host_max_frames
        ):
            grant_frames = release.xl_grant_frames_default  # libxl 4.10-4.12 passed its own default, 32
        return CreateDomain.for_type(
            self.guest_type,
            features=flags,
            abi_features=mask,
            grant_opts=grant_opts,
            max_vcpus=self.max_vcpus or self.vcpus,
            max_evtchn_port=self.max_event_channels,
            max_grant_frames=grant_frames,
            max_maptrack_frames=-1 if self.max_maptrack_frames is None else self.max_maptrack_frames,
            handle=bytes(16) if self.uuid is None else uuidlib.UUID(self.uuid).bytes,
        )

    def with_uuid(self) -> DomainConfig:
        """This config, with a fresh random UUID if it has none (``libxl_uuid_generate``, as xl does at creation)."""
        return self if self.uuid is not None else replace(self, uuid=str(uuidlib.uuid4()))

    def pinned(self, features: frozenset[str], limits: tuple[int, int] | None = None) -> DomainConfig:
        """Decision 5: this config with its effective features written down explicitly, and (decision 10) the
        grant and maptrack frame limits the guest had, where the config named none: never "the host default"."""
        pinned = replace(self, pinned_features=frozenset(features))
        if limits is not None:
            grant, maptrack = limits
            pinned = replace(pinned, max_grant_frames=self.max_grant_frames if self.max_grant_frames is not None
                             else grant, max_maptrack_frames=self.max_maptrack_frames
                             if self.max_maptrack_frames is not None else maptrack)  # fmt: skip
        return pinned

    # --- xl.cfg ----------------------------------------------------------------------------------------------
    @classmethod
    def from_xl(cls, text: str, source: str = "<config>") -> DomainConfig:
        """Parse xl.cfg text. :class:`~xenabi.errors.XlCfgError` on bad syntax (line, column);
        :class:`~xenabi.errors.ConfigError` on a bad value (key, value, line)."""
        return cls.from_xlcfg(xlcfg.parse(text, source))

    @classmethod
    def from_xlcfg(cls, cfg: xlcfg.XlConfig) -> DomainConfig:
        guest_type = _guest_type(cfg)
        name = cfg.get_string("name")
        if name is None:
            raise ConfigError("a domain name must be given", key="name")
        entries = cfg.get_string_list(ABI_KEY)
        pinned = cfg.get_string_list(PINNED_KEY)
        uuid = _uuid(cfg)  # xl reads it before the rest, so its error comes first
        libxl = xlkeys.read(cfg, guest_type, lambda: xldevices.read(cfg, guest_type))
        kwargs: dict[str, Any] = {
            "name": name,
            "guest_type": guest_type,
            "kernel": _kernel(cfg, guest_type),
            "ramdisk": cfg.get_string("ramdisk"),
            "cmdline": _cmdline(cfg),
            "uuid": uuid,
            "abi_features": tuple(entries) if entries is not None else None,
            "pinned_features": frozenset(pinned) if pinned is not None else None,
            "libxl": libxl,
            "xl_settings": {key: _typed(cfg.settings[key].value) for key in cfg if key not in MODELLED_XL_KEYS
                            and key not in xlkeys.MAPPED_KEYS and key not in xldevices.DEVICE_KEYS},
        }  # fmt: skip
        for attr, key, lowest in (
            ("memory_mb", "memory", 1),
            ("max_memory_mb", "maxmem", 0),
            ("vcpus", "vcpus", 1),
            ("max_vcpus", "maxvcpus", 1),
            ("max_event_channels", "max_event_channels", 1),
            ("max_grant_frames", "max_grant_frames", 0),
            ("max_maptrack_frames", "max_maptrack_frames", 0),
            ("max_grant_version", "max_grant_version", 0),
        ):
            value = cfg.get_long(key, lowest, 0xFFFFFFFF)
            if value is not None:
                kwargs[attr] = value
        if "memory_mb" not in kwargs and "max_memory_mb" in kwargs:  # libxl: the target defaults to the maximum
            kwargs["memory_mb"] = kwargs.pop("max_memory_mb")
        try:
            return cls(**kwargs)
        except ConfigError as exc:
            setting = cfg.settings.get(exc.key)
            if setting is None or exc.line is not None:
                raise
            raise ConfigError(exc.message, key=exc.key, value=exc.value, line=setting.line) from None

    def to_xl(self) -> str:
        """xl.cfg text that reads back as this config (:meth:`from_xl`), the pinned set included."""
        lines = [f"name = {xlcfg.quote(self.name)}", f"type = {xlcfg.quote(self.guest_type.value)}"]
        if self.uuid is not None:
            lines.append(f"uuid = {xlcfg.quote(self.uuid)}")
        lines.append(f"memory = {self.memory_mb}")
        if self.max_memory_mb is not None:
            lines.append(f"maxmem = {self.max_memory_mb}")
        lines.append(f"vcpus = {self.vcpus}")
        if self.max_vcpus is not None:
            lines.append(f"maxvcpus = {self.max_vcpus}")
        if self.max_event_channels != DEFAULT_EVENT_CHANNELS:
            lines.append(f"max_event_channels = {self.max_event_channels}")
        for key in ("max_grant_frames", "max_maptrack_frames", "max_grant_version"):
            value = getattr(self, key)
            if value is not None:
                lines.append(f"{key} = {value}")
        for key, value in (("kernel", self.kernel), ("ramdisk", self.ramdisk), ("cmdline", self.cmdline)):
            if value is not None:
                lines.append(f"{key} = {xlcfg.quote(value)}")
        if self.abi_features is not None:
            lines.append(f"{ABI_KEY} = {xlcfg.render(list(self.abi_features))}")
        if self.pinned_features is not None:
            pinned = sorted(self.pinned_features, key=lambda name: REGISTRY[name].bit)
            lines.append(f"{PINNED_KEY} = {xlcfg.render(pinned)}")
        lines += xlkeys.to_xl(self.libxl, self.guest_type)
        lines += xldevices.to_xl(self.libxl)
        for key, value in self.xl_settings.items():
            lines.append(f"{key} = {xlcfg.render(value)}")
        return "\n".join(lines) + "\n"

    # --- libxl JSON ------------------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        b_info: dict[str, Any] = {
            "max_vcpus": self.max_vcpus or self.vcpus,
            "avail_vcpus": list(range(self.vcpus)),
            "max_memkb": (self.max_memory_mb or self.memory_mb) * 1024,
            "target_memkb": self.memory_mb * 1024,
            "event_channels": self.max_event_channels,
        }
        for key in ("max_grant_frames", "max_maptrack_frames", "max_grant_version", "kernel", "ramdisk", "cmdline"):
            value = getattr(self, key)
            if value is not None:
                b_info[key] = value
        if self.abi_features is not None:
            b_info[ABI_KEY] = list(self.abi_features)
        if self.pinned_features is not None:
            b_info[PINNED_KEY] = sorted(self.pinned_features, key=lambda name: REGISTRY[name].bit)
        b_info[f"type.{self.guest_type.value}"] = {}
        c_info: dict[str, Any] = {"type": self.guest_type.value, "name": self.name}
        if self.uuid is not None and self.uuid != xlkeys.NIL_UUID:  # libxl leaves the nil UUID out
            c_info["uuid"] = self.uuid
        doc = libxljson.merge({"c_info": c_info, "b_info": b_info}, self.libxl)
        if self.xl_settings:
            doc["xenabi"] = {"xl": self.xl_settings}
        return doc

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=4)

    @classmethod
    def from_json(cls, doc: str | bytes | dict[str, Any]) -> DomainConfig:
        """The inverse of :meth:`to_json`. Fields xenabi does not interpret are kept as they came
        (:attr:`libxl`), so that a domain real xl described keeps every device and action."""
        if isinstance(doc, str | bytes):
            try:
                doc = json.loads(doc)
            except (ValueError, RecursionError) as exc:  # bad JSON or UTF-8, an int past Python's digit limit, nesting
                raise ConfigError(f"domain config JSON does not parse: {exc}", key="<json>") from exc
        if not isinstance(doc, dict):
            raise ConfigError("domain config JSON must be an object", key="<json>")
        c_info, b_info = _section(doc, "c_info"), _section(doc, "b_info")
        kwargs: dict[str, Any] = {
            "name": _get(c_info, "c_info.name", str),
            "guest_type": _guest_type_name(_get(c_info, "c_info.type", str, default="pv"), "c_info.type"),
            "uuid": _get(c_info, "c_info.uuid", str, default=None),
            "libxl": libxljson.without({k: v for k, v in doc.items() if k != "xenabi"}, INTERPRETED, CONTAINERS),
        }
        max_vcpus = _get(b_info, "b_info.max_vcpus", int, default=1)
        avail = _get(b_info, "b_info.avail_vcpus", list, default=None)
        kwargs["vcpus"] = len(avail) if avail else max_vcpus
        if max_vcpus != kwargs["vcpus"]:
            kwargs["max_vcpus"] = max_vcpus
        target = _get(b_info, "b_info.target_memkb", int, default=DEFAULT_MEMORY_MB * 1024)
        maximum = _get(b_info, "b_info.max_memkb", int, default=target)
        kwargs["memory_mb"] = target // 1024
        if maximum != target:
            kwargs["max_memory_mb"] = maximum // 1024
        kwargs["max_event_channels"] = _get(b_info, "b_info.event_channels", int, default=DEFAULT_EVENT_CHANNELS)
        for key in ("max_grant_frames", "max_maptrack_frames"):
            kwargs[key] = _get(b_info, f"b_info.{key}", int, default=None)
        # libxl writes -1 (LIBXL_MAX_GRANT_DEFAULT) for "the host's maximum", which is None here
        grant_version = _get(b_info, "b_info.max_grant_version", int, default=None)
        kwargs["max_grant_version"] = None if grant_version == -1 else grant_version
        for key in ("kernel", "ramdisk", "cmdline"):
            kwargs[key] = _get(b_info, f"b_info.{key}", str, default=None)
        entries = _get(b_info, f"b_info.{ABI_KEY}", list, default=None)
        kwargs["abi_features"] = tuple(entries) if entries is not None else None
        pinned = _get(b_info, f"b_info.{PINNED_KEY}", list, default=None)
        if pinned is not None:
            if not all(isinstance(name, str) for name in pinned):
                raise ConfigError("must be a list of feature names", key=f"b_info.{PINNED_KEY}", value=pinned)
            kwargs["pinned_features"] = frozenset(pinned)
        extension = doc.get("xenabi", {})
        xl = extension.get("xl", {}) if isinstance(extension, dict) else None
        if not isinstance(xl, dict):
            raise ConfigError("must be an object", key="xenabi.xl", value=xl)
        kwargs["xl_settings"] = xl
        return cls(**kwargs)


def _kernel(cfg: xlcfg.XlConfig, guest_type: GuestType) -> str | None:
    """``kernel``; on HVM a kernel named ``hvmloader`` is dropped with xl's warning (it overrode the firmware once)."""
    kernel = cfg.get_string("kernel")
    if kernel is not None and guest_type is GuestType.HVM and kernel.rsplit("/", 1)[-1] == "hvmloader":
        cfg.warnings.append(
            'WARNING: you seem to be using "kernel" directive to override HVM guest firmware. '
            'Ignore that. Use "firmware_override" instead if you really want a non-default firmware'
        )
        return None
    return kernel


def _cmdline(cfg: xlcfg.XlConfig) -> str | None:
    """xl's ``parse_cmdline``: ``cmdline``, else ``root=ROOT EXTRA`` from ``root`` and ``extra`` (cmdline wins, with
    a warning when either of the others is given too)."""
    cmdline, root, extra = cfg.get_string("cmdline"), cfg.get_string("root"), cfg.get_string("extra")
    if cmdline is not None:
        if root is not None or extra is not None:
            cfg.warnings.append("Warning: ignoring root= and extra= in favour of cmdline=")
        return cmdline
    if root is not None:
        return f"root={root} {extra}" if extra is not None else f"root={root}"
    return extra


def _uuid(cfg: xlcfg.XlConfig) -> str | None:
    """``uuid``, as libuuid reads it; absent (or a list, which xl warns about) means one is made at creation."""
    setting = cfg.settings.get("uuid")
    if setting is None:
        return None
    if isinstance(setting.value, xlcfg.XlList):
        cfg.warnings.append(f"{cfg.source}:{setting.line}: warning: parameter `uuid' is a list but should be a "
                            "single value")  # fmt: skip
        return None
    return xlkeys.parse_uuid(setting.value.text, "uuid", setting.line, setting.value.column)


def _typed(value: xlcfg.XlValue) -> Any:
    """An xl value as plain JSON: number tokens that C reads as numbers become ints, the rest stays text."""
    if isinstance(value, xlcfg.XlList):
        return [_typed(item) for item in value.items]
    if value.kind == "number":
        number = xlcfg.strtol(value.text)
        if number is not None and str(number) == value.text:
            return number
    return value.text


def _check_int(key: str, value: object, lowest: int, highest: int = 2**63 - 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError("must be an integer", key=key, value=value)
    if not lowest <= value <= highest:
        raise ConfigError(f"{value} is outside {lowest}..{highest}", key=key, value=value)


def _guest_type(cfg: xlcfg.XlConfig) -> GuestType:
    kind = cfg.get_string("type")
    if kind is not None:
        return _guest_type_name(kind, "type", cfg.settings["type"].line)
    builder = cfg.get_string("builder")
    if builder is not None:
        if builder not in ("hvm", "generic"):
            raise ConfigError("must be 'hvm' or 'generic'", key="builder", value=builder,
                              line=cfg.settings["builder"].line)  # fmt: skip
        return GuestType.HVM if builder == "hvm" else GuestType.PV
    return GuestType.PV


def _guest_type_name(kind: str, key: str, line: int | None = None) -> GuestType:
    try:
        return GuestType(kind)
    except ValueError:
        raise ConfigError("must be one of hvm, pv, pvh", key=key, value=kind, line=line) from None


def _section(doc: dict[str, Any], key: str) -> dict[str, Any]:
    section = doc.get(key)
    if not isinstance(section, dict):
        raise ConfigError("missing or not an object", key=key, value=section)
    return section


_MISSING = object()


def _get(section: dict[str, Any], key: str, kind: type, default: Any = _MISSING) -> Any:
    value = section.get(key.split(".", 1)[1], _MISSING)
    if value is _MISSING or value is None:
        if default is _MISSING:
            raise ConfigError("is required", key=key)
        return default
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"must be of type {kind.__name__}", key=key, value=value)
    return value

"""xl.cfg keys as xl 4.17 puts them into libxl's JSON: display, firmware, platform, actions, UUID (issue 19).

Read from ``tools/xl/xl_parse.c`` (``parse_config_data``, ``parse_top_level_vnc_options``,
``parse_top_level_sdl_options``) and ``tools/libs/light/libxl_types.idl`` at RELEASE-4.17.0, and checked against
Debian's real ``xl create -n`` (``tests/oracle/xl_dryrun.py``). Devices (``disk``, ``vif``) are
:mod:`xenabi.toolstack.xldevices`; the keys DomainConfig interprets itself (name, type, memory, vCPUs, limits, kernel,
the series' keys) are :mod:`xenabi.toolstack.config`'s.

:data:`XL_KEYS` is the table: each row is an xl.cfg key, where libxl keeps it (a path in the JSON; ``"type.hvm"`` is
one step) and how xl reads it. The kinds, as xl reads them (``xlu_cfg_get_*``):

- ``defbool``: a number (``strtol`` base 0, the whole text), 0 is ``"False"`` and anything else ``"True"``;
- ``long`` / ``memkb``: a number, written as is or times 1024 (MiB to KiB). libxl leaves out a plain integer field
  that is 0, so ``vncdisplay = 0`` is not written; a ``MemKB`` field it writes even when 0;
- ``string``: the text as written (a number's text too);
- ``enum``: one of the row's names (xl's spelling -> libxl's), or xl's own error message.

A number key whose value is not a number, and a single-value key given a list, is not an error in xl: it warns
(``FILE:LINE: warning: parameter `KEY' is not a valid number``) and goes on as if the key were absent. xenabi does
the same and collects the warning. An unknown enumeration name, action or malformed UUID is an error in xl (it
exits): here a :class:`~xenabi.errors.ConfigError` naming the key, with line and column. A key for another guest type
is ignored silently, as xl ignores it (HVM display keys on a PV guest; but ``vnc`` on a PV guest without ``vfb``
adds a framebuffer and a keyboard device, as xl does).

xl's own defaults are :func:`xl_defaults`: ``run_hotplug_scripts`` and ``claim_mode`` on (xl.c's defaults when
``/etc/xen/xl.conf`` does not change them), ``on_reboot = "restart"`` and ``on_soft_reset = "soft-reset"``, and the
empty objects libxl always writes (``sched_params``, ``arch_arm``, ``arch_x86``, HVM's ``vga``/``vnc``/``sdl``/
``spice``/``rdm``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from xenabi.abi.domctl import GuestType
from xenabi.errors import ConfigError
from xenabi.toolstack.libxljson import ACTIONS
from xenabi.toolstack.xlcfg import XlAtom, XlConfig, XlList, XlSetting, quote, strtol

HVM, PV, PVH = GuestType.HVM, GuestType.PV, GuestType.PVH
ALL_TYPES = frozenset(GuestType)
HVM_ONLY = frozenset({HVM})
Kind = Literal["defbool", "long", "memkb", "string", "enum"]
Path = tuple[str, ...]

UUID_FORM = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
NIL_UUID = "00000000-0000-0000-0000-000000000000"

ACTION_DEFAULTS = {"on_poweroff": "destroy", "on_reboot": "restart", "on_watchdog": "destroy",
                   "on_crash": "destroy", "on_soft_reset": "soft-reset"}  # fmt: skip
ACTION_INIT = "destroy"  # the IDL's init_val: libxl leaves an action out of the JSON when it is destroy

VIRIDIAN = ("base", "freq", "time_ref_count", "reference_tsc", "hcall_remote_tlb_flush", "apic_assist", "crash_ctl",
            "synic", "stimer", "hcall_ipi", "ex_processor_masks", "no_vp_limit", "cpu_hotplug")  # fmt: skip
"""libxl_viridian_enlightenment, by value (the bit in ``viridian_enable``/``viridian_disable``)."""
VIRIDIAN_WIDTH = 64  # LIBXL_BUILDINFO_HVM_VIRIDIAN_ENABLE_DISABLE_WIDTH: "all" sets every bit
BIOS = {"rombios": "rombios", "seabios": "seabios", "ovmf": "ovmf"}  # libxl_bios_type; "unknown" is the init value


@dataclass(frozen=True)
class XlKey:
    """One xl.cfg key: where libxl keeps it and how xl reads it."""

    key: str
    path: Path
    kind: Kind
    types: frozenset[GuestType] = ALL_TYPES
    choices: Mapping[str, str] | None = None  # enum: xl's name -> libxl's
    fold_case: bool = False  # enum names compared without case (libxl's *_from_string)
    error: str = ""  # enum: xl's message for another name ({value} is the text)
    omit: str | None = None  # enum: the libxl value left out of the JSON (the IDL's init_val)


def _hvm(*path: str) -> Path:
    return ("b_info", "type.hvm", *path)


XL_KEYS: tuple[XlKey, ...] = (
    # VNC and SDL (parse_top_level_vnc_options / parse_top_level_sdl_options; PV: see _pv_framebuffer)
    XlKey("vnc", _hvm("vnc", "enable"), "defbool", HVM_ONLY),
    XlKey("vnclisten", _hvm("vnc", "listen"), "string", HVM_ONLY),
    XlKey("vncpasswd", _hvm("vnc", "passwd"), "string", HVM_ONLY),
    XlKey("vncdisplay", _hvm("vnc", "display"), "long", HVM_ONLY),
    XlKey("vncunused", _hvm("vnc", "findunused"), "defbool", HVM_ONLY),
    XlKey("sdl", _hvm("sdl", "enable"), "defbool", HVM_ONLY),
    XlKey("opengl", _hvm("sdl", "opengl"), "defbool", HVM_ONLY),
    XlKey("display", _hvm("sdl", "display"), "string", HVM_ONLY),
    XlKey("xauthority", _hvm("sdl", "xauthority"), "string", HVM_ONLY),
    XlKey("keymap", _hvm("keymap"), "string", HVM_ONLY),
    XlKey("nographic", _hvm("nographic"), "defbool", HVM_ONLY),
    XlKey("spice", _hvm("spice", "enable"), "defbool", HVM_ONLY),
    XlKey("spiceport", _hvm("spice", "port"), "long", HVM_ONLY),
    XlKey("spicetls_port", _hvm("spice", "tls_port"), "long", HVM_ONLY),
    XlKey("spicehost", _hvm("spice", "host"), "string", HVM_ONLY),
    XlKey("spicedisable_ticketing", _hvm("spice", "disable_ticketing"), "defbool", HVM_ONLY),
    XlKey("spicepasswd", _hvm("spice", "passwd"), "string", HVM_ONLY),
    XlKey("spiceagent_mouse", _hvm("spice", "agent_mouse"), "defbool", HVM_ONLY),
    XlKey("spicevdagent", _hvm("spice", "vdagent"), "defbool", HVM_ONLY),
    XlKey("spice_clipboard_sharing", _hvm("spice", "clipboard_sharing"), "defbool", HVM_ONLY),
    XlKey("spiceusbredirection", _hvm("spice", "usbredirection"), "long", HVM_ONLY),
    XlKey("spice_image_compression", _hvm("spice", "image_compression"), "string", HVM_ONLY),
    XlKey("spice_streaming_video", _hvm("spice", "streaming_video"), "string", HVM_ONLY),
    # graphics card, firmware, boot, devices of the emulated platform
    XlKey("vga", _hvm("vga", "kind"), "enum", HVM_ONLY,
          {"stdvga": "std", "cirrus": "cirrus", "none": "none", "qxl": "qxl"}, error='Unknown vga "{value}" specified'),
    XlKey("boot", _hvm("boot"), "string", HVM_ONLY),
    XlKey("bios", _hvm("bios"), "enum", HVM_ONLY, {**BIOS, "unknown": "unknown"}, fold_case=True,
          error='invalid value "{value}" for "bios"', omit="unknown"),
    XlKey("firmware_override", _hvm("firmware"), "string", HVM_ONLY),
    XlKey("bios_path_override", _hvm("system_firmware"), "string", HVM_ONLY),
    XlKey("smbios_firmware", _hvm("smbios_firmware"), "string", HVM_ONLY),
    XlKey("acpi_firmware", _hvm("acpi_firmware"), "string", HVM_ONLY),
    XlKey("hdtype", _hvm("hdtype"), "enum", HVM_ONLY, {"ide": "ide", "ahci": "ahci"}, fold_case=True,
          error='invalid value "{value}" for "hdtype"', omit="ide"),
    XlKey("usb", _hvm("usb"), "defbool", HVM_ONLY),
    XlKey("usbversion", _hvm("usbversion"), "long", HVM_ONLY),
    XlKey("soundhw", _hvm("soundhw"), "string", HVM_ONLY),
    XlKey("vkb_device", _hvm("vkb_device"), "defbool", HVM_ONLY),
    XlKey("xen_platform_pci", _hvm("xen_platform_pci"), "defbool", HVM_ONLY),
    XlKey("pae", _hvm("pae"), "defbool", HVM_ONLY),
    XlKey("nx", _hvm("nx"), "defbool", HVM_ONLY),
    XlKey("hpet", _hvm("hpet"), "defbool", HVM_ONLY),
    XlKey("vpt_align", _hvm("vpt_align"), "defbool", HVM_ONLY),
    XlKey("acpi_s3", _hvm("acpi_s3"), "defbool", HVM_ONLY),
    XlKey("acpi_s4", _hvm("acpi_s4"), "defbool", HVM_ONLY),
    XlKey("acpi_laptop_slate", _hvm("acpi_laptop_slate"), "defbool", HVM_ONLY),
    XlKey("apic", ("b_info", "apic"), "defbool", HVM_ONLY),
    XlKey("vendor_device", _hvm("vendor_device"), "enum", HVM_ONLY, {"none": "none", "xenserver": "xenserver"},
          fold_case=True, error="xl: unknown vendor_device '{value}'", omit="none"),
    # every guest type
    XlKey("acpi", ("b_info", "acpi"), "defbool"),
    XlKey("videoram", ("b_info", "video_memkb"), "memkb"),
    XlKey("shadow_memory", ("b_info", "shadow_memkb"), "memkb"),
    XlKey("localtime", ("b_info", "localtime"), "defbool"),
    XlKey("rtc_timeoffset", ("b_info", "rtc_timeoffset"), "long"),
    XlKey("nomigrate", ("b_info", "disable_migrate"), "defbool"),
    XlKey("nestedhvm", ("b_info", "nested_hvm"), "defbool"),
    XlKey("dm_restrict", ("b_info", "dm_restrict"), "defbool"),
    XlKey("vpmu", ("b_info", "vpmu"), "defbool"),
    XlKey("hap", ("c_info", "hap"), "defbool"),
    XlKey("oos", ("c_info", "oos"), "defbool"),
    XlKey("driver_domain", ("c_info", "driver_domain"), "defbool"),
    XlKey("device_model_version", ("b_info", "device_model_version"), "enum", ALL_TYPES,
          {"qemu-xen-traditional": "qemu_xen_traditional", "qemu-xen": "qemu_xen"},
          error='Unknown device_model_version "{value}" specified'),
    XlKey("device_model_override", ("b_info", "device_model"), "string"),
    XlKey("pool", ("c_info", "pool_name"), "string"),
    # the actions (checked in this order: the first bad one is xl's error)
    *(XlKey(key, (key,), "enum", ALL_TYPES, ACTIONS, error=f'Unknown {key} action "{{value}}" specified',
            omit=ACTION_INIT) for key in ACTION_DEFAULTS),
)  # fmt: skip
BY_KEY = {row.key: row for row in XL_KEYS}
LATE_KEYS = ("device_model_version", "vga", "hdtype", "vendor_device")
"""Rows xl reads after the devices, in its order (so that of two errors, xenabi raises the one xl reports)."""
SPECIAL_KEYS = frozenset({"stdvga", "serial", "usbdevice", "viridian", "firmware", "uuid"})
"""Keys read by their own functions below (the rows cannot say what they do)."""
MAPPED_KEYS = frozenset(BY_KEY) | SPECIAL_KEYS


# --- reading an xl.cfg -------------------------------------------------------------------------------------------
@dataclass
class Reader:
    """One config's mapped keys, read into a libxl JSON fragment (``out``) with xl's warnings."""

    cfg: XlConfig
    guest_type: GuestType
    out: dict[str, Any]

    def warn(self, setting: XlSetting, problem: str) -> None:
        self.cfg.warnings.append(f"{self.cfg.source}:{setting.line}: warning: parameter `{setting.key}' {problem}")

    def atom(self, key: str) -> str | None:
        """``xlu_cfg_get_string``: the text, or None (absent, or a list: xl warns and treats it as absent)."""
        setting = self.cfg.settings.get(key)
        if setting is None:
            return None
        if isinstance(setting.value, XlList):
            self.warn(setting, "is a list but should be a single value")
            return None
        return setting.value.text

    def number(self, key: str) -> int | None:
        """``xlu_cfg_get_long``: the number, or None (absent, or not a number: xl warns, as for ``+=``)."""
        text = self.atom(key)
        if text is None:
            return None
        setting = self.cfg.settings[key]
        if setting.op == "+=":
            self.warn(setting, "can't use += with numbers")
            return None
        value = strtol(text)
        if value is None:
            self.warn(setting, "is not a valid number")
        return value

    def error(self, key: str, message: str, value: object) -> ConfigError:
        setting = self.cfg.settings[key]
        return ConfigError(message, key=key, value=value, line=setting.line, column=setting.value.column)

    def put(self, path: Path, value: Any) -> None:
        node = self.out
        for step in path[:-1]:
            node = node.setdefault(step, {})
        node[path[-1]] = value

    def read_row(self, row: XlKey) -> None:
        if self.guest_type not in row.types or row.key not in self.cfg.settings:
            return
        if row.kind in ("defbool", "long", "memkb"):
            number = self.number(row.key)
            if number is None:
                return
            if row.kind == "defbool":
                self.put(row.path, "True" if number else "False")
            elif row.kind == "memkb":
                self.put(row.path, number * 1024)
            elif number:  # libxl leaves a 0 integer out
                self.put(row.path, number)
            return
        text = self.atom(row.key)
        if text is None:
            return
        if row.kind == "string":
            self.put(row.path, text)
            return
        assert row.choices is not None
        names = {name.lower(): value for name, value in row.choices.items()} if row.fold_case else row.choices
        value = names.get(text.lower() if row.fold_case else text)
        if value is None:
            raise self.error(row.key, row.error.format(value=text), text)
        if value != row.omit:
            self.put(row.path, value)


def read(cfg: XlConfig, guest_type: GuestType,
         devices: Callable[[], dict[str, Any]] = dict) -> dict[str, Any]:  # fmt: skip
    """Every mapped key of ``cfg`` as xl 4.17 puts it into libxl's JSON (a fragment to lay over the rest), with xl's
    defaults, and the fields ``devices`` reads (the disks and NICs), at the point where xl reads them, so that of
    two errors the one xl reports first is raised; xl's warnings are added to ``cfg.warnings``."""
    reader = Reader(cfg, guest_type, xl_defaults(guest_type))
    for key, default in ACTION_DEFAULTS.items():  # xl reads the actions before the platform keys
        setting = cfg.settings.get(key)
        reader.read_row(BY_KEY[key])  # (a list: a warning, and the default)
        absent = setting is None or not isinstance(setting.value, XlAtom)
        if absent and ACTIONS[default] != ACTION_INIT:
            reader.put((key,), ACTIONS[default])
    for row in XL_KEYS:
        if row.key not in ACTION_DEFAULTS and row.key not in LATE_KEYS:
            reader.read_row(row)
    if guest_type is HVM:
        _viridian(reader)
        _hvm_firmware(reader)
    reader.out |= devices()
    if guest_type is PV:
        _pv_framebuffer(reader)
    for key in LATE_KEYS[:3]:
        reader.read_row(BY_KEY[key])
    if guest_type is HVM:
        _vga(reader)
        _string_or_list(reader, "serial", "serial_list")
        _string_or_list(reader, "usbdevice", "usbdevice_list")
        _display_clash(reader)
    reader.read_row(BY_KEY[LATE_KEYS[3]])
    return reader.out


def xl_defaults(guest_type: GuestType) -> dict[str, Any]:
    """What xl writes for every config (see the module docstring); the actions are added by :func:`read`."""
    kind: dict[str, Any] = {"vga": {}, "vnc": {}, "sdl": {}, "spice": {}, "rdm": {}} if guest_type is HVM else {}
    return {
        "c_info": {"run_hotplug_scripts": "True"},
        "b_info": {"sched_params": {}, "claim_mode": "True", f"type.{guest_type.value}": kind, "arch_arm": {},
                   "arch_x86": {}},
    }  # fmt: skip


def _vga(reader: Reader) -> None:
    """``vga`` wins; otherwise ``stdvga`` (a number): non-zero is the standard VGA, 0 Cirrus."""
    if "vga" in reader.cfg.settings:
        return
    number = reader.number("stdvga")
    if number is not None:
        reader.put(_hvm("vga", "kind"), "std" if number else "cirrus")


def _string_or_list(reader: Reader, key: str, list_field: str) -> None:
    """``serial`` and ``usbdevice``: a list of strings goes to the ``*_list`` field, a string to the field itself. A
    list item that is itself a list ends the list there (xl copies the strings before it)."""
    setting = reader.cfg.settings.get(key)
    if setting is None:
        return
    if isinstance(setting.value, XlAtom):
        reader.put(_hvm(key), setting.value.text)
        return
    items = []
    for item in setting.value.items:
        if not isinstance(item, XlAtom):
            break
        items.append(item.text)
    if items:
        reader.put(_hvm(list_field), items)


def _viridian(reader: Reader) -> None:
    """A number is the ``viridian`` defbool (a text that is not a number is ignored without a warning); a list names
    enlightenments: ``defaults`` turns the defbool on, ``all`` enables every bit, ``name`` enables and ``!name``
    disables one (the later entry wins for a bit named twice). Another name is xl's error."""
    setting = reader.cfg.settings.get("viridian")
    if setting is None:
        return
    if isinstance(setting.value, XlAtom):
        number = strtol(setting.value.text) if setting.op == "=" else None
        if number is not None:
            reader.put(_hvm("viridian"), "True" if number else "False")
        return
    enable: set[int] = set()
    disable: set[int] = set()
    listed = bool(setting.value.items)
    for item in setting.value.items:
        text = item.text if isinstance(item, XlAtom) else ""
        if text == "all":
            enable |= set(range(VIRIDIAN_WIDTH))
        elif text == "defaults":
            reader.put(_hvm("viridian"), "True")
        else:
            name, on = (text[1:], False) if text.startswith("!") else (text, True)
            if name not in VIRIDIAN:
                raise reader.error("viridian", f"xl: unknown viridian enlightenment '{name}'", text)
            bit = VIRIDIAN.index(name)
            (enable if on else disable).add(bit)
            (disable if on else enable).discard(bit)
    if listed and enable:
        reader.put(_hvm("viridian_enable"), sorted(enable))
    if listed and disable:
        reader.put(_hvm("viridian_disable"), sorted(disable))


def _hvm_firmware(reader: Reader) -> None:
    """``firmware`` on HVM: a BIOS name (any case) sets ``bios``; a prefix of "uefi" (even "") means OVMF; a prefix
    of "bios" changes nothing (libxl picks the BIOS for the device model); anything else is a firmware path."""
    text = reader.atom("firmware")
    if text is None:
        return
    bios = BIOS.get(text.lower()) if text.lower() != "unknown" else "unknown"
    if bios is not None:
        if bios == "unknown":
            reader.out["b_info"]["type.hvm"].pop("bios", None)
        else:
            reader.put(_hvm("bios"), bios)
    elif "uefi".startswith(text):
        reader.put(_hvm("bios"), "ovmf")
    elif not "bios".startswith(text):
        reader.put(_hvm("firmware"), text)


def _display_clash(reader: Reader) -> None:
    vnc = reader.out["b_info"]["type.hvm"]["vnc"]
    if ":" in vnc.get("listen", "") and vnc.get("display"):
        raise reader.error("vncdisplay", "ERROR: Display specified both in vnclisten and vncdisplay!",
                           vnc["display"])  # fmt: skip


def _pv_framebuffer(reader: Reader) -> None:
    """A PV guest with ``vnc`` set to a non-zero number (and no ``vfb`` list) gets one framebuffer with the top-level
    VNC, SDL and keymap settings, and one keyboard (``vfbs[0]``, ``vkbs[0]``)."""
    vfb = reader.cfg.settings.get("vfb")
    if vfb is not None and not (isinstance(vfb.value, XlList) and not vfb.value.items):
        return
    number = reader.number("vnc")
    if not number:
        return
    framebuffer = Reader(reader.cfg, HVM, {})
    for row in XL_KEYS:
        if row.path[:3] in (_hvm("vnc"), _hvm("sdl")):
            framebuffer.read_row(row)
    device: dict[str, Any] = {"devid": 0, "vnc": {}, "sdl": {}}
    device |= framebuffer.out.get("b_info", {}).get("type.hvm", {})
    keymap = reader.atom("keymap")
    if keymap is not None:
        device["keymap"] = keymap
    reader.out["vfbs"] = [device]
    reader.out["vkbs"] = [{"devid": 0}]


def parse_uuid(text: str, key: str, line: int | None = None, column: int | None = None) -> str:
    """libuuid's ``uuid_parse``: 36 characters, 8-4-4-4-12 hexadecimal digits, any case; written in lower case."""
    if not isinstance(text, str) or not UUID_FORM.fullmatch(text):
        raise ConfigError(f"Failed to parse UUID: {text}", key=key, value=text, line=line, column=column)
    return text.lower()


# --- back to xl.cfg ------------------------------------------------------------------------------------------------
def to_xl(libxl: dict[str, Any], guest_type: GuestType) -> list[str]:
    """xl.cfg lines that read back (:func:`read`) as the mapped fields of ``libxl``; fields no key maps to are
    listed by :func:`unmapped`."""
    lines = []
    for row in XL_KEYS:
        if guest_type not in row.types:
            continue
        value = _at(libxl, row.path)
        if row.key in ACTION_DEFAULTS:  # absent is libxl's destroy; write it where xl's default differs
            value = value or ACTION_INIT
            if value == ACTIONS[ACTION_DEFAULTS[row.key]]:
                continue
        if value is None:
            continue
        lines.append(f"{row.key} = {_xl_value(row, value)}")
    hvm = libxl.get("b_info", {}).get("type.hvm", {}) if guest_type is HVM else {}
    for key, list_field in (("serial", "serial_list"), ("usbdevice", "usbdevice_list")):
        if key in hvm:
            lines.append(f"{key} = {quote(hvm[key])}")
        elif list_field in hvm:
            lines.append(f"{key} = [ {', '.join(quote(item) for item in hvm[list_field])} ]")
    entries = ["defaults"] if hvm.get("viridian") == "True" else []
    enable, disable = set(hvm.get("viridian_enable", [])), set(hvm.get("viridian_disable", []))
    named = set(range(len(VIRIDIAN)))
    if enable >= set(range(len(VIRIDIAN), VIRIDIAN_WIDTH)):  # bits no name reaches: only "all" sets them
        # "all" sets every enable bit and leaves the disable bits; "!x" after it clears x again
        missing = named - enable
        entries += ["!" + VIRIDIAN[bit] for bit in sorted(disable & named - missing)]
        entries += ["all", *("!" + VIRIDIAN[bit] for bit in sorted(missing))]
    else:
        entries += [VIRIDIAN[bit] for bit in sorted(enable & named)]
        entries += ["!" + VIRIDIAN[bit] for bit in sorted(disable & named)]
    if entries:
        lines.append(f"viridian = [ {', '.join(quote(e) for e in entries)} ]")
    elif hvm.get("viridian") == "False":
        lines.append("viridian = 0")
    if guest_type is PV and libxl.get("vfbs"):
        vfb = libxl["vfbs"][0]
        for row in XL_KEYS:
            if row.path[:3] in (_hvm("vnc"), _hvm("sdl")) and _at(vfb, row.path[2:]) is not None:
                lines.append(f"{row.key} = {_xl_value(row, _at(vfb, row.path[2:]))}")
        if "keymap" in vfb:
            lines.append(f"keymap = {quote(vfb['keymap'])}")
    return lines


def _xl_value(row: XlKey, value: Any) -> str:
    if row.kind == "defbool":
        return "1" if value == "True" else "0"
    if row.kind == "memkb":
        return str(int(value) // 1024)
    if row.kind == "long":
        return str(value)
    if row.kind == "enum":
        assert row.choices is not None
        names = {libxl: xl for xl, libxl in row.choices.items()}
        return quote(names.get(value, str(value)))
    return quote(str(value))


def _at(doc: Any, path: Path) -> Any:
    for step in path:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(step)
    return doc

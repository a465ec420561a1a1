"""xl.cfg's devices, ``disk`` and ``vif``, as xl 4.17 puts them into libxl's JSON (``disks``, ``nics``; issue 19).

Read from ``docs/man/xl-disk-configuration.5.pod``, ``docs/man/xl-network-configuration.5.pod.in``,
``tools/libs/util/libxlu_disk_l.l``, ``tools/libs/util/libxlu_vif.c`` and ``tools/xl/xl_parse.c``
(``parse_nic_config``) at RELEASE-4.17.0, and checked against Debian's real ``xl create -n``
(``tests/oracle/xl_dryrun.py``). Each entry becomes one ``libxl_device_disk`` / ``libxl_device_nic`` object with
libxl's field names and value types, in the IDL's order and without the fields still at their defaults, exactly as
the dry run prints it.

**Errors.** An entry that xl cannot read is a :class:`~xenabi.errors.ConfigError` naming the key and entry
(``vif[1]``), the field (``mac``), xl's own message, and the line and column of the entry. xl itself stops at some of
these (a bad ``rate``, ``mtu`` or ``devid``; every disk error) and only warns at others, building the NIC anyway
from whatever it had read: an unknown vif option (``unrecognized argument `x=y'``), a ``type`` other than ``vif`` or
``ioemu``, and a MAC that is not six octets (xl keeps the octets it had read and, for a MAC of five, takes the sixth
from the next option's first letter). xenabi refuses those too, with xl's message: the NIC xl would build is not the
one the operator wrote, and a refused config creates nothing. The MAC is six octets of one or two hexadecimal digits
(xl also reads ``0x10`` and ``001``; so does xenabi, each at most 255) separated by single characters, with nothing
after the sixth.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from xenabi.abi.domctl import GuestType
from xenabi.errors import ConfigError
from xenabi.toolstack.xlcfg import XlAtom, XlConfig, XlList, quote

DEVICE_KEYS = frozenset({"disk", "vif"})

# --- vif (xl-network-configuration(5); parse_nic_config) ----------------------------------------------------------
NIC_ORDER = ("backend_domid", "backend_domname", "devid", "mtu", "model", "mac", "ip", "bridge", "ifname", "script",
             "nictype", "rate_bytes_per_interval", "rate_interval_usecs", "gatewaydev", "coloft_forwarddev",
             *(f"colo_sock_{name}_{part}" for name in ("mirror", "compare_pri_in", "compare_sec_in",
                                                        "compare_notify", "redirector0", "redirector1", "redirector2")
               for part in ("id", "ip", "port")),
             "colo_filter_mirror_queue", "colo_filter_mirror_outdev",
             *(f"colo_filter_redirector{n}_{part}" for n in (0, 1) for part in ("queue", "indev", "outdev")),
             "colo_compare_pri_in", "colo_compare_sec_in", "colo_compare_out", "colo_compare_notify_dev",
             *(f"colo_sock_sec_redirector{n}_{part}" for n in (0, 1) for part in ("id", "ip", "port")),
             *(f"colo_filter_sec_redirector{n}_{part}" for n in (0, 1) for part in ("queue", "indev", "outdev")),
             "colo_filter_sec_rewriter0_queue", "colo_checkpoint_host", "colo_checkpoint_port",
             "trusted")  # fmt: skip
"""libxl_device_nic's fields, in the IDL's order (the order libxl writes them)."""
NIC_STRINGS = {"bridge": "bridge", "gatewaydev": "gatewaydev", "ip": "ip", "script": "script",
               "backend": "backend_domname", "vifname": "ifname", "model": "model", "forwarddev": "coloft_forwarddev",
               **{name: name for name in NIC_ORDER if name.startswith("colo_")}}  # fmt: skip
"""vif options that are strings: xl's option -> libxl's field."""
NIC_TYPES = {"vif": "vif", "ioemu": "vif_ioemu"}
MAC = re.compile(r"(?:(?:0[xX])?[0-9a-fA-F]{1,3}[^0-9a-fA-F]){5}(?:0[xX])?[0-9a-fA-F]{1,3}")
RATE_BYTES = re.compile(r"[0-9]+[GMK]?[Bb]/s")
RATE_INTERVAL = re.compile(r"[0-9]+[mu]?s?")
DEFAULT_RATE_INTERVAL_US = 50_000
UINT32_MAX = 2**32 - 1
ULONG_MAX = 2**64 - 1


class EntryError(ValueError):
    """An entry xl cannot read: xl's message and the option it was reading."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


def parse_vif(spec: str, devid: int, warn: Callable[[str], None] = lambda _m: None) -> dict[str, Any]:
    """One ``vif`` entry as ``libxl_device_nic`` JSON; ``devid`` is its place in the list (xl's default)."""
    nic: dict[str, Any] = {"devid": devid}
    for piece in filter(None, spec.split(",")):  # strtok: empty pieces are never seen
        token = piece.lstrip(" ")  # xl skips spaces only, and keeps trailing ones in the value
        key, equals, value = token.partition("=")
        if token in ("trusted", "untrusted"):
            nic["trusted"] = "True" if token == "trusted" else "False"
        elif not equals:
            raise EntryError(f"unrecognized argument `{token}'", token)
        elif key == "type":
            if value not in NIC_TYPES:
                raise EntryError("Invalid parameter `type'.", "type")
            nic["nictype"] = NIC_TYPES[value]
        elif key == "mac":
            nic["mac"] = _mac(value)
        elif key == "netdev":
            warn("the netdev parameter is deprecated, please use gatewaydev instead")
            nic["gatewaydev"] = value
        elif key in NIC_STRINGS:
            nic[NIC_STRINGS[key]] = value
        elif key == "rate":
            nic.update(_rate(value))
        elif key == "accel":
            warn("the accel parameter for vifs is currently not supported")
        elif key in ("devid", "mtu"):
            nic[key] = _c_int(_parse_ulong(value, key))
        else:
            raise EntryError(f"unrecognized argument `{token}'", key)
    return _nic_json(nic)


def _nic_json(nic: dict[str, Any]) -> dict[str, Any]:
    """Fields at their defaults left out (devid -1, mtu 0, the all-zero MAC, a zero rate), in libxl's order."""
    defaults = {"devid": -1, "mtu": 0, "mac": "00:00:00:00:00:00", "rate_bytes_per_interval": 0,
                "rate_interval_usecs": 0}  # fmt: skip
    return {key: nic[key] for key in NIC_ORDER if key in nic and nic[key] != defaults.get(key, object())}


def _mac(text: str) -> str:
    if not MAC.fullmatch(text):
        raise EntryError("Invalid parameter `mac'.", "mac")
    octets = [int(part, 16) for part in re.findall(r"(?:0[xX])?[0-9a-fA-F]+", text)]
    if len(octets) != 6 or any(octet > 255 for octet in octets):
        raise EntryError("Invalid parameter `mac'.", "mac")
    return ":".join(f"{octet:02x}" for octet in octets)


def _parse_ulong(text: str, field: str) -> int:
    """xl's ``parse_ulong``: C ``strtoul`` base 10 (leading spaces and a sign, digits, anything after ignored),
    refused when no digit was read or the value is ULONG_MAX."""
    match = re.match(r"[ \t\n\v\f\r]*([+-]?)([0-9]+)", text)
    if match is None:
        raise EntryError(f'xl: failed to convert "{text}" to number', field)
    value = min(int(match.group(2)), ULONG_MAX)
    if match.group(1) == "-":
        value = (-value) % (ULONG_MAX + 1)
    if value == ULONG_MAX:
        raise EntryError(f'xl: failed to convert "{text}" to number', field)
    return value


def _c_int(value: int) -> int:
    """An unsigned long stored into a C int: its low 32 bits, signed."""
    value &= UINT32_MAX
    return value - 2**32 if value >= 2**31 else value


def _strtoull_prefix(text: str) -> tuple[int, str]:
    """C ``strtoull(text, &end, 0)`` on text that starts with digits (the regexes guarantee it): the value and the
    rest. Base 0: a leading 0 is octal, so ``08`` reads as 0."""
    if text.startswith("0"):
        digits = re.match(r"0[0-7]*", text)
        assert digits is not None
        return int(digits.group(), 8), text[digits.end() :]
    digits = re.match(r"[0-9]+", text)
    assert digits is not None
    return int(digits.group()), text[digits.end() :]


def _rate(text: str) -> dict[str, int]:
    """``rate=BYTES[@INTERVAL]`` (libxlu_vif.c): bytes (or bits, ``b``) per second with a K/M/G multiplier, and the
    replenishment interval (default 50 ms); libxl keeps bytes per interval and the interval in microseconds."""
    bytes_part, at, interval_part = text.partition("@")
    if not bytes_part:
        raise EntryError(f"config parsing error in vif: no rate specified in `{text}'", "rate")
    if not RATE_BYTES.fullmatch(bytes_part):
        raise EntryError(f"config parsing error in vif: invalid rate in `{bytes_part}'", "rate")
    rate, unit = _strtoull_prefix(bytes_part)
    if rate == 0 or rate > UINT32_MAX:
        raise EntryError(f"config parsing error in vif: rate overflow in `{bytes_part}'", "rate")
    rate *= {"G": 10**9, "M": 10**6, "K": 10**3}.get(unit[0], 1)
    if unit[0] == "b" or unit[1] == "b":
        rate //= 8
    interval = DEFAULT_RATE_INTERVAL_US
    if at:
        if not RATE_INTERVAL.fullmatch(interval_part):
            raise EntryError(f"config parsing error in vif: invalid replenishment interval in `{interval_part}'",
                             "rate")  # fmt: skip
        interval, unit = _strtoull_prefix(interval_part)
        if interval == 0 or interval > UINT32_MAX:
            raise EntryError(f"config parsing error in vif: replenishment interval overflow in `{interval_part}'",
                             "rate")  # fmt: skip
        interval *= 10**6 if unit in ("s", "") else 1000 if unit.startswith("m") else 1
        if interval > UINT32_MAX:
            raise EntryError(f"config parsing error in vif: replenishment interval overflow in `{interval_part}'",
                             "rate")  # fmt: skip
    if rate > ULONG_MAX // interval:
        raise EntryError(f"config parsing error in vif: rate overflow in `{text}'", "rate")
    return {"rate_bytes_per_interval": rate * interval // 10**6, "rate_interval_usecs": interval}


def vif_spec(nic: dict[str, Any], index: int) -> str:
    """The ``vif`` entry that reads back as ``nic`` (the inverse of :func:`parse_vif`)."""
    names = {field: option for option, field in NIC_STRINGS.items()}
    parts = []
    for key in NIC_ORDER:
        if key not in nic:
            continue
        value = nic[key]
        if key == "devid":
            if value != index:
                parts.append(f"devid={value & ULONG_MAX}")
        elif key == "mtu":
            parts.append(f"mtu={value & ULONG_MAX}")
        elif key == "mac":
            parts.append(f"mac={value}")
        elif key == "nictype":
            parts.append("type=" + {v: k for k, v in NIC_TYPES.items()}.get(value, str(value)))
        elif key == "rate_bytes_per_interval" or key == "rate_interval_usecs":
            continue
        elif key == "trusted":
            parts.append("trusted" if value == "True" else "untrusted")
        elif key in names:
            parts.append(f"{names[key]}={value}")
    if "rate_interval_usecs" in nic:
        interval = nic["rate_interval_usecs"]
        per_second = -(-nic.get("rate_bytes_per_interval", 0) * 10**6 // interval)
        parts.append(f"rate={max(per_second, 1)}B/s@{interval}us")
    return ",".join(parts)


# --- reading a config -------------------------------------------------------------------------------------------------
def read(cfg: XlConfig, guest_type: GuestType) -> dict[str, Any]:
    """``disks`` and ``nics`` of ``cfg`` as libxl JSON (absent when the config names none); xl's warnings are added
    to ``cfg.warnings``."""
    out: dict[str, Any] = {}
    disks = _entries(cfg, "disk")
    if disks:
        out["disks"] = [_entry(cfg, "disk", index, item, lambda spec, _i: parse_disk(spec))
                        for index, item in enumerate(disks)]  # fmt: skip
    nics = _entries(cfg, "vif")
    if nics:
        out["nics"] = [_entry(cfg, "vif", index, item, lambda spec, i: parse_vif(spec, i, cfg.warnings.append))
                       for index, item in enumerate(nics)]  # fmt: skip
    return out


def _entries(cfg: XlConfig, key: str) -> list[XlAtom]:
    setting = cfg.settings.get(key)
    if setting is None:
        return []
    if not isinstance(setting.value, XlList):
        cfg.warnings.append(f"{cfg.source}:{setting.line}: warning: parameter `{key}' is a single value but should "
                            "be a list")  # fmt: skip
        return []
    for index, item in enumerate(setting.value.items):
        if not isinstance(item, XlAtom):
            raise ConfigError("an entry must be a string, not a list", key=f"{key}[{index}]", value=item.plain(),
                              line=item.line, column=item.column)  # fmt: skip
    return [item for item in setting.value.items if isinstance(item, XlAtom)]


def _entry(cfg: XlConfig, key: str, index: int, item: XlAtom,
           parse: Callable[[str, int], dict[str, Any]]) -> dict[str, Any]:  # fmt: skip
    try:
        return parse(item.text, index)
    except EntryError as exc:
        raise ConfigError(exc.message, key=f"{key}[{index}]", value=item.text, line=item.line, column=item.column,
                          field=exc.field or None) from None  # fmt: skip


def to_xl(libxl: dict[str, Any]) -> list[str]:
    """``disk`` and ``vif`` lines that read back as ``libxl``'s disks and NICs."""
    lines = []
    if libxl.get("disks"):
        lines.append("disk = [ " + ", ".join(quote(disk_spec(d)) for d in libxl["disks"]) + " ]")
    if libxl.get("nics"):
        lines.append("vif = [ " + ", ".join(quote(vif_spec(n, i)) for i, n in enumerate(libxl["nics"])) + " ]")
    return lines


# --- disk (xl-disk-configuration(5); the flex scanner libxlu_disk_l.l) ------------------------------------------------
DISK_ORDER = ("backend_domid", "backend_domname", "pdev_path", "vdev", "backend", "format", "script", "removable",
              "readwrite", "is_cdrom", "direct_io_safe", "discard_enable", "specification", "transport", "irq", "base",
              "colo_enable", "colo_restore_enable", "colo_host", "colo_port", "colo_export", "active_disk",
              "hidden_disk", "trusted")  # fmt: skip
"""libxl_device_disk's fields, in the IDL's order."""
DISK_FORMATS = {"": "raw", "raw": "raw", "qcow": "qcow", "qcow2": "qcow2", "vhd": "vhd", "empty": "empty",
                "qed": "qed"}  # fmt: skip
DISK_BACKENDS = ("phy", "tap", "qdisk", "standalone")
DISK_SPECIFICATIONS = ("xen", "virtio")
DISK_STRINGS = {"backend": "backend_domname", "vdev": "vdev", "script": "script", "colo-host": "colo_host",
                "colo-export": "colo_export", "active-disk": "active_disk", "hidden-disk": "hidden_disk",
                "target": "pdev_path"}  # fmt: skip
"""``key=`` options that are strings: xl's name -> libxl's field (the name is also the one "respecified" names)."""


class _DiskSpec:
    """One disk entry being scanned: libxlu's DiskParseContext."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.disk: dict[str, Any] = {"readwrite": 1}
        self.deprecated_prefix = False
        self.access_set = False

    def fail(self, message: str, field: str, near: str | None = None) -> EntryError:
        where = "" if near is None else f": near `{near}'"
        return EntryError(f"config parsing error in disk specification: {message}{where} in `{self.spec}'", field)

    def save(self, name: str, value: str) -> None:
        """libxlu's ``savestring``: a string may be given once (an earlier empty one may be replaced)."""
        field = DISK_STRINGS[name]
        if self.disk.get(field):
            raise self.fail(f"{name} respecified", name, value)
        self.disk[field] = value

    def set_enum(self, field: str, value: str, near: str) -> None:
        """libxlu's ``DSET``: an enumeration may be set again only to the value it has."""
        if self.disk.get(field, value) != value:
            raise self.fail(f"{field} respecified", field, near)
        self.disk[field] = value

    def set_format(self, text: str) -> None:
        if text not in DISK_FORMATS:
            raise self.fail("unknown value for format", "format", text)
        self.set_enum("format", DISK_FORMATS[text], text)

    def set_access(self, text: str) -> None:
        if text in ("r", "ro"):
            self.disk["readwrite"] = 0
        elif text in ("rw", "w", ""):
            self.disk["readwrite"] = 1
        else:
            raise self.fail("unknown value for access", "access", text)

    def vdev_and_devtype(self, text: str) -> bool:
        """``VDEV:cdrom`` / ``VDEV:disk`` (split at the last colon); False when there is no colon."""
        vdev, colon, devtype = text.rpartition(":")
        if not colon:
            return False
        self.save("vdev", vdev)
        if devtype not in ("cdrom", "disk"):
            raise self.fail("unknown deprecated type", "vdev", devtype)
        self.disk["is_cdrom"] = 1 if devtype == "cdrom" else 0
        return True

    def positional(self, text: str) -> None:
        """Target, then format (unless a deprecated prefix or format= came first), vdev, access; no more."""
        if "pdev_path" not in self.disk:
            self.save("target", text)
        elif not self.deprecated_prefix and "format" not in self.disk:
            if not self.disk["pdev_path"] and self.vdev_and_devtype(text):
                self.disk["format"] = "empty"  # the old empty CD-ROM form: ",hdc:cdrom,r"
            else:
                self.set_format(text)
        elif "vdev" not in self.disk:
            if not self.vdev_and_devtype(text):
                self.save("vdev", text)
        elif not self.access_set:
            self.access_set = True
            self.set_access(text)
        else:
            raise self.fail("too many positional parameters", "", text)


def _equals(text: str) -> str:
    return text.split("=", 1)[1]


def _strip(text: str, delim: str = ",") -> str:
    return text[:-1] if text.endswith(delim) else text


DiskAction = Callable[[_DiskSpec, str], None]


def _flag(field: str, value: Any) -> DiskAction:
    def action(d: _DiskSpec, _text: str) -> None:
        d.disk[field] = value

    return action


def _string_option(name: str) -> DiskAction:
    return lambda d, text: d.save(name, _equals(_strip(text)))


def _enum_option(field: str, names: tuple[str, ...], option: str) -> DiskAction:
    def action(d: _DiskSpec, text: str) -> None:
        value = _equals(_strip(text))
        if value not in names:
            raise d.fail(f"unknown value for {option}", option, value)
        d.set_enum(field, value, value)

    return action


def _devtype(d: _DiskSpec, text: str) -> None:
    raise d.fail("unknown value for type", "devtype", text)


def _colo_port(d: _DiskSpec, text: str) -> None:
    value = _equals(_strip(text))
    match = re.match(r"[ \t\n\v\f\r]*[+-]?[0-9]+", value)  # atoi
    port = _c_int(int(match.group().strip())) if match else 0
    if not port:
        raise d.fail("unknown value for colo_port", "colo-port", value)
    d.disk["colo_port"] = port


def _unknown_parameter(d: _DiskSpec, text: str) -> None:
    raise d.fail("unknown parameter", text.split("=", 1)[0], text)


def _format_prefix(d: _DiskSpec, text: str) -> None:
    d.deprecated_prefix = True
    d.set_format(_strip(text, ":"))


def _script_prefix(d: _DiskSpec, text: str) -> None:
    d.deprecated_prefix = True
    d.save("script", "block-" + _strip(text, ":"))


def _ignored_prefix(d: _DiskSpec, _text: str) -> None:
    d.deprecated_prefix = True


def _unknown_prefix(d: _DiskSpec, text: str) -> None:
    raise d.fail("unknown deprecated disk prefix", "target", text)


def _bad_syntax(d: _DiskSpec, rest: str) -> None:
    raise d.fail("bad disk syntax", "", rest)


REST = r"[^\n]*"  # flex's ".*"
DISK_RULES: tuple[tuple[str, str | None, DiskAction | None], ...] = (
    (r"[ \t\n]+", r"(?:[^ \t\n][^\n]*)?", None),  # whitespace before a parameter: skipped
    (r"format=[^,]*,?", None, lambda d, text: d.set_format(_equals(_strip(text)))),
    (r"cdrom,?", None, _flag("is_cdrom", 1)),
    (r"devtype=cdrom,?", None, _flag("is_cdrom", 1)),
    (r"devtype=disk,?", None, _flag("is_cdrom", 0)),
    (r"devtype=[^,]*,?", None, _devtype),
    (r"access=[^,]*,?", None, lambda d, text: d.set_access(_equals(_strip(text)))),
    (r"backend=[^,]*,?", None, _string_option("backend")),
    (r"backendtype=[^,]*,?", None, _enum_option("backend", DISK_BACKENDS, "backendtype")),
    (r"specification=[^,]*,?", None, _enum_option("specification", DISK_SPECIFICATIONS, "specification")),
    (r"vdev=[^,]*,?", None, _string_option("vdev")),
    (r"script=[^,]*,?", None, _string_option("script")),
    (r"direct-io-safe,?", None, _flag("direct_io_safe", True)),
    (r"discard,?", None, _flag("discard_enable", "True")),
    (r"no-discard,?", None, _flag("discard_enable", "False")),
    (r"colo,?", None, _flag("colo_enable", "True")),
    (r"no-colo,?", None, _flag("colo_enable", "False")),
    (r"colo-host=[^,]*,?", None, _string_option("colo-host")),
    (r"colo-port=[^,]*,?", None, _colo_port),
    (r"colo-export=[^,]*,?", None, _string_option("colo-export")),
    (r"active-disk=[^,]*,?", None, _string_option("active-disk")),
    (r"hidden-disk=[^,]*,?", None, _string_option("hidden-disk")),
    # (trusted / untrusted are in the scanner's source since 54d8f27d04 but not in the generated scanner 4.17 builds)
    (r"target=" + REST, None, _string_option("target")),
    (r"[a-z][-a-z0-9]*=[^,],?", None, _unknown_parameter),
    (r"(?:raw|qcow2?|vhd):", REST, _format_prefix),
    (r"(?:iscsi|e?nbd|drbd):", REST, _script_prefix),
    (r"(?:tapdisk|tap2?|aio|ioemu|file|phy):", REST, _ignored_prefix),
    (r"[a-z][a-z0-9]*:", r"(?:[^a-z0-9\n][^\n]*)?", _unknown_prefix),
    (r"[^=,]*,|[^=,]+,?", None, lambda d, text: d.positional(_strip(text))),
)  # fmt: skip
"""The scanner's rules in its order: (token, trailing context, action). As in flex, the longest match wins, trailing
context counted; the earlier rule wins a tie."""
_COMPILED = tuple((re.compile(token), re.compile(context) if context else None, action)
                  for token, context, action in DISK_RULES)  # fmt: skip


def parse_disk(spec: str) -> dict[str, Any]:
    """One ``disk`` entry as ``libxl_device_disk`` JSON (see the module docstring)."""
    d = _DiskSpec(spec)
    pos = 0
    while pos < len(spec):
        best: tuple[int, int, str, DiskAction | None] | None = None
        for token, context, action in _COMPILED:
            match = token.match(spec, pos)
            if match is None:
                continue
            length = match.end() - pos
            if context is not None:
                after = context.match(spec, match.end())
                length += after.end() - match.end() if after else 0
            if length and (best is None or length > best[0]):
                best = (length, match.end(), match.group(), action)
        if best is None:  # flex's "." then <LEXERR>.*: a character no rule takes
            _bad_syntax(d, re.match(REST, spec[pos:]).group() or spec[pos])  # type: ignore[union-attr]
            break
        _length, pos, text, action = best
        if action is not None:
            action(d, text)
    disk = d.disk
    disk.setdefault("format", "raw")
    if disk.get("is_cdrom"):
        disk["removable"], disk["readwrite"] = 1, 0
        if not disk.get("pdev_path"):
            disk["format"] = "empty"
    if "vdev" not in disk:
        raise d.fail("no vdev specified", "vdev")
    if "pdev_path" not in disk and not disk.get("removable"):
        raise d.fail("no target specified (and device not removable)", "target")
    return {key: disk[key] for key in DISK_ORDER if key in disk and disk[key] not in (0, False)}


def disk_spec(disk: dict[str, Any]) -> str:
    """The ``disk`` entry that reads back as ``disk`` (the inverse of :func:`parse_disk`), in key=value form with
    ``target=`` last (it takes the rest of the entry)."""
    parts = [f"vdev={disk.get('vdev', '')}"]
    if disk.get("format", "raw") != "empty" or "pdev_path" in disk:
        parts.append(f"format={disk.get('format', 'raw')}")
    parts.append("access=" + ("rw" if disk.get("readwrite") else "ro"))
    if disk.get("is_cdrom"):
        parts.append("devtype=cdrom")
    for key, option in (("backend", "backendtype"), ("specification", "specification")):
        if key in disk:
            parts.append(f"{option}={disk[key]}")
    for option, field in DISK_STRINGS.items():
        if field in disk and option not in ("vdev", "target"):
            parts.append(f"{option}={disk[field]}")
    if disk.get("direct_io_safe"):
        parts.append("direct-io-safe")
    for field, on, off in (("discard_enable", "discard", "no-discard"), ("colo_enable", "colo", "no-colo")):
        if field in disk:
            parts.append(on if disk[field] == "True" else off)
    if "colo_port" in disk:
        parts.append(f"colo-port={disk['colo_port']}")
    if "pdev_path" in disk:
        parts.append(f"target={disk['pdev_path']}")
    return ",".join(parts)

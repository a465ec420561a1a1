"""Generated xl.cfg files for the libxl JSON tests of issue 19, and the comparison with real xl's JSON.

:func:`config` writes configs of every guest type with the keys issue 19 maps (disks in all the scanner's forms,
NICs, the HVM display, firmware and platform keys, actions, UUIDs), some broken on purpose; :func:`compare` says
why xenabi and a real ``xl create -n`` (``tests/oracle/xl_dryrun.py``) disagree about one, or None:

- when xl accepts it, every leaf of xl's JSON must be in xenabi's with the same value (a UUID xl generated because
  the config had none excepted: xenabi gives one at creation). xenabi may add only what libxl fills in at creation
  (``max_vcpus`` 1, ``avail_vcpus`` [0], 32 MiB of memory, 1023 event channels) and the series' own keys;
- when xl refuses it, or builds a device other than the one written while warning about it (an unknown vif option,
  a bad MAC or NIC type: see :mod:`xenabi.toolstack.xldevices`), xenabi refuses it with xl's message.
"""

from __future__ import annotations

import random
import re
import string
import uuid
from typing import Any

from xenabi.errors import ConfigError, XlCfgError
from xenabi.toolstack import DomainConfig
from xenabi.toolstack.xlkeys import ACTION_DEFAULTS, VIRIDIAN, XL_KEYS

from ..oracle import xl_dryrun

WARNED_BUT_WRONG = ("unrecognized argument `", "Invalid parameter `mac'.", "Invalid parameter `type'.")
LIBXL_FILLS = {"b_info.max_vcpus": 1, "b_info.event_channels": 1023}
SERIES_KEYS = ("b_info.xen_abi_features", "xenabi.")  # the series' keys (xl ignores them), and keys not modelled
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
SAFE = string.ascii_letters + string.digits + "/._-:@ "


def text(r: random.Random, size: int = 8) -> str:
    return "".join(r.choice(SAFE) for _ in range(r.randint(0, size)))


def quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --- devices ---------------------------------------------------------------------------------------------------------
PATHS = ["/dev/vg/guest", "/srv/img.qcow2", "/root/image.iso", "vg/x", "host:1234", "/a b/c", ""]
DISK_GOOD = [
    "{p},raw,xvda,rw", "{p},,xvda,ro", "{p},qcow2,hda,w", "format=qcow2,{p},xvdb,ro", "{p},,hdc,cdrom",
    ",hdc:cdrom,r", "vdev=hdc,cdrom", "{p},raw,xvda,w,cdrom", "tap:qcow2:{p},xvda,w", "phy:{p},xvda,w",
    "file:{p},xvdc,r", "nbd:host:1234,xvda", "{p},,xvda,backend=drv", "{p},,xvda,backendtype=qdisk",
    "{p},,xvda,direct-io-safe", "{p},,xvda,discard,no-discard", "{p},,xvda,specification=virtio",
    "{p},,xvda,colo,colo-host=h,colo-port=9000,colo-export=e,active-disk=/a,hidden-disk=/h",
    "vdev=xvda, target={p}", "vdev=xvda,access=ro,devtype=disk,target={p}", ",hdc:disk,r", "{p},,,",
    "{p},,xvda,script=", "{p},vhd,xvde,rw", "{p},qed,xvdf", "{p},empty,hdd,cdrom", "raw:{p},xvda,ro",
    "{p},raw,xvda:cdrom,r", "backendtype=phy,vdev=sda,target={p}", "{p},,xvda,devtype=cdrom,access=rw",
]  # fmt: skip
DISK_BAD = [
    "{p},QCOW2,xvda", "{p},raw,xvda,rw,foo", "/x", "vdev=xvda", "target=/a,vdev=xvda", "/x,raw,xvda,format=qcow2",
    "/x,raw,xvda,foo=abc", "/x,,xvda,transport=mmio", "/x,raw,xvda,VDEV=x", "/x,,xvda,trusted",
    "phy:/dev/x,raw,xvda", "qed:/i,xvda", "/x,raw,hdc:foo", "/x,raw,xvda,devtype=floppy", "/x,,xvda,colo-port=0",
    "/x,raw,xvda,access=rx", "/x,raw,xvda,backendtype=", "/x=y,raw,xvda", "/x,raw,xvda,vdev=xvdb",
]  # fmt: skip


def disk(r: random.Random, bad: bool) -> str:
    return r.choice(DISK_BAD if bad else DISK_GOOD).format(p=r.choice(PATHS[:-1] if bad else PATHS))


def mac(r: random.Random) -> str:
    octets = [r.randrange(256) for _ in range(6)]
    separator = r.choice([":", ":", "-", "."])
    return separator.join(r.choice(["{:02x}", "{:02X}", "{:x}"]).format(o) for o in octets)


def vif(r: random.Random, bad: bool) -> str:
    options = []
    for _ in range(r.randint(0, 4)):
        options.append(r.choice([
            f"mac={mac(r)}", f"bridge={r.choice(['xenbr0', 'br1', ''])}", f"model={r.choice(['e1000', 'rtl8139'])}",
            f"type={r.choice(['vif', 'ioemu'])}", "ip=10.0.0.2 10.0.0.3", f"script={r.choice(['vif-route', ''])}",
            "vifname=web0", "backend=drv", f"mtu={r.choice([1500, 9000, 0])}", f"devid={r.randint(0, 9)}",
            f"rate={r.choice(['10Mb/s', '100MB/s@20ms', '1000B/s@1s', '5B/s', '1GB/s@1000us'])}", "gatewaydev=eth0",
            "trusted", "untrusted", "forwarddev=eth1", "colo_checkpoint_host=h", "accel=x",
        ]))  # fmt: skip
    if bad:
        options.insert(r.randrange(len(options) + 1), r.choice([
            "mac=zz:00:00:00:00:00", "mac=00:16:3e:01:02:100", "type=IOEMU", "foo=bar", "Bridge=br0",
            "rate=1Gbps", "rate=0B/s", "mtu=abc", "devid=", "rate=10Mb/s@0ms",
        ]))  # fmt: skip
    return r.choice([",", ", "]).join(options)


# --- keys ------------------------------------------------------------------------------------------------------------
def row_value(r: random.Random, kind: str, choices: Any) -> str:
    if kind == "defbool":
        return r.choice(["0", "1", "2", "0x10", '"1"'])
    if kind in ("long", "memkb"):
        return str(r.choice([0, 1, 5, 16, 64]))
    if kind == "string":
        return quoted(text(r))
    assert choices is not None
    name = r.choice(list(choices))
    return quoted(name.upper() if r.random() < 0.2 else name)


def special(r: random.Random, guest_type: str) -> list[str]:
    lines = []
    if r.random() < 0.2:
        lines.append(f"stdvga = {r.choice([0, 1])}")
    if r.random() < 0.2:
        lines.append("serial = " + r.choice(['"pty"', '[ "pty", "file:/tmp/s1" ]', "[ ]"]))
    if r.random() < 0.15:
        lines.append("usbdevice = " + r.choice(['"tablet"', '[ "tablet", "mouse" ]']))
    if r.random() < 0.2:
        names = [r.choice(["defaults", "all", *VIRIDIAN, *("!" + v for v in VIRIDIAN)]) for _ in range(3)]
        lines.append("viridian = " + r.choice(["1", "0", '"base"', "[ " + ", ".join(map(quoted, names)) + " ]"]))
    if guest_type == "hvm" and r.random() < 0.2:
        lines.append("firmware = " + quoted(r.choice(["uefi", "u", "", "bios", "b", "seabios", "OVMF", "/fw.bin"])))
    return lines


def config(r: random.Random) -> tuple[str, bool]:
    """An xl.cfg text and whether it was broken on purpose."""
    guest_type = r.choice(["hvm", "hvm", "pv", "pvh"])
    lines = [f"name = {quoted('vm' + text(r, 6).replace(' ', ''))}"]
    if guest_type == "hvm" and r.random() < 0.1:
        lines.append('builder = "hvm"')
    elif guest_type != "pv" or r.random() < 0.7:
        lines.append(f'type = "{guest_type}"')
    if guest_type != "hvm":
        lines.append('kernel = "/boot/vmlinuz"')
    if r.random() < 0.3:
        lines.append(r.choice(['ramdisk = "/boot/initrd"', 'extra = "console=hvc0"', 'root = "/dev/xvda1"',
                               'cmdline = "quiet"']))  # fmt: skip
    memory = r.choice([None, 64, 512, 2048])
    if memory:
        lines.append(f"memory = {memory}")
    if r.random() < 0.3:
        lines.append(f"maxmem = {(memory or 32) * r.choice([1, 2])}")
    vcpus = r.choice([None, 1, 2, 4])
    if vcpus:
        lines.append(f"vcpus = {vcpus}")
    if r.random() < 0.2:
        lines.append(f"maxvcpus = {(vcpus or 1) + r.choice([0, 2])}")
    for key, values in (("max_event_channels", [1023, 4095]), ("max_grant_frames", [32, 64]),
                        ("max_maptrack_frames", [256, 1024]), ("max_grant_version", [1, 2])):  # fmt: skip
        if r.random() < 0.15:
            lines.append(f"{key} = {r.choice(values)}")
    if r.random() < 0.4:
        value = r.choice([str(uuid.UUID(int=r.getrandbits(128))), "00000000-0000-0000-0000-000000000000"])
        lines.append(f"uuid = {quoted(value.upper() if r.random() < 0.3 else value)}")
    for row in r.sample(XL_KEYS, r.randint(0, 12)):
        if row.key == "vncdisplay" and any(line.startswith("vnclisten") for line in lines):
            continue  # both with a ':' in the listen address is xl's error: covered in test_config
        lines.append(f"{row.key} = {row_value(r, row.kind, row.choices)}")
    lines += special(r, guest_type)
    broken = r.random() < 0.15
    what = r.choice(["disk", "vif", "action", "uuid", "enum"]) if broken else ""
    disks = [disk(r, False) for _ in range(r.randint(0, 3))]
    if what == "disk":
        disks.insert(r.randrange(len(disks) + 1), disk(r, True))
    if disks or r.random() < 0.1:
        lines.append("disk = [ " + ", ".join(map(quoted, disks)) + " ]")
    nics = [vif(r, False) for _ in range(r.randint(0, 3))]
    if what == "vif":
        nics.insert(r.randrange(len(nics) + 1), vif(r, True))
    if nics or r.random() < 0.1:
        lines.append("vif = [ " + ", ".join(map(quoted, nics)) + " ]")
    if what == "action":
        lines.append(f"{r.choice(list(ACTION_DEFAULTS))} = "
                     + quoted(r.choice(["rename_restart", "Destroy", "1", "reboot"])))  # fmt: skip
    elif what == "uuid":
        lines.append("uuid = " + quoted(r.choice(["abc", "0d34eba5971a4c96b82dbe432e80c792", "{0d34eba5-971a}"])))
    elif what == "enum":
        lines.append(r.choice(['vga = "vesa"', 'bios = "coreboot"', 'device_model_version = "qemu"',
                               'hdtype = "scsi"', 'vendor_device = "acme"']))  # fmt: skip
    r.shuffle(lines)
    return "\n".join(lines) + "\n", broken


# --- the comparison --------------------------------------------------------------------------------------------------
def compare(source: str, dry: xl_dryrun.DryRun) -> str | None:
    """Why xenabi and xl disagree about ``source``, or None."""
    try:
        ours = DomainConfig.from_xl(source)
    except (ConfigError, XlCfgError) as exc:
        if dry.returncode == 0 and not any(word in dry.stderr for word in WARNED_BUT_WRONG):
            return f"xenabi refused what xl accepts: {exc}"
        if isinstance(exc, ConfigError) and exc.message not in dry.stderr:
            return f"xenabi refused with {exc.message!r}; xl said {dry.stderr!r}"
        return None
    if dry.returncode != 0 or dry.doc is None:
        return f"xenabi accepted what xl refuses: {dry.stderr!r}"
    if any(word in dry.stderr for word in WARNED_BUT_WRONG):
        return f"xenabi accepted what xl warned about: {dry.stderr!r}"
    theirs, mine = xl_dryrun.leaves(dry.doc), xl_dryrun.leaves(ours.to_json())
    for path, value in theirs.items():
        if path == "c_info.uuid" and ours.uuid is None:
            if not UUID.fullmatch(value):
                return f"xl's generated UUID {value!r}?"
            continue
        if mine.get(path, "<absent>") != value:
            return f"{path}: xl {value!r}, xenabi {mine.get(path, '<absent>')!r}"
    for path, value in mine.items():
        if path in theirs or path.startswith(SERIES_KEYS):
            continue
        fills = LIBXL_FILLS.get(path)
        if path.startswith("b_info.avail_vcpus["):
            fills = 0
        elif path in ("b_info.max_memkb", "b_info.target_memkb"):
            fills = theirs.get("b_info.max_memkb", theirs.get("b_info.target_memkb", 32 * 1024))
        if fills is None or value != fills:
            return f"{path}: xenabi adds {value!r}, which libxl does not fill in"
    return None

"""What every ``xenabi`` command shares: literal output (a console that never reads markup, control characters
escaped), ``--json``, and how errors are reported. Imported by each command module; it imports none of them.

Output is literal: every string a user supplied (VM, host and pool names, file names, config values, messages that
quote them) is printed as it is, never read as Rich markup or emoji codes, and its control characters are shown
escaped (``\\x1b``) so that a name cannot move the cursor or recolour the terminal. Colour comes only from styles
the code sets on :class:`~rich.text.Text`. Rich itself is imported only when a table or styled text is printed.
"""

from __future__ import annotations

import json
import sys
import unicodedata
from enum import IntEnum
from functools import cache
from typing import TYPE_CHECKING, Any

import click

from xenabi.abi.evtchn import EvtchnOp
from xenabi.abi.gnttab import GnttabOp
from xenabi.abi.hvm import HVMOP_set_evtchn_upcall_vector
from xenabi.abi.vcpu import VcpuOp
from xenabi.abi.version import XenVer
from xenabi.abi.xen import (
    HYPERCALL_NAMES,
    HYPERVISOR_event_channel_op,
    HYPERVISOR_grant_table_op,
    HYPERVISOR_hvm_op,
    HYPERVISOR_vcpu_op,
    HYPERVISOR_xen_version,
)

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text


_SUBOP_NAMES: dict[int, tuple[str, type[IntEnum]]] = {
    HYPERVISOR_event_channel_op: ("EVTCHNOP", EvtchnOp),
    HYPERVISOR_xen_version: ("XENVER", XenVer),
    HYPERVISOR_grant_table_op: ("GNTTABOP", GnttabOp),
    HYPERVISOR_vcpu_op: ("VCPUOP", VcpuOp),
}


def op_name(op: int, cmd: int) -> str:
    named = _SUBOP_NAMES.get(op)
    if named is not None and cmd in named[1]._value2member_map_:
        return f"{named[0]}_{named[1](cmd).name}"
    if op == HYPERVISOR_hvm_op and cmd == HVMOP_set_evtchn_upcall_vector:
        return "HVMOP_set_evtchn_upcall_vector"
    return f"{HYPERCALL_NAMES.get(op, op)}:{cmd}"


def visible(text: str) -> str:
    """``text`` with its control characters (C0, DEL, C1, and the bidirectional overrides) written as escapes."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch in "\n\t" or unicodedata.category(ch) not in ("Cc", "Cf"):
            out.append(ch)
        else:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
    return "".join(out)


@cache
def _literal_console_class() -> type[Console]:
    """Rich is imported only by a command that prints a table (``--help`` and the JSON paths never load it)."""
    from rich.console import Console

    class LiteralConsole(Console):
        """A console that prints strings literally: no markup, no emoji codes, no highlighting, control characters
        escaped."""

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(markup=False, emoji=False, highlight=False, **kwargs)

        def render_str(self, text: str, **kwargs: Any) -> Text:
            return super().render_str(visible(text), **kwargs)

    return LiteralConsole


def console() -> Console:
    """On a terminal, tables fit it; piped, prose is never wrapped (soft wrap) and tables are 120 columns wide."""
    literal = _literal_console_class()
    probe = literal()
    if probe.is_terminal:
        return literal(soft_wrap=False)
    return literal(soft_wrap=True, width=120)


def styled(text: str, style: str) -> Text:
    """A user-visible string in a style, printed literally."""
    from rich.text import Text

    return Text(visible(text), style=style)


def new_table(**kwargs: Any) -> Any:
    """A rich Table (imported on first use)."""
    from rich.table import Table

    return Table(**kwargs)


json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")


def fail(exc: Exception, as_json: bool) -> None:
    """Report an error (structured with --json, with every admission reason) and exit 1."""
    doc = error_json(exc)
    reasons = getattr(exc, "reasons", None)
    if reasons is not None:
        doc["reasons"] = [r.to_json() for r in reasons]
    if as_json:
        click.echo(json.dumps({"error": doc}, indent=2))
    else:
        click.echo(f"error: {visible(str(exc))}", err=True)
    sys.exit(1)


def error_json(exc: Exception) -> dict[str, object]:
    doc: dict[str, object] = {"type": type(exc).__name__, "message": str(exc)}
    for attr in ("line", "column", "key", "field", "value", "source", "name"):
        if getattr(exc, attr, None) is not None:
            doc[attr] = getattr(exc, attr)
    return doc


def expected_error(exc: Exception) -> bool:
    """An error raised on purpose (the project's own, the operating system's, the inventory database's): a clear
    one-line message, not an internal error."""
    from xenabi.errors import XenabiError

    sqlite3 = sys.modules.get("sqlite3")  # only a command that opened an inventory can raise its errors
    return isinstance(exc, XenabiError | OSError) or (sqlite3 is not None and isinstance(exc, sqlite3.Error))

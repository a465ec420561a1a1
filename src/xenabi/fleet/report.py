"""Reports to look at: one self-contained HTML file per plan or fleet (issue 15).

The file needs nothing but a browser: inline CSS and inline SVG, no script, no fonts or images fetched, so it can be
mailed, attached to a change ticket or opened offline. Hover text is SVG ``<title>``, which every browser shows as
a tooltip without script. Every name in it comes from the inventory and is escaped.

- :func:`upgrade_report`: the plan's summary; the waves over time (migrations and suspensions per wave, with the
  headroom left during each); the memory of each pool the plan touches, in use per host class before and after the
  plan, against the pool's capacity; the admission matrix; and every stranded VM with its reason.
- :func:`matrix_report` (``fleet summary --html``): the admission matrix alone. Rows are VM classes (guest type and
  policy, with how many VMs), columns host classes (release and ABI control, with how many hosts, and the plan's
  target class when it is new); a cell is green when the host class admits the VM class and red when it refuses,
  with decision 8's reasons on hover.
"""

from __future__ import annotations

import html
from collections.abc import Iterable

from xenabi.fleet.inventory import Inventory
from xenabi.fleet.planner import HostClass, VmClass, class_admission, host_classes, vm_classes
from xenabi.fleet.upgrade import UpgradePlan

ADMIT, REFUSE = "#2e8b57", "#c0392b"
PALETTE = ("#4e79a7", "#f28e2b", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac",
           "#e15759", "#8cd17d", "#86bcb6", "#f1ce63", "#d4a6c8", "#a0cbe8", "#ffbe7d")  # fmt: skip
STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; max-width: 1400px; }
h1 { font-size: 22px; } h2 { font-size: 17px; margin-top: 32px; }
table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: left; }
.ok { color: #2e8b57; font-weight: bold; } .bad { color: #c0392b; font-weight: bold; }
svg text { font: 11px system-ui, sans-serif; fill: #333; }
.legend span { display: inline-block; margin-right: 14px; } .legend i { display: inline-block; width: 12px;
  height: 12px; margin-right: 4px; vertical-align: -1px; }
"""
STRANDED_SHOWN = 2000  # stranded VMs listed in the report; the count and the plan file have all of them


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _page(title: str, body: Iterable[str]) -> str:
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_e(title)}</title><style>{STYLE}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")  # fmt: skip


# --- admission matrix --------------------------------------------------------------------------------------------
def matrix_svg(vms: dict[VmClass, int], hosts: dict[HostClass, int], target: HostClass | None = None) -> str:
    columns = sorted(hosts)
    if target is not None and target not in hosts:
        columns.append(target)
    rows = sorted(vms)
    longest = max([len(f"{hc.release} legacy max-ver:1 (target)") for hc in columns] + [4])
    cell, left, top = 18, 330, 24 + int(longest * 5.6)  # the column labels are slanted 60 degrees
    width, height = left + cell * len(columns) + 160, top + cell * len(rows) + 10  # room for the slanted labels
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             'aria-label="admission of VM classes by host classes">']  # fmt: skip
    for x, hc in enumerate(columns):
        count = hosts.get(hc, 0)
        boot = "" if hc.default_boot else f" max-ver:{hc.gnttab_max_version}"
        label = f"{hc.release} {'ctl' if hc.abi_control else 'legacy'}{boot}" + (" (target)" if hc == target else "")
        cx = left + x * cell + cell // 2
        parts.append(f'<text transform="translate({cx},{top - 6}) rotate(-60)">{_e(label)}'
                     f'<title>{_e(hc)}: {count:,} hosts{" (the upgrade target)" if hc == target else ""}</title>'
                     "</text>")  # fmt: skip
    for y, vmc in enumerate(rows):
        cy = top + y * cell
        parts.append(f'<text x="{left - 6}" y="{cy + 13}" text-anchor="end">{_e(vmc)} ({vms[vmc]:,})</text>')
        for x, hc in enumerate(columns):
            reasons = class_admission(vmc, hc)
            verdict = "refuses: " + "; ".join(str(r) for r in reasons) if reasons else "admits"
            tip = f"{vmc} ({vms[vmc]:,} VMs) on {hc}: {verdict}"
            parts.append(f'<rect class="cell" x="{left + x * cell}" y="{cy}" width="{cell - 2}" height="{cell - 2}" '
                         f'fill="{REFUSE if reasons else ADMIT}"><title>{_e(tip)}</title></rect>')  # fmt: skip
    parts.append("</svg>")
    return "".join(parts)


def _matrix_section(inv: Inventory, target: HostClass | None) -> list[str]:
    vms, hosts = vm_classes(inv), host_classes(inv)
    legend = (f'<p class="legend"><span><i style="background:{ADMIT}"></i>admits</span>'
              f'<span><i style="background:{REFUSE}"></i>refuses (hover for the reasons)</span></p>')  # fmt: skip
    return ["<h2>Admission: VM classes &times; host classes</h2>", legend, matrix_svg(vms, hosts, target)]


def matrix_report(inv: Inventory) -> str:
    hosts, vms = inv.counts()
    return _page("xenabi fleet admission", [
        "<h1>Fleet admission</h1>",
        f"<p>{hosts:,} hosts and {vms:,} VMs. Decision 8: a host admits a VM when it can give it exactly its "
        "policy.</p>",
        *_matrix_section(inv, None),
    ])  # fmt: skip


# --- the plan ------------------------------------------------------------------------------------------------------
def waves_svg(plan: UpgradePlan) -> str:
    waves = plan.waves
    left, top, plot_h = 70, 20, 220
    step = max(3, min(40, 1000 // max(1, len(waves))))
    width = left + step * len(waves) + 140
    height = top + plot_h + 50
    peak = max([w.migrations + w.suspends for w in waves] + [1])
    room = max([w.headroom_mib for w in waves] + [1])
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             'aria-label="migrations per wave">',
             f'<line x1="{left}" y1="{top + plot_h}" x2="{width - 130}" y2="{top + plot_h}" stroke="#888"/>',
             f'<text x="{left - 6}" y="{top + 8}" text-anchor="end">{peak:,}</text>',
             f'<text x="{left - 6}" y="{top + plot_h}" text-anchor="end">0</text>',
             f'<text x="{left}" y="{top + plot_h + 32}">wave 1</text>',
             f'<text x="{width - 130}" y="{top + plot_h + 32}" text-anchor="end">wave {len(waves)}</text>']  # fmt: skip
    points = []
    for i, wave in enumerate(waves):
        x = left + i * step
        moved = wave.migrations * plot_h / peak
        held = wave.suspends * plot_h / peak
        tip = (f"wave {wave.number}: {len(wave.hosts):,} hosts upgraded, {wave.migrations:,} migrations, "
               f"{wave.suspends:,} suspended in place; {wave.headroom_mib:,} MiB free on the hosts that stay up "
               f"(tightest: {wave.tightest_pool}, {wave.tightest_headroom_mib:,} MiB)")  # fmt: skip
        parts.append(f'<g class="wave"><title>{_e(tip)}</title>'
                     f'<rect x="{x}" y="{top + plot_h - moved:.1f}" width="{max(1, step - 1)}" height="{moved:.1f}" '
                     'fill="#4e79a7"/>'
                     f'<rect x="{x}" y="{top + plot_h - moved - held:.1f}" width="{max(1, step - 1)}" '
                     f'height="{held:.1f}" fill="#bab0ac"/></g>')  # fmt: skip
        points.append(f"{x + step / 2:.1f},{top + plot_h - wave.headroom_mib * plot_h / room:.1f}")
    if points:
        parts.append(f'<polyline points="{" ".join(points)}" fill="none" stroke="#e15759" stroke-width="2"/>')
        parts.append(f'<text x="{width - 126}" y="{top + 8}" fill="#e15759">{room:,} MiB</text>')
    parts.append("</svg>")
    legend = ('<p class="legend"><span><i style="background:#4e79a7"></i>migrations</span>'
              '<span><i style="background:#bab0ac"></i>suspended in place</span>'
              '<span><i style="background:#e15759"></i>memory free on the hosts that stay up (right scale)</span>'
              "</p>")  # fmt: skip
    return legend + "".join(parts)


def pools_svg(plan: UpgradePlan) -> str:
    classes = sorted({hc for memory in plan.pools.values() for hc in (*memory.before, *memory.after)})
    colour = {hc: PALETTE[i % len(PALETTE)] for i, hc in enumerate(classes)}
    names = sorted(plan.pools)
    biggest = max([m.capacity_mib for m in plan.pools.values()] + [1])
    left, bar_w, bar_h, gap = 170, 620, 12, 10
    height = 10 + len(names) * (2 * bar_h + gap)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + bar_w + 560}" height="{height}" role="img" '
             'aria-label="memory per pool before and after">']  # fmt: skip
    for row, name in enumerate(names):
        memory = plan.pools[name]
        y = 5 + row * (2 * bar_h + gap)
        full = memory.capacity_mib * bar_w / biggest
        parts.append(f'<text x="{left - 6}" y="{y + bar_h + 4}" text-anchor="end">{_e(name)}</text>')
        for offset, (label, used) in enumerate((("before", memory.before), ("after", memory.after))):
            by = y + offset * bar_h
            parts.append(f'<rect x="{left}" y="{by}" width="{full:.1f}" height="{bar_h - 1}" fill="#eee"/>')
            x = float(left)
            for hc in classes:
                mib = used.get(hc, 0)
                if not mib:
                    continue
                w = mib * bar_w / biggest
                tip = f"{name} {label}: {mib:,} MiB in use on {hc} hosts, of {memory.capacity_mib:,} MiB in the pool"
                parts.append(f'<rect x="{x:.1f}" y="{by}" width="{w:.1f}" height="{bar_h - 1}" fill="{colour[hc]}">'
                             f"<title>{_e(tip)}</title></rect>")  # fmt: skip
                x += w
            total = sum(used.values())
            parts.append(f'<text x="{left + bar_w + 6}" y="{by + bar_h - 2}">{label}: {total:,} of '
                         f"{memory.capacity_mib:,} MiB</text>")  # fmt: skip
        if memory.min_headroom_mib is not None:
            parts.append(f'<text x="{left + bar_w + 290}" y="{y + bar_h + 4}">least free during the plan: '
                         f"{memory.min_headroom_mib:,} MiB</text>")  # fmt: skip
    parts.append("</svg>")
    legend = '<p class="legend">' + "".join(
        f'<span><i style="background:{colour[hc]}"></i>{_e(hc)}</span>' for hc in classes) + "</p>"  # fmt: skip
    return legend + "".join(parts)


def upgrade_report(plan: UpgradePlan, inv: Inventory) -> str:
    s = plan.summary()
    verdict = ('<span class="ok">complete</span>' if plan.complete else
               f'<span class="bad">impossible as asked: {len(plan.stranded):,} VMs stranded, '
               f"{len(plan.blocked_hosts):,} hosts cannot be upgraded</span>")  # fmt: skip
    body = [
        f"<h1>Rolling upgrade to {_e(plan.target)}</h1>",
        f"<p>{verdict}. {s['upgraded_hosts']:,} of {s['hosts']:,} hosts upgraded in {s['waves']:,} waves of at most "
        f"{_e(plan.max_parallel)} hosts per {'fleet' if plan.across_pools else 'pool'}; "
        f"{s['vms_on_hosts']:,} VMs on them: {s['migrations']:,} migrations ({s['moved_twice']:,} of them moving a "
        f"VM a second time), {s['suspends']:,} suspended in place. Placement: first-fit decreasing by memory.</p>",
        *(f"<p>{_e(note)}</p>" for note in plan.notes),
        "<h2>Waves</h2>",
        waves_svg(plan),
        f"<h2>Memory per pool, before and after ({len(plan.pools):,} pools the plan touches)</h2>",
        pools_svg(plan),
        *_matrix_section(inv, plan.target),
    ]
    if plan.stranded:
        from xenabi.fleet.planfile import vm_names

        shown = plan.stranded[:STRANDED_SHOWN]
        names = vm_names(inv, [s.vm_id for s in shown])
        rows = "".join(
            f"<tr><td>{_e(names.get(s.vm_id, s.vm_id))}</td><td>{_e(plan.host_names[s.host])}</td>"
            f"<td>{_e(s.vm_class)}</td><td>{s.memory_mib:,}</td><td>{s.vcpus}</td><td>{_e(s.reason)}</td></tr>"
            for s in shown
        )
        more = (f"<p>and {len(plan.stranded) - len(shown):,} more: the plan file lists every one.</p>"
                if len(plan.stranded) > len(shown) else "")  # fmt: skip
        body += [f"<h2>Stranded VMs ({len(plan.stranded):,})</h2>",
                 "<table><tr><th>VM</th><th>host</th><th>class</th><th>MiB</th><th>vCPUs</th><th>why</th></tr>"
                 f"{rows}</table>{more}"]  # fmt: skip
    return _page(f"xenabi upgrade plan: {plan.target}", body)

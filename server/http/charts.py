"""Charts of the local metrics as inline SVG, drawn on the server (no script, no chart library).

Each function takes plain numbers and returns an ``<svg>`` string with its axes and a
legend. Text is escaped. This module imports nothing but the standard library.
"""

from __future__ import annotations

import time
from html import escape

COLORS = ("#2f6fdf", "#d9480f", "#2b8a3e", "#862e9c", "#e67700", "#0b7285", "#c2255c")
WIDTH, HEIGHT, PAD = 640, 230, 48
TOP = 22  # room above the plot for the unit


def _axis(y_max: float, unit: str) -> list[str]:
    out = [f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - 10}" y2="{HEIGHT - PAD}" stroke="#888"/>',
           f'<line x1="{PAD}" y1="{TOP}" x2="{PAD}" y2="{HEIGHT - PAD}" stroke="#888"/>']
    for i in range(5):
        v = y_max * i / 4
        y = HEIGHT - PAD - (HEIGHT - PAD - TOP) * i / 4
        label = f"{v:,.0f}" if y_max >= 20 else f"{v:.1f}"
        out.append(f'<text x="{PAD - 4}" y="{y + 4:.0f}" font-size="10" text-anchor="end">{label}</text>')
        out.append(f'<line x1="{PAD}" y1="{y:.0f}" x2="{WIDTH - 10}" y2="{y:.0f}" stroke="#eee"/>')
    out.append(f'<text x="{PAD}" y="12" font-size="10" text-anchor="middle">{escape(unit)}</text>')
    return out


def _legend(names: list[str]) -> list[str]:
    return [f'<rect x="{PAD + 110 * i}" y="{HEIGHT - 14}" width="10" height="10" fill="{COLORS[i % len(COLORS)]}"/>'
            f'<text x="{PAD + 14 + 110 * i}" y="{HEIGHT - 5}" font-size="11">{escape(n)}</text>'
            for i, n in enumerate(names)]


def line_chart(series: dict[str, list[tuple[float, float]]], unit: str, title: str) -> str:
    """One line per series over time.

    Args:
        series: name -> [(epoch seconds, value)], in time order.
        unit: the y axis' unit (``ms``).
        title: the chart's accessible name.
    """
    points = [p for pts in series.values() for p in pts]
    if not points:
        return f'<p class="empty">No {escape(title.lower())} recorded yet.</p>'
    t0, t1 = min(p[0] for p in points), max(p[0] for p in points)
    y_max = max(p[1] for p in points) * 1.1 or 1
    span = (t1 - t0) or 1
    out = [f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}" class="chart">', *_axis(
        y_max, unit)]
    for i, (name, pts) in enumerate(series.items()):
        xy = " ".join(f"{PAD + (WIDTH - PAD - 20) * (t - t0) / span:.1f},"
                      f"{HEIGHT - PAD - (HEIGHT - PAD - TOP) * v / y_max:.1f}" for t, v in pts)
        color = COLORS[i % len(COLORS)]
        out.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{xy}"/>')
        out.extend(f'<circle cx="{c.split(",")[0]}" cy="{c.split(",")[1]}" r="2" fill="{color}"/>' for c in xy.split())
    for x, t, anchor in ((PAD, t0, "start"), (WIDTH - 20, t1, "end")):
        label = time.strftime("%d %b %H:%M", time.localtime(t))
        out.append(f'<text x="{x}" y="{HEIGHT - PAD + 14}" font-size="10" text-anchor="{anchor}">{label}</text>')
    return "".join(out + _legend(list(series)) + ["</svg>"])


def bar_chart(groups: dict[str, dict[str, float]], unit: str, title: str) -> str:
    """Grouped bars: for each group (a task), one bar per measure (``prompt``, ``output``...).

    Args:
        groups: group -> measure -> value; every group should have the same measures.
        unit: the y axis' unit.
        title: the chart's accessible name.
    """
    measures = list(dict.fromkeys(m for g in groups.values() for m in g))
    if not groups or not measures:
        return f'<p class="empty">No {escape(title.lower())} recorded yet.</p>'
    y_max = max(v for g in groups.values() for v in g.values()) * 1.1 or 1
    slot = (WIDTH - PAD - 20) / len(groups)
    bar = min(36.0, slot * 0.8 / len(measures))
    out = [f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}" class="chart">', *_axis(
        y_max, unit)]
    for gi, (group, values) in enumerate(groups.items()):
        x0 = PAD + gi * slot + (slot - bar * len(measures)) / 2
        for mi, m in enumerate(measures):
            v = values.get(m, 0)
            h = (HEIGHT - PAD - TOP) * v / y_max
            out.append(f'<rect x="{x0 + mi * bar:.1f}" y="{HEIGHT - PAD - h:.1f}" width="{bar - 2:.1f}" '
                       f'height="{h:.1f}" fill="{COLORS[mi % len(COLORS)]}"><title>{escape(group)} {escape(m)}: '
                       f'{v:,.0f}</title></rect>')
        out.append(f'<text x="{PAD + gi * slot + slot / 2:.1f}" y="{HEIGHT - PAD + 14}" font-size="11" '
                   f'text-anchor="middle">{escape(group)}</text>')
    return "".join(out + _legend(measures) + ["</svg>"])

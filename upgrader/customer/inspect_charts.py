"""Small inline SVG charts for the inspection report: no script, no font file, no link to anything outside.

    bars(items, unit, title) -> str        one bar a (label, value); a None value is a gap labelled "n/a"
    lines(series, labels, title) -> str    one polyline a named series over the labels (None: a gap)

Every label is escaped; the charts are ``<svg class="chart">`` with a ``<title>`` for screen readers.
"""

from __future__ import annotations

from html import escape
from typing import Sequence

__all__ = ["bars", "lines", "COLOURS"]

COLOURS = ("#2f6fd0", "#d0622f", "#2f9d59", "#8a4fc7")
W, H, PAD, BOTTOM = 340, 150, 34, 28


def _num(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}"


def bars(items: Sequence[tuple[str, float | None]], unit: str, title: str) -> str:
    top = max([v for _, v in items if isinstance(v, (int, float))] or [0]) or 1.0
    n = max(1, len(items))
    slot = (W - PAD - 8) / n
    out = [f'<svg class="chart" role="img" width="{W}" height="{H}" viewBox="0 0 {W} {H}">'
           f'<title>{escape(title)}</title>',
           f'<line x1="{PAD}" y1="{H - BOTTOM}" x2="{W - 4}" y2="{H - BOTTOM}" stroke="#999"/>',
           f'<text x="4" y="12" font-size="10" fill="#555">{escape(_num(top))} {escape(unit)}</text>']
    for i, (label, value) in enumerate(items):
        x = PAD + i * slot + slot * 0.15
        if isinstance(value, (int, float)):
            h = max(1.0, (H - BOTTOM - 18) * value / top)
            out.append(f'<rect class="mark" x="{x:.1f}" y="{H - BOTTOM - h:.1f}" width="{slot * 0.7:.1f}" '
                       f'height="{h:.1f}" fill="{COLOURS[0]}"><title>{escape(label)}: {escape(_num(value))} '
                       f'{escape(unit)}</title></rect>')
            out.append(f'<text x="{x + slot * 0.35:.1f}" y="{H - BOTTOM - h - 3:.1f}" font-size="10" '
                       f'text-anchor="middle">{escape(_num(value))}</text>')
        else:
            out.append(f'<text x="{x + slot * 0.35:.1f}" y="{H - BOTTOM - 4}" font-size="10" text-anchor="middle" '
                       f'fill="#999">n/a</text>')
        out.append(f'<text x="{x + slot * 0.35:.1f}" y="{H - BOTTOM + 14}" font-size="10" '
                   f'text-anchor="middle">{escape(label)}</text>')
    out.append("</svg>")
    return "".join(out)


def lines(series: dict[str, Sequence[float | None]], labels: Sequence[str], title: str) -> str:
    values = [v for s in series.values() for v in s if isinstance(v, (int, float))]
    top = max(values or [0]) or 1.0
    n = max(1, len(labels))
    step = (W - PAD - 12) / max(1, n - 1)
    out = [f'<svg class="chart" role="img" width="{W}" height="{H + 14 * len(series)}" '
           f'viewBox="0 0 {W} {H + 14 * len(series)}"><title>{escape(title)}</title>',
           f'<line x1="{PAD}" y1="{H - BOTTOM}" x2="{W - 4}" y2="{H - BOTTOM}" stroke="#999"/>',
           f'<text x="4" y="12" font-size="10" fill="#555">{escape(_num(top))}</text>']
    for i, label in enumerate(labels):
        if i in (0, n - 1) or n <= 4:
            out.append(f'<text x="{PAD + i * step:.1f}" y="{H - BOTTOM + 14}" font-size="9" '
                       f'text-anchor="middle">{escape(label)}</text>')
    for k, (name, points) in enumerate(series.items()):
        colour = COLOURS[k % len(COLOURS)]
        xy = [(PAD + i * step, H - BOTTOM - (H - BOTTOM - 18) * v / top) for i, v in enumerate(points)
              if isinstance(v, (int, float))]
        if len(xy) > 1:
            out.append(f'<polyline class="mark" fill="none" stroke="{colour}" stroke-width="2" points="'
                       + " ".join(f"{x:.1f},{y:.1f}" for x, y in xy) + '"/>')
        out += [f'<circle class="mark" cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>' for x, y in xy]
        out.append(f'<rect x="{PAD}" y="{H + 14 * k - 8}" width="10" height="8" fill="{colour}"/>'
                   f'<text x="{PAD + 14}" y="{H + 14 * k}" font-size="10">{escape(name)}</text>')
    out.append("</svg>")
    return "".join(out)

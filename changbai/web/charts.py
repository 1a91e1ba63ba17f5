"""Trend charts as inline SVG drawn on the server: no script, no library, nothing fetched from elsewhere,
readable by screen readers (a title and a data table beside each chart)."""

from __future__ import annotations

import math
from html import escape

COLOURS = ("#0b5cad", "#b3261e")  # blue and red, both above 4.5:1 on white
WIDTH, HEIGHT = 560, 200
PAD_L, PAD_R, PAD_T, PAD_B = 44, 12, 12, 28


def line_chart(
    title: str,
    points: list[tuple[str, list[float]]],
    series_names: tuple[str, ...] = ("",),
    band: tuple[float, float] | None = None,
) -> str:
    """An SVG line chart of ``points`` [(date, [value per series])], oldest first, with an optional
    normal-range band and, for several series, a legend; an empty string when there are no points."""
    if not points:
        return ""
    values = [v for _, vs in points for v in vs]
    lo, hi = min(values), max(values)
    if band:
        lo, hi = min(lo, band[0]), max(hi, band[1])
    step = _nice_step((hi - lo) / 4 or abs(hi) / 4 or 1.0)
    lo, hi = math.floor(lo / step) * step, math.ceil(hi / step) * step
    if hi - lo < step * 2:
        hi += step
    legend = len(series_names) > 1 and all(series_names)
    pad_t = PAD_T + (16 if legend else 0)
    inner_w, inner_h = WIDTH - PAD_L - PAD_R, HEIGHT - pad_t - PAD_B
    n = len(points)

    def x(i: int) -> float:
        return PAD_L + (inner_w * i / (n - 1) if n > 1 else inner_w / 2)

    def y(v: float) -> float:
        return pad_t + inner_h * (1 - (v - lo) / (hi - lo))

    out = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>'
    ]
    if band:
        out.append(
            f'<rect x="{PAD_L}" y="{y(band[1]):.1f}" width="{inner_w}" height="{y(band[0]) - y(band[1]):.1f}" '
            'fill="#e3f1e6"/>'
        )
    ticks = round((hi - lo) / step)
    for k in range(ticks + 1):
        v = lo + step * k
        out.append(
            f'<line x1="{PAD_L}" x2="{WIDTH - PAD_R}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#d5dae0"/>'
            f'<text x="{PAD_L - 6}" y="{y(v) + 4:.1f}" text-anchor="end" font-size="11" fill="#3d4752">'
            f"{v:g}</text>"
        )
    for label_i in sorted({0, n // 2, n - 1}):
        anchor = "start" if label_i == 0 and n > 1 else "end" if label_i == n - 1 and n > 1 else "middle"
        out.append(
            f'<text x="{x(label_i):.1f}" y="{HEIGHT - 8}" text-anchor="{anchor}" font-size="11" fill="#3d4752">'
            f"{escape(points[label_i][0])}</text>"
        )
    if legend:
        at = WIDTH - PAD_R
        for s in reversed(range(len(series_names))):
            text = escape(series_names[s])
            out.append(f'<text x="{at}" y="{PAD_T + 4}" text-anchor="end" font-size="12" fill="#3d4752">{text}</text>')
            at -= 12 * len(series_names[s]) + 6
            out.append(
                f'<line x1="{at - 18}" x2="{at - 4}" y1="{PAD_T}" y2="{PAD_T}" '
                f'stroke="{COLOURS[s % len(COLOURS)]}" stroke-width="3"/>'
            )
            at -= 30
    for s, name in enumerate(series_names):
        colour = COLOURS[s % len(COLOURS)]
        path = " ".join(f"{'M' if i == 0 else 'L'}{x(i):.1f},{y(vs[s]):.1f}" for i, (_, vs) in enumerate(points))
        out.append(f'<path d="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for i, (d, vs) in enumerate(points):
            out.append(
                f'<circle cx="{x(i):.1f}" cy="{y(vs[s]):.1f}" r="3.5" fill="{colour}">'
                f"<title>{escape(d)} {escape(name)} {vs[s]:g}</title></circle>"
            )
    out.append("</svg>")
    return "".join(out)


def _nice_step(rough: float) -> float:
    """The round step (1, 2, 2.5 or 5 times a power of ten) nearest above ``rough``, for axis ticks people read."""
    power = 10 ** math.floor(math.log10(rough))
    for m in (1, 2, 2.5, 5, 10):
        if rough <= m * power:
            return float(m * power)
    return float(10 * power)

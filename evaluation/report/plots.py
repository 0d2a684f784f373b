"""Small inline-SVG charts: the report must open anywhere with no external asset or JS.

Hand-written SVG rather than matplotlib: a few KB per chart, deterministic bytes, text stays
selectable, and every chart carries `class="plot"` and a `data-plot` name that tests look for.
"""

from __future__ import annotations

import math
from html import escape

_COLORS = ("#2b6cb0", "#a0aec0", "#c05621", "#2f855a")  # ours, paper, then extra series
_W, _H = 640, 260
_L, _R, _T, _B = 48, 12, 28, 56  # margins: y labels left, x labels below


def _nice_max(v: float) -> float:
    if 0 < v < 1:  # rates, accuracies as fractions: round up within the value's own decade
        mag = 10 ** math.floor(math.log10(v))
        return next(m * mag for m in (1, 2, 2.5, 5, 10) if v <= m * mag * (1 + 1e-9))
    for step in (1, 2, 5, 10, 20, 25, 50, 100):
        if v <= step * 10:
            return max(step, step * -(-v // step))
    return v


def _frame(name: str, title: str, ymin: float, ymax: float, width: int = _W, height: int = _H) -> list[str]:
    ph = height - _T - _B
    out = [f'<svg class="plot" data-plot="{escape(name)}" xmlns="http://www.w3.org/2000/svg" width="{width}" '
           f'height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
           f'<title>{escape(title)}</title>',
           f'<text x="{width / 2}" y="16" text-anchor="middle" font-size="13" font-weight="bold">{escape(title)}</text>']
    for i in range(5):
        v = ymin + (ymax - ymin) * i / 4
        y = _T + ph - ph * i / 4
        out.append(f'<line x1="{_L}" x2="{width - _R}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e2e8f0"/>')
        out.append(f'<text x="{_L - 4}" y="{y + 4:.1f}" text-anchor="end" font-size="10">{v:g}</text>')
    return out


def bar_chart(name: str, title: str, categories: list[str], series: list[tuple[str, list[float | None]]],
              width: int = _W, height: int = _H) -> str:
    """Grouped bars, one group per category; None draws nothing (e.g. no paper number)."""
    vals = [v for _, vs in series for v in vs if v is not None]
    ymin = min(0.0, min(vals, default=0.0))
    ymax = _nice_max(max(vals, default=1.0)) if vals else 1.0
    ph, pw = height - _T - _B, width - _L - _R
    out = _frame(name, title, ymin, ymax, width, height)
    group = pw / max(1, len(categories))
    bw = group * 0.8 / max(1, len(series))

    def y_of(v):
        return _T + ph - ph * (v - ymin) / ((ymax - ymin) or 1)

    for ci, cat in enumerate(categories):
        x0 = _L + ci * group + group * 0.1
        for si, (label, vs) in enumerate(series):
            v = vs[ci]
            if v is None:
                continue
            top, base = y_of(max(v, 0)), y_of(min(v, 0))
            out.append(f'<rect class="bar" x="{x0 + si * bw:.1f}" y="{top:.1f}" width="{bw - 1:.1f}" '
                       f'height="{max(0.5, base - top):.1f}" fill="{_COLORS[si % 4]}">'
                       f'<title>{escape(cat)} {escape(label)}: {v:.2f}</title></rect>')
        out.append(f'<text x="{x0 + group * 0.4:.1f}" y="{height - _B + 14}" text-anchor="middle" '
                   f'font-size="10">{escape(cat)}</text>')
    out += _legend([s for s, _ in series], width, height)
    return "\n".join(out + ["</svg>"])


def line_chart(name: str, title: str, points: list[tuple[float, float]], *, reference: float | None = None,
               reference_label: str = "paper", x_label: str = "pretraining step",
               width: int = 300, height: int = 200, markers: bool = True) -> str:
    """A series against pretraining steps; a dashed line marks a reference (the paper's score) when given.

    `markers=False` draws the line alone (dense curves: hundreds of points)."""
    ys = [y for _, y in points] + ([reference] if reference is not None else [])
    ymin = min(0.0, min(ys, default=0.0))
    ymax = _nice_max(max(ys, default=1.0)) if ys else 1.0
    xs = [x for x, _ in points] or [0.0]
    xmin, xmax = min(xs), max(xs)
    ph, pw = height - _T - _B, width - _L - _R

    def xy(x, y):
        fx = 0.5 if xmax == xmin else (x - xmin) / (xmax - xmin)
        return _L + pw * fx, _T + ph - ph * (y - ymin) / ((ymax - ymin) or 1)

    out = _frame(name, title, ymin, ymax, width, height)
    if reference is not None:
        _, ry = xy(xmin, reference)
        out.append(f'<line class="reference" x1="{_L}" x2="{width - _R}" y1="{ry:.1f}" y2="{ry:.1f}" '
                   f'stroke="{_COLORS[1]}" stroke-dasharray="4 3"><title>{escape(reference_label)}: '
                   f'{reference:.2f}</title></line>')
    coords = [xy(x, y) for x, y in points]
    if len(coords) > 1:
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
        out.append(f'<polyline class="series" points="{path}" fill="none" stroke="{_COLORS[0]}" stroke-width="2"/>')
    for (x, y), (cx, cy) in zip(points, coords) if markers or len(points) == 1 else ():
        out.append(f'<circle class="point" cx="{cx:.1f}" cy="{cy:.1f}" r="3.5" fill="{_COLORS[0]}">'
                   f'<title>step {x:g}: {y:.2f}</title></circle>')
    for x in sorted(set(xs)) if len(set(xs)) <= 6 else (xmin, xmax):
        cx, _ = xy(x, ymin)
        out.append(f'<text x="{cx:.1f}" y="{height - _B + 14}" text-anchor="middle" font-size="9">{_short(x)}</text>')
    out.append(f'<text x="{_L + pw / 2:.1f}" y="{height - _B + 30}" text-anchor="middle" font-size="10">'
               f'{escape(x_label)}</text>')
    return "\n".join(out + ["</svg>"])


def _short(x: float) -> str:
    for div, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:g}{suffix}"
    return f"{x:g}"


def _legend(labels: list[str], width: int, height: int) -> list[str]:
    out, x = [], _L
    for i, label in enumerate(labels):
        out.append(f'<rect x="{x}" y="{height - 20}" width="10" height="10" fill="{_COLORS[i % 4]}"/>')
        out.append(f'<text x="{x + 14}" y="{height - 11}" font-size="10">{escape(label)}</text>')
        x += 20 + 7 * len(label)
    return out

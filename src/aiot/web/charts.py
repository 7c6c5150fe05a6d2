"""Small server-side SVG charts (no JavaScript chart library to vendor, nothing to break in the console)."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from markupsafe import Markup

LEFT = 38.0  # room for the axis labels


def _points(values: Sequence[float], width: float, height: float, pad: float, top: float) -> list[tuple[float, float]]:
    n = len(values)
    step = (width - LEFT - pad) / max(n - 1, 1)
    return [(LEFT + i * step, pad + (height - 2 * pad) * (1 - min(max(v, 0.0), top) / top))
            for i, v in enumerate(values)]


def _path(points: list[tuple[float, float]]) -> str:
    return " ".join(f"{'M' if i == 0 else 'L'}{x:.1f},{y:.1f}" for i, (x, y) in enumerate(points))


def load_chart(cpu: Sequence[float], memory: Sequence[float], *, title: str, width: int = 360,
               height: int = 120) -> Markup:
    """CPU and memory percentages over the last reports, 0-100 %, newest on the right."""
    pad = 18.0
    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
             f"<title>{escape(title)}</title>"]
    for pct in (0, 50, 100):
        y = pad + (height - 2 * pad) * (1 - pct / 100)
        parts.append(f'<line class="grid-line" x1="{LEFT}" x2="{width - pad}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text class="axis" x="{LEFT - 4}" y="{y + 3:.1f}" text-anchor="end">{pct}%</text>')
    if len(cpu) >= 1:
        cpu_pts = _points(list(cpu) if len(cpu) > 1 else [cpu[0], cpu[0]], width, height, pad, 100.0)
        area = _path(cpu_pts) + f" L{cpu_pts[-1][0]:.1f},{height - pad} L{cpu_pts[0][0]:.1f},{height - pad} Z"
        parts.append(f'<path class="cpu-area" d="{area}"/>')
        parts.append(f'<path class="cpu" d="{_path(cpu_pts)}"/>')
    if len(memory) >= 1:
        mem_pts = _points(list(memory) if len(memory) > 1 else [memory[0], memory[0]], width, height, pad, 100.0)
        parts.append(f'<path class="mem" d="{_path(mem_pts)}"/>')
    if not cpu and not memory:
        parts.append(f'<text class="axis" x="{width / 2 - 40}" y="{height / 2}">no load reports yet</text>')
    parts.append("</svg>")
    return Markup("".join(parts))

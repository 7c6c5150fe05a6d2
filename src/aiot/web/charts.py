"""Small server-side SVG charts (no JavaScript chart library to vendor, nothing to break in the console)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape

from markupsafe import Markup

LEFT = 38.0  # room for the axis labels


def _path(points: list[tuple[float, float]]) -> str:
    return " ".join(f"{'M' if i == 0 else 'L'}{x:.1f},{y:.1f}" for i, (x, y) in enumerate(points))


def load_chart(
    samples: Sequence[tuple[datetime, float, float]], *, title: str, width: int = 360, height: int = 130
) -> Markup:
    """CPU and memory percentages (0-100 %) of the recent reports against their times: UTC HH:MM:SS of the first
    and the last report under the plot, so a gap in the reports shows as a gap in time."""
    pad, bottom = 14.0, 20.0
    plot_w, plot_h = width - LEFT - pad, height - pad - bottom
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
    ]
    for pct in (0, 50, 100):
        y = pad + plot_h * (1 - pct / 100)
        parts.append(f'<line class="grid-line" x1="{LEFT}" x2="{width - pad}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text class="axis" x="{LEFT - 4}" y="{y + 3:.1f}" text-anchor="end">{pct}%</text>')
    if not samples:
        parts.append(f'<text class="axis" x="{width / 2 - 40}" y="{height / 2}">no load reports yet</text>')
        parts.append("</svg>")
        return Markup("".join(parts))
    start, end = samples[0][0], samples[-1][0]
    span = max((end - start).total_seconds(), 1.0)

    def xy(when: datetime, pct: float) -> tuple[float, float]:
        x = LEFT + plot_w * ((when - start).total_seconds() / span if len(samples) > 1 else 0.5)
        return x, pad + plot_h * (1 - min(max(pct, 0.0), 100.0) / 100)

    cpu = [xy(at, c) for at, c, _ in samples]
    mem = [xy(at, m) for at, _, m in samples]
    base = pad + plot_h
    area = _path(cpu) + f" L{cpu[-1][0]:.1f},{base} L{cpu[0][0]:.1f},{base} Z"
    parts += [f'<path class="cpu-area" d="{area}"/>', f'<path class="cpu" d="{_path(cpu)}"/>']
    parts.append(f'<path class="mem" d="{_path(mem)}"/>')
    for anchor, at, x in (("start", start, LEFT), ("end", end, width - pad)):
        label = at.astimezone(UTC).strftime("%H:%M:%S")
        parts.append(f'<text class="axis" x="{x:.1f}" y="{height - 5}" text-anchor="{anchor}">{label}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def series_chart(
    points: Sequence[tuple[datetime, float]],
    *,
    start: datetime,
    end: datetime,
    title: str,
    unit: str = "",
    width: int = 640,
    height: int = 180,
) -> Markup:
    """One numeric field of a device over [start, end]: a line with a time axis (local labels are the
    browser's job; these are UTC HH:MM, or dates for windows over two days) and the value range on the left.
    Every point is a circle with its time and value as a tooltip, so a reader can check a value exactly."""
    pad, bottom = 14.0, 22.0
    span = max((end - start).total_seconds(), 1.0)
    values = [v for _, v in points]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    if high - low < 1e-9:
        low, high = low - 1.0, high + 1.0
    plot_w, plot_h = width - LEFT - pad, height - pad - bottom

    def xy(when: datetime, value: float) -> tuple[float, float]:
        x = LEFT + plot_w * min(max((when - start).total_seconds() / span, 0.0), 1.0)
        return x, pad + plot_h * (1 - (value - low) / (high - low))

    parts = [
        f'<svg class="chart series" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}" '
        f'data-points="{len(points)}">',
        f"<title>{escape(title)}</title>",
    ]
    for value in (low, (low + high) / 2, high):
        _, y = xy(start, value)
        parts.append(f'<line class="grid-line" x1="{LEFT}" x2="{width - pad}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text class="axis" x="{LEFT - 4}" y="{y + 3:.1f}" text-anchor="end">{value:.4g}</text>')
    label = "%m-%d %H:%M" if span > 2 * 86400 else "%H:%M"
    for fraction in (0.0, 0.5, 1.0):
        when = start + (end - start) * fraction
        x = LEFT + plot_w * fraction
        anchor = "start" if fraction == 0 else "end" if fraction == 1 else "middle"
        parts.append(
            f'<text class="axis" x="{x:.1f}" y="{height - 6}" text-anchor="{anchor}">'
            f"{when.astimezone(UTC):{label}}</text>"
        )
    if points:
        xys = [xy(when, value) for when, value in points]
        parts.append(f'<path class="cpu" d="{_path(xys)}"/>')
        for (when, value), (x, y) in zip(points, xys, strict=True):
            parts.append(
                f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="2"><title>'
                f"{when.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC: {value:g}{escape(unit)}</title></circle>"
            )
    else:
        parts.append(f'<text class="axis" x="{width / 2 - 60}" y="{height / 2}">no readings in this window</text>')
    parts.append("</svg>")
    return Markup("".join(parts))

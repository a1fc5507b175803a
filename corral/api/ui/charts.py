"""Inline SVG for the dashboard: a VM-state bar, a line chart over time and a histogram.

Pure functions from numbers to markup-safe SVG text (every number is formatted by this module, no
caller text enters the markup except state names, which are escaped). No I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

from corral.pools.lifecycle import VMState

STATE_COLOURS = {
    VMState.SPAWNING.value: "#8a5a00",
    VMState.READY.value: "#1a7f37",
    VMState.IN_USE.value: "#0550ae",
    VMState.RELEASING.value: "#6e40c9",
    VMState.HELD.value: "#9a6700",
    VMState.TERMINATING.value: "#a40e26",
    VMState.TERMINATED.value: "#57606a",
    VMState.FAILED.value: "#cf222e",
    VMState.FORGOTTEN.value: "#6e7781",
}
"""One colour per VM state, dark enough for white text (WCAG AA on white backgrounds too)."""

SERIES_COLOURS = {
    VMState.READY.value: "#1a7f37",
    VMState.IN_USE.value: "#0550ae",
    VMState.SPAWNING.value: "#8a5a00",
}


def state_bar(counts: Mapping[str, int], *, width: int = 320, height: int = 18) -> str:
    """A horizontal bar with one segment per VM state, proportional to its count."""
    shown = [(s, counts.get(s, 0)) for s in STATE_COLOURS if counts.get(s, 0) > 0]
    total = sum(n for _, n in shown)
    label = ", ".join(f"{n} {s}" for s, n in shown) or "no VMs"
    parts = [
        f'<svg class="bar" role="img" aria-label="{escape(label)}" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}">',
        f'<rect width="{width}" height="{height}" fill="#eaeef2"/>',
    ]
    x = 0.0
    for state, n in shown:
        w = width * n / total
        parts.append(
            f'<rect x="{x:.1f}" width="{w:.1f}" height="{height}" '
            f'fill="{STATE_COLOURS[state]}"><title>{n} {escape(state)}</title></rect>'
        )
        x += w
    parts.append("</svg>")
    return "".join(parts)


def line_chart(
    points: Sequence[tuple[float, Mapping[str, int]]],
    *,
    span: float = 3600.0,
    width: int = 320,
    height: int = 80,
) -> str:
    """Lines of ready, in-use and spawning VMs over the last ``span`` seconds of ``points``
    (``(at, counts)``, oldest first); the right edge is the latest point."""
    if not points:
        return '<p class="muted">no samples yet</p>'
    end = points[-1][0]
    top = max([1] + [max(c.get(s, 0) for s in SERIES_COLOURS) for _, c in points])
    parts = [
        f'<svg class="chart" role="img" aria-label="ready, in use and spawning VMs over the last '
        f'{span / 60:.0f} minutes, at most {top}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">',
        f'<rect width="{width}" height="{height}" fill="#f6f8fa"/>',
    ]
    for series, colour in SERIES_COLOURS.items():
        coords = []
        for at, counts in points:
            x = width * (1 - (end - at) / span)
            y = height - 2 - (height - 4) * counts.get(series, 0) / top
            coords.append(f"{max(0.0, x):.1f},{y:.1f}")
        if len(coords) == 1:
            coords.insert(0, f"0,{coords[0].split(',')[1]}")
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2" '
            f'points="{" ".join(coords)}"><title>{series}</title></polyline>'
        )
    parts.append("</svg>")
    parts.append(_axis(width, f"{span / 60:.0f} min ago", f"now · at most {top} VMs"))
    return "".join(parts)


def histogram(
    values: Sequence[float], *, bins: int = 12, width: int = 320, height: int = 60
) -> str:
    """A histogram of ``values`` (spawn times in seconds) in ``bins`` equal bins."""
    if not values:
        return '<p class="muted">no spawn times yet</p>'
    low, high = min(values), max(values)
    step = (high - low) / bins or 1.0
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, int((v - low) / step))] += 1
    top = max(counts)
    bar = width / bins
    parts = [
        f'<svg class="hist" role="img" aria-label="spawn times from {low:.1f} s to {high:.1f} s, '
        f'{len(values)} samples" width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
    ]
    for i, n in enumerate(counts):
        h = (height - 2) * n / top
        start = low + i * step
        parts.append(
            f'<rect x="{i * bar + 1:.1f}" y="{height - h:.1f}" width="{bar - 2:.1f}" '
            f'height="{h:.1f}" fill="#0550ae"><title>{n} between {start:.1f} s and '
            f"{start + step:.1f} s</title></rect>"
        )
    parts.append("</svg>")
    parts.append(_axis(width, _seconds(low), f"{_seconds(high)} · {len(values)} spawns"))
    return "".join(parts)


def _seconds(value: float) -> str:
    """Seconds for an axis: hundredths below one second (a script pool spawns in 0.01 s)."""
    return f"{value:.2f} s" if value < 1 else f"{value:.1f} s"


def _axis(width: int, left: str, right: str) -> str:
    """The visible ends of a chart's horizontal axis (the SVG's label says the same to a screen
    reader, so this line is hidden from it)."""
    return (
        f'<p class="axis" aria-hidden="true" style="width: {width}px">'
        f"<span>{left}</span><span>{right}</span></p>"
    )

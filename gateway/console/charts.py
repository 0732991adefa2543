"""Server-rendered SVG bar charts: no JavaScript, readable by screen readers (a title, a
description and one labelled element per bar), always shown next to a table of the numbers."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from markupsafe import Markup, escape

WIDTH = 720
HEIGHT = 220
MARGIN_LEFT = 70
MARGIN_BOTTOM = 40
MARGIN_TOP = 16


def bar_chart(
    title: str,
    points: Sequence[tuple[str, int]],
    value_label: Callable[[int], str] = str,
) -> Markup:
    """One bar per (label, value); labels are days or models, values integers."""
    plot_width = WIDTH - MARGIN_LEFT - 10
    plot_height = HEIGHT - MARGIN_BOTTOM - MARGIN_TOP
    top = max((value for _, value in points), default=0) or 1
    slot = plot_width / max(len(points), 1)
    bar_width = max(slot * 0.7, 1.0)
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="{_id(title)}-title" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{_id(title)}-title">{escape(title)}</title>',
        f'<line x1="{MARGIN_LEFT}" y1="{MARGIN_TOP + plot_height}" x2="{WIDTH - 10}" '
        f'y2="{MARGIN_TOP + plot_height}" class="axis"/>',
        f'<text x="{MARGIN_LEFT - 6}" y="{MARGIN_TOP + 10}" class="tick" text-anchor="end">'
        f"{escape(value_label(top))}</text>",
        f'<text x="{MARGIN_LEFT - 6}" y="{MARGIN_TOP + plot_height}" class="tick" '
        'text-anchor="end">0</text>',
    ]
    if not points:
        parts.append(
            f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" class="tick" text-anchor="middle">'
            "No usage in this range</text>"
        )
    label_every = max(1, len(points) // 10)
    for index, (label, value) in enumerate(points):
        height = plot_height * value / top
        x = MARGIN_LEFT + index * slot + (slot - bar_width) / 2
        y = MARGIN_TOP + plot_height - height
        parts.append(
            f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{bar_width:.1f}" '
            f'height="{height:.1f}"><title>{escape(label)}: {escape(value_label(value))}'
            "</title></rect>"
        )
        if index % label_every == 0:
            parts.append(
                f'<text x="{x + bar_width / 2:.1f}" y="{HEIGHT - MARGIN_BOTTOM + 16}" '
                f'class="tick" text-anchor="middle">{escape(label[-5:])}</text>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))


def _id(title: str) -> str:
    return "chart-" + "".join(char if char.isalnum() else "-" for char in title.lower())

"""A read-only HTML portfolio page: segment mix over time, transitions, experiments.

One self-contained HTML string (inline SVG and CSS, no script, no external resources), so
``demo`` can write it as a file and the worker can serve it as is. Aggregates only: no
debtor appears on the page.

>>> html = render_page("Demo", [("2026-01", {"tamara": 3, "job": 1})], [("2026-01", {"willing_able": 4})],
...                    {"tamara": {"tamara": 0.9, "job": 0.1}}, None)
>>> html.startswith("<!DOCTYPE html>") and 'id="mix"' in html and 'id="transitions"' in html
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

__all__ = ["COLOURS", "render_page"]

#: One colour per persona and quadrant (unknown grey); the page's legend uses the same.
COLOURS: dict[str, str] = {
    "tamara": "#d62728",
    "bryan": "#ff7f0e",
    "job": "#2ca02c",
    "saida": "#1f77b4",
    "hendrik-jan": "#9467bd",
    "willing_able": "#2ca02c",
    "willing_unable": "#17becf",
    "unwilling_able": "#d62728",
    "unwilling_unable": "#ff7f0e",
    "unknown": "#999999",
}
_ARM_COLOURS = ("#1f77b4", "#e377c2", "#8c564b", "#bcbd22", "#7f7f7f", "#17becf", "#2ca02c", "#d62728")


def _stacked(element_id: str, series: Sequence[tuple[str, Mapping[str, int]]], labels: Sequence[str]) -> str:
    """Stacked 100% bars, one per period."""
    width, height, left, bottom = 640, 220, 40, 30
    n = max(1, len(series))
    bar = (width - left) / n
    parts = [f'<svg id="{element_id}" width="{width}" height="{height + bottom}" role="img" aria-label="{element_id}">']
    for i, (period, counts) in enumerate(series):
        total = sum(counts.values()) or 1
        y = float(height)
        for label in labels:
            h = height * counts.get(label, 0) / total
            if h > 0:
                y -= h
                parts.append(
                    f'<rect x="{left + i * bar + 1:.1f}" y="{y:.1f}" width="{max(bar - 2, 1):.1f}" height="{h:.1f}" fill="{COLOURS.get(label, "#999")}">'
                    f"<title>{escape(period)} {escape(label)}: {counts.get(label, 0)} ({counts.get(label, 0) / total:.1%})</title></rect>"
                )
        if n <= 24:
            parts.append(f'<text x="{left + (i + 0.5) * bar:.1f}" y="{height + 16}" font-size="10" text-anchor="middle">{escape(period)}</text>')
    for share in (0, 50, 100):
        parts.append(f'<text x="{left - 4}" y="{height - height * share / 100 + 4:.1f}" font-size="10" text-anchor="end">{share}%</text>')
    parts.append("</svg>")
    legend = " ".join(f'<span class="key"><i style="background:{COLOURS.get(label, "#999")}"></i>{escape(label)}</span>' for label in labels)
    return "".join(parts) + f'<div class="legend">{legend}</div>'


def _heat(shares: Mapping[str, Mapping[str, float]]) -> str:
    """The transition matrix as a table whose cells are shaded by their row share."""
    columns = list(dict.fromkeys(col for row in shares.values() for col in row))
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    rows = []
    for row, cells in shares.items():
        tds = []
        for col in columns:
            value = cells.get(col, 0.0)
            # White to dark blue by share; text turns white on dark cells.
            shade = int(255 - 200 * value)
            colour = f"rgb({shade},{shade},255)" if value < 0.999 else "rgb(30,30,200)"
            text = "#fff" if value > 0.6 else "#000"
            tds.append(f'<td style="background:{colour};color:{text}">{value:.1%}</td>')
        rows.append(f"<tr><th>{escape(row)}</th>{''.join(tds)}</tr>")
    return f'<table id="transitions" class="heat"><tr><th>from \\ to</th>{head}</tr>{"".join(rows)}</table>'


def _experiment(experiment_id: str, body: Mapping[str, Any]) -> str:
    """Each arm's collected share at 30/60/90 days with its 95% interval, as an interval plot."""
    arms = body["segments"]["all"]
    width, row_h, left = 640, 22, 170
    lines = [(arm, h) for arm in arms for h in (30, 60, 90)]
    height = row_h * len(lines) + 30
    parts = [f'<svg class="experiment" id="experiment-{escape(experiment_id)}" width="{width}" height="{height}" role="img">']
    scale = (width - left - 20) / 1.0
    for tick in (0, 0.25, 0.5, 0.75, 1.0):
        x = left + tick * scale
        parts.append(f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{height - 20}" stroke="#ddd"/>')
        parts.append(f'<text x="{x:.1f}" y="{height - 6}" font-size="10" text-anchor="middle">{tick:.0%}</text>')
    for i, (arm, h) in enumerate(lines):
        figures = arms[arm][f"d{h}"]
        colour = _ARM_COLOURS[list(arms).index(arm) % len(_ARM_COLOURS)]
        y = 10 + i * row_h
        lo, hi = figures["collected_share_ci95"]
        share = figures["collected_share"]
        parts.append(f'<text x="4" y="{y + 4}" font-size="11">{escape(arm)} d{h} (n={figures["debtors"]})</text>')
        if figures["debtors"]:
            parts.append(f'<line x1="{left + lo * scale:.1f}" y1="{y}" x2="{left + hi * scale:.1f}" y2="{y}" stroke="{colour}" stroke-width="4"/>')
            parts.append(f'<circle cx="{left + share * scale:.1f}" cy="{y}" r="5" fill="{colour}"><title>{share:.1%} [{lo:.1%}, {hi:.1%}]</title></circle>')
    parts.append("</svg>")
    decision = body["decision"]
    verdict = escape(decision["decision"]) + (f": {escape(str(decision['winner']))} after {decision['days']} days" if decision.get("winner") else "")
    return (
        f"<h3>{escape(experiment_id)} <small>({escape(body['segment'])}, {escape(body['mode'])}, "
        f'{body["horizon_days"]}-day {escape(body["metric"])})</small></h3><p class="decision">Decision: {verdict}</p>' + "".join(parts)
    )


def render_page(
    title: str,
    persona_mix: Sequence[tuple[str, Mapping[str, int]]],
    quadrant_mix: Sequence[tuple[str, Mapping[str, int]]],
    transitions: Mapping[str, Mapping[str, float]],
    experiments: Mapping[str, Any] | None,
    *,
    personas: Sequence[str] = ("tamara", "bryan", "job", "saida", "hendrik-jan", "unknown"),
    quadrants: Sequence[str] = ("willing_able", "willing_unable", "unwilling_able", "unwilling_unable", "unknown"),
) -> str:
    """The whole page; ``experiments`` is an :meth:`ExperimentBook.report` (or None)."""
    sections = [
        "<h2>Persona mix over time</h2>" + _stacked("mix", persona_mix, personas),
        "<h2>Quadrant mix over time</h2>" + _stacked("quadrants", quadrant_mix, quadrants),
        "<h2>Persona transitions (row shares)</h2>" + _heat(transitions),
    ]
    if experiments:
        body = "".join(_experiment(eid, exp) for eid, exp in experiments.get("experiments", {}).items())
        sections.append(f"<h2>Experiments <small>(policy {escape(str(experiments.get('policy_version', '')))})</small></h2>{body}")
    style = (
        "body{font-family:sans-serif;margin:24px;color:#222}h2{margin-top:28px}"
        ".legend{font-size:12px;margin:4px 0 0 40px}.key{margin-right:12px}.key i{display:inline-block;width:10px;height:10px;margin-right:4px}"
        ".heat td,.heat th{padding:4px 8px;font-size:12px;text-align:right;border:1px solid #eee}small{color:#666;font-weight:normal}"
    )
    return f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title><style>{style}</style></head><body><h1>{escape(title)}</h1>{"".join(sections)}</body></html>'

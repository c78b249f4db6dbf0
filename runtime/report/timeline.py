"""A Gantt chart of runs as one self-contained HTML file (inline SVG, no scripts, no network):
one lane per step, coloured by phase; retried steps are hatched and labelled with their
attempts and 429s."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

from chainray.results import RunResult

__all__ = ["timeline_html", "write_timeline"]

_COLOURS = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1",
            "#ff9da7", "#9c755f", "#bab0ac")
_LANE, _LEFT, _WIDTH = 22, 150, 760


def _chart(result: RunResult) -> str:
    steps = [s for s in result.steps if s.started_at]
    if not steps:
        return f"<p>{html.escape(result.strategy)}: no step ran</p>"
    start = min(s.started_at for s in steps)
    span = max(max(s.finished_at for s in steps) - start, 1e-6)
    phase_of = {sid: i for i, phase in enumerate(result.phases) for sid in phase}
    height = _LANE * len(steps) + 30
    parts = [f'<svg width="{_LEFT + _WIDTH + 20}" height="{height}" '
             'xmlns="http://www.w3.org/2000/svg" font-family="sans-serif" font-size="12">',
             '<defs><pattern id="retry" width="6" height="6" patternUnits="userSpaceOnUse" '
             'patternTransform="rotate(45)"><rect width="3" height="6" fill="#000" '
             'fill-opacity="0.35"/></pattern></defs>']
    for lane, step in enumerate(sorted(steps, key=lambda s: s.started_at)):
        y = lane * _LANE + 4
        x = _LEFT + (step.started_at - start) / span * _WIDTH
        w = max(1.0, (step.finished_at - step.started_at) / span * _WIDTH)
        colour = "#999" if step.status != "ok" else _COLOURS[phase_of.get(step.id, 0) % 10]
        label = f"{step.latency_ms / 1000:.2f}s"
        if step.attempts > 1 or step.rate_limited:
            label += f", {step.attempts} attempts, {step.rate_limited}x429"
        tip = html.escape(f"{step.id}: {step.status}, phase {phase_of.get(step.id, 0) + 1}, "
                          f"{label}" + (f", {step.error}" if step.error else ""))
        parts.append(f'<text x="4" y="{y + 13}">{html.escape(step.id)}</text>')
        parts.append(f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="16" fill="{colour}">'
                     f"<title>{tip}</title></rect>")
        if step.attempts > 1 or step.rate_limited:
            parts.append(f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="16" '
                         'fill="url(#retry)"/>')
        parts.append(f'<text x="{min(x + w + 4, _LEFT + _WIDTH - 60):.1f}" y="{y + 13}" '
                     f'fill="#333">{html.escape(label)}</text>')
    axis_y = _LANE * len(steps) + 20
    parts.append(f'<text x="{_LEFT}" y="{axis_y}">0s</text><text x="{_LEFT + _WIDTH - 40}" '
                 f'y="{axis_y}">{span:.2f}s</text></svg>')
    return "\n".join(parts)


def timeline_html(results: Sequence[RunResult]) -> str:
    sections = []
    for result in results:
        sections.append(
            f"<h2>{html.escape(result.scenario)} / {html.escape(result.strategy)} "
            f"<small>run {html.escape(result.run_id)}: {result.latency_ms / 1000:.2f}s, "
            f"{result.total_tokens} tokens, {result.api_calls} calls, "
            f"{result.rate_limited} 429s</small></h2>\n{_chart(result)}")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>chainray timeline</title>"
            "<style>body{font-family:sans-serif;margin:20px}small{color:#666;"
            "font-weight:normal}</style></head><body><h1>chainray timeline</h1>"
            "<p>One lane per step, coloured by phase; hatched bars were retried "
            "(attempts and 429 waits in the label); grey bars failed.</p>\n"
            + "\n".join(sections) + "</body></html>\n")


def write_timeline(path: str, results: Sequence[RunResult]) -> None:
    Path(path).write_text(timeline_html(results), encoding="utf-8")

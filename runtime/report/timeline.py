"""Pictures of runs over time.

``timeline_html``: a Gantt chart of one or more runs as one self-contained HTML file (inline
SVG, no scripts, no network). Every run is drawn on ONE shared time axis (each run starts at
zero, all on the same scale), so strategies and runs compare by eye. One lane per step; each
bar is split per attempt (``StepResult.attempt_log``) into the time queued for a rate-limit
permit (light grey), in flight (coloured by phase; a failed attempt hatched and ending in a
tick taller than the bar, red for a 429, black for another error; the part before the first
token darker when streaming measured it) and the retry backoff before the next attempt (pale
orange). Results without per-attempt times (older JSON) split the bar into queued and in
flight only. Steps that met 429s have a red outline. Steps on the run's measured critical
path have a thick dark outline, and each dependency is a line from the end of the upstream
bar to the start of the step that waited for it.

``trace_json`` (``chainray.report.trace``, re-exported here): the same runs as Chrome Trace
Event JSON.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

from chainray.report.run_steps import backoff_s, critical_path, outcomes
from chainray.report.trace import trace_json, write_trace
from chainray.results import Attempt, RunResult, StepResult

__all__ = ["timeline_html", "write_timeline", "trace_json", "write_trace", "critical_path",
           "backoff_s"]

_COLOURS = ("#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#e15759",
            "#ff9da7", "#9c755f", "#bab0ac")
_LANE, _BAR, _CHART = 24, 16, 820
_CHAR = 7.2  # px per character of 12px sans-serif, generous
_QUEUED, _FAILED, _CRITICAL, _RETRY_429 = "#d9d9d9", "#999999", "#222222", "#d62728"
_BACKOFF = "#fbd9a5"


def _label(step: StepResult) -> str:
    text = f"{step.latency_ms / 1000:.2f}s"
    waits = [f"queued {step.queued_ms / 1000:.2f}s"] if step.queued_ms >= 1 else []
    if backoff_s(step) >= 1e-3:
        waits.append(f"backoff {backoff_s(step):.2f}s")
    if waits:
        text += f" ({', '.join(waits)})"
    if step.attempts > 1:
        text += f", {step.attempts} attempts"
        if len(step.attempt_log) > 1:
            text += f": {outcomes(step)}"
    if step.cached_tokens:
        text += f", {step.cached_tokens} of {step.prompt_tokens} prompt tokens cached"
    if step.rate_limited and len(step.attempt_log) <= 1:  # else the outcomes name each 429
        text += f", {step.rate_limited} rate-limited (429)"
    if step.status != "ok":
        text += f", {step.status}"
    return text


def _run_svg(result: RunResult, span: float, left: float, right: float) -> str:
    steps = sorted((s for s in result.steps if s.started_at), key=lambda s: s.started_at)
    if not steps:
        return f"<p>{html.escape(result.strategy)}: no step ran</p>"
    t0 = steps[0].started_at
    phase_of = {sid: i for i, phase in enumerate(result.phases) for sid in phase}
    lane = {s.id: i for i, s in enumerate(steps)}
    path = critical_path(result)
    on_path, path_edges = set(path), set(zip(path, path[1:], strict=False))
    height = _LANE * len(steps) + 8

    def x(t: float) -> float:
        return left + (t - t0) / span * _CHART

    parts = [f'<svg width="{left + _CHART + right:.0f}" height="{height}" '
             'xmlns="http://www.w3.org/2000/svg" font-family="sans-serif" font-size="12">',
             '<defs><pattern id="retry" width="6" height="6" patternUnits="userSpaceOnUse" '
             'patternTransform="rotate(45)"><rect width="2" height="6" fill="#000" '
             'fill-opacity="0.35"/></pattern><marker id="arrow" markerWidth="6" '
             'markerHeight="6" refX="5" refY="3" orient="auto"><path d="M0,0 L6,3 L0,6 z" '
             'fill="#555"/></marker></defs>']
    for tick in _ticks(span):
        parts.append(f'<line x1="{x(t0 + tick):.1f}" x2="{x(t0 + tick):.1f}" y1="0" '
                     f'y2="{height}" stroke="#eee"/>')
    for step in steps:
        for dep in step.depends_on:
            if dep not in lane:
                continue
            before = next(s for s in steps if s.id == dep)
            x1, y1 = x(before.finished_at), lane[dep] * _LANE + 4 + _BAR
            x2, y2 = x(step.started_at), lane[step.id] * _LANE + 4
            critical = (dep, step.id) in path_edges
            parts.append(f'<path d="M{x1:.1f},{y1} C{x1:.1f},{y2 - 4} {x2:.1f},{y1 + 4} '
                         f'{x2:.1f},{y2}" fill="none" stroke="{"#222" if critical else "#888"}"'
                         f' stroke-width="{1.5 if critical else 0.8}" '
                         f'stroke-dasharray="{"" if critical else "3,2"}" '
                         'marker-end="url(#arrow)"/>')
    for step in steps:
        y = lane[step.id] * _LANE + 4
        start, end = x(step.started_at), x(step.finished_at)
        colour = _FAILED if step.status != "ok" else _COLOURS[phase_of.get(step.id, 0) % 10]
        tip = html.escape(f"{step.id}: {step.status}, phase {phase_of.get(step.id, 0) + 1}, "
                          f"{_label(step)}" + (f", {step.error}" if step.error else ""))
        weight = ' font-weight="bold"' if step.id in on_path else ""
        parts.append(f'<text x="{left - 8}" y="{y + 12}" text-anchor="end"{weight}>'
                     f"{html.escape(step.id)}</text>")
        if step.attempt_log:
            parts.extend(_attempt_bars(step, x, y, colour, tip, span))
        else:
            parts.extend(_step_bar(step, x, y, colour, tip, span))
        outline = _RETRY_429 if step.rate_limited else _CRITICAL if step.id in on_path else ""
        if outline:
            parts.append(f'<rect x="{start:.1f}" y="{y}" width="{max(1.0, end - start):.1f}" '
                         f'height="{_BAR}" fill="none" stroke="{outline}" '
                         f'stroke-width="{2.5 if step.id in on_path else 1.5}"/>')
        parts.append(f'<text x="{end + 5:.1f}" y="{y + 12}" fill="#333" stroke="#fff" '
                     'stroke-width="3" paint-order="stroke">'
                     f"{html.escape(_label(step))}</text>")
    parts.append("</svg>")
    return "\n".join(parts)


def _rect(x0: float, x1: float, y: float, fill: str, tip: str = "") -> str:
    title = f"<title>{tip}</title>" if tip else ""
    return (f'<rect x="{x0:.1f}" y="{y}" width="{max(1.0, x1 - x0):.1f}" height="{_BAR}" '
            f'fill="{fill}">{title}</rect>')


def _step_bar(step: StepResult, x, y: float, colour: str, tip: str, span: float) -> list[str]:
    """A step without per-attempt times: queued (all attempts together), then in flight."""
    start, end = x(step.started_at), x(step.finished_at)
    queued_end = min(end, x(step.started_at + step.queued_ms / 1000))
    parts = [_rect(start, queued_end, y, _QUEUED, tip)] if queued_end > start else []
    parts.append(_rect(queued_end, end, y, colour, tip))
    if step.ttft_ms:
        first = min(end, queued_end + step.ttft_ms / 1000 / span * _CHART)
        parts.append(f'<rect x="{queued_end:.1f}" y="{y}" width="{first - queued_end:.1f}"'
                     f' height="{_BAR}" fill="#000" fill-opacity="0.25"/>')
    if step.attempts > 1:
        parts.append(f'<rect x="{queued_end:.1f}" y="{y}" width="{max(1.0, end - queued_end):.1f}"'
                     f' height="{_BAR}" fill="url(#retry)"/>')
    return parts


def _attempt_bars(step: StepResult, x, y: float, colour: str, tip: str,
                  span: float) -> list[str]:
    """Per attempt: backoff since the previous one, queued for its permit, in flight."""
    parts: list[str] = []
    previous: Attempt | None = None
    for number, attempt in enumerate(step.attempt_log, 1):
        what = html.escape(f"{step.id} attempt {number}: {_attempt_text(attempt)}")
        if previous is not None and attempt.queued_at > previous.finished_at:
            wait = attempt.queued_at - previous.finished_at
            parts.append(_rect(x(previous.finished_at), x(attempt.queued_at), y, _BACKOFF,
                               html.escape(f"{step.id}: retry backoff {wait:.2f}s")))
        if attempt.sent_at > attempt.queued_at:
            parts.append(_rect(x(attempt.queued_at), x(attempt.sent_at), y, _QUEUED,
                               f"{what} (queued {attempt.sent_at - attempt.queued_at:.2f}s)"))
        sent, done = x(attempt.sent_at), x(attempt.finished_at)
        parts.append(_rect(sent, done, y, colour, f"{what}; {tip}"))
        if attempt.outcome != "ok":
            parts.append(f'<rect x="{sent:.1f}" y="{y}" width="{max(1.0, done - sent):.1f}" '
                         f'height="{_BAR}" fill="url(#retry)"/>')
        if attempt.outcome != "ok":  # a tick taller than the bar: visible however short
            tick = _RETRY_429 if attempt.outcome == "rate_limited" else _CRITICAL
            parts.append(f'<rect x="{max(sent, done - 3):.1f}" y="{y - 3}" width="3" '
                         f'height="{_BAR + 6}" fill="{tick}"><title>{what}</title></rect>')
        if attempt.outcome == "ok" and step.ttft_ms and number == len(step.attempt_log):
            first = min(done, sent + step.ttft_ms / 1000 / span * _CHART)
            parts.append(f'<rect x="{sent:.1f}" y="{y}" width="{first - sent:.1f}" '
                         f'height="{_BAR}" fill="#000" fill-opacity="0.25"/>')
        previous = attempt
    return parts


def _attempt_text(attempt: Attempt) -> str:
    outcome = {"rate_limited": "429", "ok": "answered"}.get(attempt.outcome, attempt.outcome)
    code = f" ({attempt.code})" if attempt.code and attempt.outcome == "error" else ""
    return f"{outcome}{code} after {attempt.finished_at - attempt.sent_at:.2f}s in flight"


def _ticks(span: float) -> list[float]:
    step = next((s for s in (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800)
                 if span / s <= 12), 3600.0)
    return [i * step for i in range(int(span / step) + 1)]


def _run_span(result: RunResult) -> float:
    ran = [s for s in result.steps if s.started_at]
    if not ran:
        return 0.0
    return max(s.finished_at for s in ran) - min(s.started_at for s in ran)


def _axis(span: float, left: float, right: float) -> str:
    ticks = _ticks(span)
    parts = [f'<svg width="{left + _CHART + right:.0f}" height="24" '
             'xmlns="http://www.w3.org/2000/svg" font-family="sans-serif" font-size="11">',
             f'<line x1="{left}" x2="{left + _CHART}" y1="4" y2="4" stroke="#333"/>']
    for tick in ticks:
        px = left + tick / span * _CHART
        parts.append(f'<line x1="{px:.1f}" x2="{px:.1f}" y1="0" y2="8" stroke="#333"/>'
                     f'<text x="{px:.1f}" y="20" text-anchor="middle">{tick:g}s</text>')
    parts.append("</svg>")
    return "".join(parts)


_LEGEND = (
    f'<span class="key" style="background:{_QUEUED}"></span> queued for a rate-limit permit '
    f'&nbsp; <span class="key" style="background:{_COLOURS[0]}"></span> in flight (colour: '
    'phase; darker start: time to first token, when streamed) &nbsp; '
    '<span class="key hatch"></span> a failed attempt in flight, ending in a tick: '
    f'<span class="tick" style="background:{_RETRY_429}"></span> 429, '
    f'<span class="tick" style="background:{_CRITICAL}"></span> other error &nbsp; '
    f'<span class="key" style="background:{_BACKOFF}"></span> retry backoff &nbsp; '
    f'<span class="key" style="border:2px solid {_RETRY_429}"></span> step met 429s (count in '
    f'the label) &nbsp; <span class="key" style="border:2.5px solid {_CRITICAL}"></span> '
    'critical path (bold name) &nbsp; arrows: dependencies. Labels: duration (time queued, '
    'time in backoff), attempts and their outcomes.')


def timeline_html(results: Sequence[RunResult]) -> str:
    ran = [s for r in results for s in r.steps if s.started_at]
    span = max([_run_span(r) for r in results] + [1e-3])
    longest_id = max((len(s.id) for r in results for s in r.steps), default=4)
    longest_label = max((len(_label(s)) for s in ran), default=10)
    left, right = 16 + longest_id * _CHAR, 16 + longest_label * _CHAR
    axis = _axis(span, left, right)
    sections = []
    for result in results:
        path = critical_path(result)
        sections.append(
            f"<h2>{html.escape(result.scenario)} / {html.escape(result.strategy)} "
            f"<small>run {html.escape(result.run_id)}: {result.latency_ms / 1000:.2f}s, "
            f"{result.total_tokens} tokens"
            + (f" ({result.cached_tokens} cached)" if result.cached_tokens else "")
            + f", {result.api_calls} calls, {result.retries} retries, "
            f"{result.rate_limited} rate-limited (429), queued "
            f"{result.queued_ms / 1000:.2f}s; critical path "
            f"{html.escape(' → '.join(path))}</small></h2>\n"
            f"{_run_svg(result, span, left, right)}")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>chainray timeline</title>"
            "<style>body{font-family:sans-serif;margin:20px}small{color:#555;"
            "font-weight:normal;font-size:13px}h2{font-size:16px;margin:18px 0 4px}"
            ".key{display:inline-block;width:14px;height:12px;vertical-align:middle;"
            "box-sizing:border-box}.tick{display:inline-block;width:3px;height:18px;"
            "vertical-align:middle}.hatch{background:repeating-linear-gradient(45deg,#4e79a7,"
            "#4e79a7 3px,#27405a 3px,#27405a 5px)}.legend{font-size:13px;line-height:1.8}"
            "</style></head><body><h1>chainray timeline</h1>"
            f"<p class='legend'>{_LEGEND}</p>"
            "<p>All runs share one time axis: each run starts at 0 s, on the same scale, so bar "
            "lengths compare across strategies and runs.</p>\n"
            f"{axis}\n" + "\n".join(sections) + f"\n{axis}</body></html>\n")


def write_timeline(path: str, results: Sequence[RunResult]) -> None:
    Path(path).write_text(timeline_html(results), encoding="utf-8")

"""The timeline picture and the Chrome trace: one shared scale, queued/in-flight split,
critical path, labels that fit, and Trace Event JSON that Perfetto loads."""

from __future__ import annotations

import json
import re

from chainray.report.progress import progress_line, result_counts
from chainray.report.timeline import critical_path, timeline_html, trace_json, write_trace
from chainray.results import Attempt, RunResult, StepResult
from chainray.spec.chain import load_chain

T = 1_700_000_000.0


def step(id_: str, start: float, end: float, deps=(), queued_ms=0.0, attempts=1, rl=0):
    return StepResult(id=id_, status="ok", started_at=T + start, finished_at=T + end,
                      latency_ms=(end - start) * 1000, depends_on=deps, queued_ms=queued_ms,
                      attempts=attempts, rate_limited=rl, model="gpt-4o-mini", output="x")


def result(strategy: str, steps: list[StepResult], offset: float = 0.0) -> RunResult:
    moved = [s.model_copy(update={"started_at": s.started_at + offset,
                                  "finished_at": s.finished_at + offset}) for s in steps]
    return RunResult(scenario="demo", strategy=strategy, shape="hybrid", status="ok",
                     run_id=strategy, phases=((s.id,) for s in steps), latency_ms=1,
                     critical_path_ms=1, total_tokens=10, prompt_tokens=5, completion_tokens=5,
                     api_calls=len(steps), retries=0, rate_limited=0, estimated_cost=0,
                     output_length=1, output="x", steps=tuple(moved))


def runs() -> list[RunResult]:
    a = "a_very_long_step_name"
    seq = result("sequential", [step(a, 0, 4), step("b", 4, 8, (a,)),
                                step("final", 8, 10, ("b",))])
    par = result("parallel", [step(a, 0, 4, queued_ms=1500, attempts=3, rl=2),
                              step("b", 0, 3), step("final", 4, 5, (a, "b"))], offset=20)
    return [seq, par]


def test_critical_path_follows_the_dependency_that_finished_last():
    assert critical_path(runs()[1]) == ["a_very_long_step_name", "final"]
    assert critical_path(runs()[0]) == ["a_very_long_step_name", "b", "final"]


def test_runs_share_one_scale_and_labels_fit():
    page = timeline_html(runs())
    widths = set(re.findall(r'<svg width="(\d+)"', page))
    assert len(widths) == 1  # every chart and both axes are equally wide
    width = int(widths.pop())
    # the 10 s run spans the whole chart, the 5 s run half of it: final ends at 5 s of 10 s
    charts = page.split("<h2>")[1:]
    spans = []
    for chart in charts:
        bars = re.findall(r'<rect x="([\d.]+)" y="\d+" width="([\d.]+)" height="16" fill="#',
                          chart)
        spans.append((min(float(x) for x, _ in bars),
                      max(float(x) + float(w) for x, w in bars)))
    (left, seq_end), (par_left, par_end) = spans
    assert left == par_left and abs((seq_end - left) / 2 - (par_end - left)) < 2
    for x, text in re.findall(r'<text x="([\d.]+)" y="\d+" fill="#333"[^>]*>([^<]+)</text>', page):
        assert float(x) + 7.2 * len(text) <= width  # no label runs off the picture
    assert "3 attempts, 2 rate-limited (429)" in page and "queued 1.50s" in page
    assert "0x429" not in page and "critical path a_very_long_step_name → b → final" in page


def test_trace_is_valid_trace_event_json(tmp_path):
    path = tmp_path / "trace.json"
    write_trace(str(path), runs())
    data = json.loads(path.read_text())
    events = data["traceEvents"]
    assert data["displayTimeUnit"] == "ms" and events
    for event in events:
        assert event["ph"] in {"X", "M", "s", "f"}
        assert isinstance(event["pid"], int) and isinstance(event["tid"], int)
        if event["ph"] == "X":
            assert event["ts"] >= 0 and event["dur"] >= 0 and event["name"]
    slices = [e for e in events if e["ph"] == "X"]
    queued = [e for e in slices if e["name"] == "queued"]
    assert len(queued) == 1 and queued[0]["dur"] == 1.5e6
    names = {e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "process_name"}
    assert names == {"demo / sequential (run sequential)", "demo / parallel (run parallel)"}
    flows = [e for e in events if e["ph"] in "sf"]
    assert len(flows) == 2 * 4  # one start and one finish per dependency
    assert trace_json([])["traceEvents"] == []


def test_a_runs_progress_line_counts_its_own_steps_and_a_batch_its_runs():
    counts = result_counts(runs()[0])
    assert counts["done"] == 3 and counts["runs"] == 1
    line = progress_line("demo:hybrid", {"pending": 1, "running": 2, "done": 3}, 4.0)
    assert "1 pending, 2 running, 3 done" in line and "runs" not in line
    batch = progress_line("demo:hybrid", {"runs": 10, "runs_total": 40, "calls": 60,
                                          "tokens": 30_000}, 60.0, {"rpm": 120, "tpm": 60_000},
                          forecast_s=200.0)
    assert "runs 10/40" in batch and "60 req/min of 120 (50%)" in batch
    assert "30000 tok/min of 60000 (50%)" in batch and "ETA 180s" in batch


def test_run_writes_a_trace_that_loads(ray_session, tmp_path):
    from chainray.cli.main import main
    from tests.test_cli_run import FAST

    path = tmp_path / "trace.json"
    assert main(["run", "headline_ensemble", "--trace", str(path), *FAST]) == 0
    events = json.loads(path.read_text())["traceEvents"]
    ids = {s.id for s in load_chain("headline_ensemble").steps}
    slices = [e for e in events if e["ph"] == "X" and e["name"] in ids]
    assert len(slices) == len(ids)
    assert all(e["dur"] > 0 for e in slices)
    attempts = [e for e in events if e["ph"] == "X" and e["name"] == "attempt 1"]
    assert len(attempts) == len([s for s in load_chain("headline_ensemble").steps
                                 if s.kind == "llm"])


def retried_run() -> RunResult:
    """One step: a 429 after 0.5 s in flight, 1 s backoff, a 500 after queueing 0.5 s, 2 s
    backoff, then an answer."""
    log = (Attempt(queued_at=T, sent_at=T, finished_at=T + 0.5, outcome="rate_limited",
                   code="rate_limit_exceeded"),
           Attempt(queued_at=T + 1.5, sent_at=T + 2, finished_at=T + 2.5, outcome="error",
                   code="server_error"),
           Attempt(queued_at=T + 4.5, sent_at=T + 4.5, finished_at=T + 6, outcome="ok"))
    flaky = step("flaky", 0, 6, queued_ms=500, attempts=3, rl=1).model_copy(
        update={"attempt_log": log})
    return result("hybrid", [flaky, step("final", 6, 7, ("flaky",))])


def test_a_retried_steps_bar_is_split_per_attempt_into_queued_in_flight_and_backoff():
    page = timeline_html([retried_run()])
    chart = page.split("<h2>")[1]
    bars = re.findall(r'<rect x="([\d.]+)" y="4" width="([\d.]+)" height="16" fill="(#\w+)">'
                      r"<title>([^<]*)</title>", chart)
    kinds = [(fill, round(float(w))) for _, w, fill, _ in bars]
    px = 820 / 7  # the 7 s run spans the chart
    fills = [fill for fill, _ in kinds]
    assert fills == ["#4e79a7", "#fbd9a5", "#d9d9d9", "#4e79a7", "#fbd9a5", "#4e79a7"]
    widths = [w for _, w in kinds]
    assert widths == [round(0.5 * px), round(px), round(0.5 * px), round(0.5 * px),
                      round(2 * px), round(1.5 * px)]
    assert "retry backoff 2.00s" in chart and "attempt 1: 429" in chart
    assert "(queued 0.50s, backoff 3.00s), 3 attempts: 429, server_error, ok<" in chart
    assert chart.count('fill="url(#retry)"') == 2  # the two failed attempts are hatched
    # each failed attempt ends in a tick: red for the 429, black for the 500
    assert chart.count('width="3" height="22" fill="#d62728"') == 1
    assert chart.count('width="3" height="22" fill="#222222"') == 1
    assert "retry backoff" in page.split("<h2>")[0]  # the legend names it


def test_the_trace_nests_each_attempt_and_its_backoff_in_the_steps_slice():
    events = [e for e in trace_json([retried_run()])["traceEvents"] if e["ph"] == "X"]
    [parent] = [e for e in events if e["name"] == "flaky"]
    children = [e for e in events if e["tid"] == parent["tid"] and e is not parent]
    assert [(e["name"], e["dur"]) for e in children] == [
        ("attempt 1", 0.5e6), ("backoff", 1e6), ("queued", 0.5e6), ("attempt 2", 0.5e6),
        ("backoff", 2e6), ("attempt 3", 1.5e6)]
    assert [e["args"]["outcome"] for e in children if e["name"].startswith("attempt")] == [
        "rate_limited", "error", "ok"]
    for child in children:
        assert parent["ts"] <= child["ts"]
        assert child["ts"] + child["dur"] <= parent["ts"] + parent["dur"]
    assert parent["args"]["outcomes"] == "429, server_error, ok"
    assert parent["args"]["backoff_s"] == 3.0

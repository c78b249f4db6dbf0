"""The bench table's arithmetic: medians and spread, the tie rule, the redundancy metric."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from chainray.report.bench import bench_summary, redundancy, summarize_bench, verdicts
from chainray.report.bench_table import print_bench
from chainray.results import RunResult, StepResult


def run(strategy: str, latency_s: float, tokens: int = 1000, cost: float = 0.001,
        outputs: tuple[str, ...] = ("a b c d", "e f g h"), retries: int = 0,
        queued_ms: float = 0.0, status: str = "ok") -> RunResult:
    steps = [StepResult(id=f"s{i}", status="ok", output=text) for i, text in enumerate(outputs)]
    steps.append(StepResult(id="final", status="ok" if status == "ok" else "skipped",
                            output="done" if status == "ok" else "",
                            depends_on=tuple(s.id for s in steps)))
    return RunResult(scenario="x", strategy=strategy, shape="parallel", status=status,
                     run_id="r",
                     phases=(), latency_ms=latency_s * 1000, critical_path_ms=0,
                     queued_ms=queued_ms, total_tokens=tokens, prompt_tokens=tokens,
                     completion_tokens=0, api_calls=3 + retries, retries=retries,
                     rate_limited=retries, estimated_cost=cost, output_length=4,
                     output="done", steps=tuple(steps))


def test_redundancy_on_known_texts():
    assert redundancy(["the cat sat on the mat", "a dog ran in the park"]) == 0.0
    assert redundancy(["the cat sat on the mat", "the cat sat on the mat"]) == 1.0
    # "the cat sat" and "cat sat on" repeat: 2 of 4 phrases in the first, 2 of 3 in the second
    assert redundancy(["the cat sat on the mat", "the cat sat on"]) == pytest.approx(4 / 6)
    assert redundancy(["only one text here"]) == 0.0
    assert redundancy(["The Cat sat.", "the cat SAT"]) == 1.0  # case and punctuation ignored


def test_a_gap_inside_the_spread_is_a_tie():
    results = [run("parallel", s) for s in (9.48, 9.9, 10.2)] + \
        [run("hybrid", s) for s in (10.01, 9.6, 10.4)]
    lines = verdicts(summarize_bench(results))
    assert lines[0].startswith("Fastest: tie between parallel") and "overlap" in lines[0]


def test_a_gap_beyond_the_spread_names_the_winner():
    results = [run("parallel", s) for s in (9.0, 9.2, 9.4)] + \
        [run("sequential", s) for s in (30.0, 31.0, 29.5)]
    lines = verdicts(summarize_bench(results))
    assert lines[0].startswith("Fastest: parallel (9.20s, 3.3x faster than sequential)")


def test_equal_costs_are_a_tie_and_different_costs_name_the_cheapest():
    tie = verdicts(summarize_bench([run("a", 1, cost=0.002), run("b", 2, cost=0.002)]))
    assert tie[1].startswith("Cheapest: tie between")
    clear = verdicts(summarize_bench([run("a", 1, cost=0.003), run("b", 2, cost=0.002)]))
    assert clear[1].startswith("Cheapest: b")
    # more tokens yet cheaper: the verdict says the prompt cache is why
    cached = run("b", 2, tokens=1200, cost=0.002).model_copy(update={"cached_tokens": 800})
    clear = verdicts(summarize_bench([run("a", 1, tokens=1000, cost=0.003), cached]))
    assert clear[1] == "Cheapest: b ($0.00200, 1200 tokens, 800 of them cached at a lower price)"


def test_summary_carries_retries_429s_queued_time_and_redundancy():
    results = [run("parallel", 1, retries=2, queued_ms=1500,
                   outputs=("x y z w", "x y z w v")),
               run("sequential", 3, outputs=("a b c d", "e f g h"))]
    summary = bench_summary("x", results)
    rows = {row.strategy: row for row in summary.rows}
    assert rows["parallel"].retries == 2 and rows["parallel"].rate_limited == 2
    assert rows["parallel"].queued_ms == 1500
    assert rows["parallel"].redundancy > 0.5 and rows["sequential"].redundancy == 0.0
    assert any(v.startswith("Redundancy") for v in summary.verdicts)
    data = summary.model_dump()
    assert {"retries", "rate_limited", "queued_ms", "redundancy", "latency_min_ms"} <= set(
        data["rows"][0])


def test_the_printed_table_has_the_new_columns():
    out = io.StringIO()
    print_bench("x", [run("parallel", 1, retries=1, queued_ms=250), run("hybrid", 2)],
                Console(file=out, width=200))
    text = out.getvalue()
    for column in ("Retries", "429s", "Queued", "Redundancy"):
        assert column in text
    assert "0.25s" in text


def test_a_failed_run_faster_and_cheaper_than_an_ok_one_is_never_named():
    """The README's bench once printed 'parallel was fastest' for a run that had failed: a
    run that stopped early is quick and cheap, and must not win."""
    results = [run("parallel", 0.4, cost=0.0001, status="failed"),
               run("parallel", 0.5, cost=0.0001, status="failed"),
               run("hybrid", 2.0, cost=0.002), run("hybrid", 2.1, cost=0.002)]
    lines = verdicts(summarize_bench(results))
    assert lines[0] == "Fastest: hybrid (2.05s) -- of the ok runs; parallel failed (2 of 2 runs)"
    assert lines[1].startswith("Cheapest: hybrid") and "parallel failed" in lines[1]
    assert lines[2].startswith("Longest output: hybrid")
    assert not any("parallel (" in line for line in lines)
    out = io.StringIO()
    print_bench("x", results, Console(file=out, width=200))
    row = next(line for line in out.getvalue().splitlines() if "parallel" in line)
    assert "2 of 2 failed" in row and "failed" in row.split("│")[2] and "0.45s" not in row


def test_a_partial_run_is_left_out_of_its_strategys_figures():
    results = [run("parallel", 0.1, status="partial"), run("parallel", 3.0),
               run("hybrid", 2.0)]
    rows = {row.strategy: row for row in summarize_bench(results)}
    assert rows["parallel"].failed == 1 and rows["parallel"].latency_ms == 3000
    lines = verdicts(list(rows.values()))
    assert lines[0].startswith("Fastest: hybrid (2.00s, 1.5x faster than parallel)")
    assert lines[0].endswith("of the ok runs; parallel failed (1 of 2 runs)")


def test_no_run_ok_means_no_verdict():
    lines = verdicts(summarize_bench([run("parallel", 1, status="failed"),
                                      run("hybrid", 2, status="failed")]))
    assert lines == ["No verdict: no run finished ok (parallel failed, hybrid failed)"]


def test_run_list_comparisons_never_return_a_failed_run():
    from chainray.api.runs import RunList

    runs = RunList([run("parallel", 0.4, cost=0.0001, status="failed"),
                    run("hybrid", 2.0, cost=0.002), run("hybrid", 1.8, cost=0.003),
                    run("sequential", 0.3, status="partial")])
    assert [r.strategy for r in runs.failed] == ["parallel", "sequential"]
    assert runs.fastest().latency_ms == 1800 and runs.cheapest().estimated_cost == 0.002
    assert runs.verdicts()[0].startswith("Fastest: hybrid")
    assert "parallel failed" in runs.verdicts()[0]
    none_ok = RunList([run("parallel", 0.4, status="failed")])
    assert none_ok.fastest() is None and none_ok.verdicts()[0].startswith("No verdict")


def test_the_pick_weighs_what_was_measured_as_plan_weighs_predictions():
    from chainray.api.runs import RunList

    # parallel is fastest and cheapest but withholds declared context in quantum_research:
    # it is named beside the pick, not picked; a strategy with no ok run is not weighed.
    runs = RunList([run("sequential", 30.0, cost=0.0030), run("hybrid", 15.0, cost=0.0026),
                    run("parallel", 10.0, cost=0.0020)])
    latency = runs.advice("quantum_research", "latency")
    assert latency.strategy == "hybrid"
    assert "hybrid has the shortest measured makespan (15.0 s)" in latency.reasons[1]
    assert any(r.startswith("parallel: 5.0 s faster") and "withholds declared context" in r
               for r in latency.reasons)
    assert runs.advice("quantum_research", "cost").strategy == "hybrid"
    assert runs.advice("quantum_research", "quality").strategy == "sequential"
    failed = RunList([run("sequential", 30.0), run("hybrid", 15.0, status="failed"),
                      run("hybrid+batch", 600.0, cost=0.0013)])
    advice = failed.advice("quantum_research")
    assert advice.strategy == "sequential"
    assert "hybrid: no ok run, not weighed" in advice.reasons
    assert any(r.startswith("hybrid+batch: a Batch API row") for r in advice.reasons)
    alone = RunList([run("parallel", 10.0)]).advice("quantum_research")
    assert alone.strategy == "parallel"
    assert "none of parallel keeps every declared dependency" in alone.reasons[0]
    assert RunList([run("hybrid", 1.0, status="failed")]).advice("quantum_research") is None


def test_the_pick_says_when_the_repeats_make_it_a_tie():
    from chainray.api.runs import RunList

    runs = RunList([run("sequential", s) for s in (10.4, 9.8, 10.9)]
                   + [run("hybrid", s) for s in (10.0, 9.5, 10.6)])
    advice = runs.advice("quantum_research")
    assert advice.strategy == "hybrid"
    assert "hybrid and sequential overlap over the repeats: a tie for latency, within the " \
           "noise" in advice.reasons
    clear = RunList([run("sequential", s) for s in (20.0, 21.0)]
                    + [run("hybrid", s) for s in (10.0, 11.0)]).advice("quantum_research")
    assert not any("a tie" in reason for reason in clear.reasons)

"""Schedule resolution for each strategy: phases, edges, critical paths, what steps see."""

from __future__ import annotations

import pytest

from chainray.plan.schedule import resolve
from chainray.spec.chain import chain_from_dict, load_chain
from chainray.spec.prompts import render_prompt


@pytest.fixture(scope="module")
def quantum():
    return load_chain("quantum_research")


@pytest.fixture(scope="module")
def diamond():
    return chain_from_dict({"name": "diamond", "steps": [
        {"id": "A", "prompt": "start"},
        {"id": "B", "after": ["A"], "prompt": "{A}"},
        {"id": "C", "after": ["A"], "prompt": "{A}"},
        {"id": "D", "after": ["B", "C"], "prompt": "{B} {C}"}]})


def test_quantum_critical_paths_are_6_2_4(quantum):
    lengths = {s: len(resolve(quantum, s).critical_path) for s in
               ("sequential", "parallel", "hybrid")}
    assert lengths == {"sequential": 6, "parallel": 2, "hybrid": 4}


def test_quantum_hybrid_is_the_seeds_graph(quantum):
    schedule = resolve(quantum, "hybrid")
    assert schedule.shape == "hybrid"
    assert [set(p) for p in schedule.phases] == [
        {"hardware", "software", "commercial"}, {"security"}, {"academic"}, {"synthesis"}]
    assert schedule.critical_path == ("hardware", "security", "academic", "synthesis")


def test_quantum_parallel_fans_out_then_in(quantum):
    schedule = resolve(quantum, "parallel")
    assert schedule.shape == "parallel"
    assert len(schedule.phases[0]) == 5 and schedule.phases[1] == ("synthesis",)
    plans = schedule.plan
    assert all(plans[s].sees == () for s in schedule.phases[0])
    assert set(plans["synthesis"].sees) == set(schedule.phases[0])


def test_quantum_sequential_each_step_sees_all_earlier(quantum):
    schedule = resolve(quantum, "sequential")
    order = [phase[0] for phase in schedule.phases]
    assert all(len(phase) == 1 for phase in schedule.phases)
    assert order.index("hardware") < order.index("security") < order.index("academic")
    assert order[-1] == "synthesis"
    for i, step_id in enumerate(order):
        assert schedule.plan[step_id].sees == tuple(order[:i])
        assert schedule.plan[step_id].depends_on == tuple(order[max(0, i - 1):i])


def test_diamond_schedules(diamond):
    hybrid = resolve(diamond, "hybrid")
    assert hybrid.phases == (("A",), ("B", "C"), ("D",))
    assert set(hybrid.edges) == {("A", "B"), ("A", "C"), ("B", "D"), ("C", "D")}
    assert len(hybrid.critical_path) == 3 and hybrid.shape == "hybrid"
    parallel = resolve(diamond, "parallel")
    assert parallel.phases == (("A", "B", "C"), ("D",))
    assert set(parallel.edges) == {("A", "D"), ("B", "D"), ("C", "D")}
    assert len(parallel.critical_path) == 2
    sequential = resolve(diamond, "sequential")
    assert sequential.phases == (("A",), ("B",), ("C",), ("D",))
    assert sequential.shape == "sequential" and len(sequential.critical_path) == 4


def test_all_strategies_schedule_the_same_steps(quantum, diamond):
    for chain in (quantum, diamond):
        step_sets = {frozenset(s.id for s in resolve(chain, strategy).steps)
                     for strategy in ("sequential", "parallel", "hybrid")}
        assert len(step_sets) == 1


def test_remaining_path_counts_steps_to_the_end(diamond):
    assert resolve(diamond, "hybrid").remaining_path() == {"A": 3, "B": 2, "C": 2, "D": 1}


def test_unknown_strategy_is_refused(diamond):
    with pytest.raises(ValueError, match="sequential"):
        resolve(diamond, "random")


def test_prompt_truncates_and_marks_withheld_upstream():
    prompt = render_prompt("ctx {A:.3} on {topic}", {"topic": "tea"}, {"A": "abcdef"}, ("A",))
    assert prompt == "ctx abc on tea"
    withheld = render_prompt("ctx {A}", {}, {}, ("A",))
    assert "not available" in withheld


def test_sequential_prompt_lists_earlier_steps_it_does_not_name():
    prompt = render_prompt("go {B}", {}, {"A": "alpha text", "B": "beta"}, ("B",))
    assert prompt.startswith("go beta") and "- A: alpha text" in prompt


@pytest.fixture(scope="module")
def with_python():
    """facts (llm) -> count (python) -> summary (llm, final), plus a sibling llm step."""
    return chain_from_dict({"name": "py", "steps": [
        {"id": "facts", "prompt": "facts"},
        {"id": "other", "prompt": "other"},
        {"id": "count", "kind": "python", "call": "builtins:len", "after": ["facts"]},
        {"id": "summary", "after": ["facts", "other", "count"],
         "prompt": "{facts} {other} {count}"}]})


def test_under_parallel_a_python_step_waits_for_and_sees_its_declared_upstream(with_python):
    schedule = resolve(with_python, "parallel")
    assert schedule.plan["count"].depends_on == ("facts",)
    assert schedule.plan["count"].sees == ("facts",)
    # the LLM calls keep the parallel shape: the non-final ones start at once, seeing nothing
    assert schedule.plan["facts"].depends_on == () and schedule.plan["other"].depends_on == ()
    assert schedule.phases[0] == ("facts", "other")
    assert set(schedule.plan["summary"].depends_on) == {"facts", "other", "count"}
    assert schedule.shape == "parallel"


def test_every_strategy_hands_a_python_step_its_declared_upstream(with_python):
    for strategy in ("sequential", "parallel", "hybrid"):
        schedule = resolve(with_python, strategy)
        phase = {s: i for i, p in enumerate(schedule.phases) for s in p}
        assert "facts" in schedule.plan["count"].sees, strategy
        assert phase["count"] > phase["facts"], strategy


def test_sql_pipeline_python_steps_wait_under_parallel():
    schedule = resolve(load_chain("sql_pipeline"), "parallel")
    assert schedule.plan["validate"].sees == ("generate",)
    assert schedule.plan["execute"].sees == ("validate",)
    assert schedule.phases == (("generate",), ("validate",), ("execute",), ("explain",))

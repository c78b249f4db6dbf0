"""Validation that keeps its promise: refused by ``plan`` before anything is sent."""

from __future__ import annotations

import time

import pytest

from chainray.cli.main import main
from chainray.errors import SpecError
from chainray.spec.chain import MAX_CHAIN_BYTES, chain_from_dict, load_chain


def chain(prompt: str, **extra) -> dict:
    return {"name": "c", "inputs": {"topic": "tea"}, **extra,
            "steps": [{"id": "a", "prompt": prompt}]}


@pytest.mark.parametrize("spec", [">2000000000", "<10", "^30", "10", ".5f", "{x}", ".",
                                  ".1234567890"])
def test_only_truncation_format_specs_are_accepted(spec):
    with pytest.raises(SpecError, match="the only format spec is .N"):
        chain_from_dict(chain(f"about {{topic:{spec}}}"))


def test_truncation_spec_still_works():
    assert chain_from_dict(chain("about {topic:.500}")).steps[0].prompt.endswith(".500}")


def test_a_step_id_may_not_shadow_an_input():
    data = {"name": "c", "inputs": {"topic": "tea"},
            "steps": [{"id": "topic", "prompt": "x"}, {"id": "b", "after": ["topic"],
                                                       "prompt": "{topic}"}]}
    with pytest.raises(SpecError, match="also an input's name"):
        chain_from_dict(data)


def test_a_huge_chain_file_is_refused_at_once(tmp_path, capsys):
    path = tmp_path / "huge.yaml"
    path.write_text("name: huge\nsteps:\n  - id: a\n    prompt: hi\n# " + "x" * MAX_CHAIN_BYTES)
    started = time.monotonic()
    with pytest.raises(SpecError, match="limit"):
        load_chain(str(path))
    assert main(["plan", str(path)]) == 2 and "1 MiB" in capsys.readouterr().err
    assert time.monotonic() - started < 2


def test_plan_calibrates_from_a_batch_json_lines_file(tmp_path):
    from chainray.api.batch import BatchWriter
    from chainray.plan.learn import calibrate
    from chainray.results import RunResult, StepResult

    steps = tuple(StepResult(id=f"s{n}", status="ok", completion_tokens=n, attempts=1,
                             latency_ms=(0.2 + n / 140) * 1000, output="w " * n)
                  for n in (50, 100, 200, 300))
    run = RunResult(scenario="x", strategy="hybrid", shape="hybrid", status="ok", run_id="r",
                    phases=(), latency_ms=1, critical_path_ms=1, total_tokens=0,
                    prompt_tokens=0, completion_tokens=0, api_calls=4, retries=0,
                    rate_limited=0, estimated_cost=0, output_length=0, output="", steps=steps)
    path = tmp_path / "batch.jsonl"
    with path.open("w") as file:
        writer = BatchWriter(file)
        writer.add(run)
        writer.close()
    assert "fitted to 4 steps" in calibrate([str(path)]).source

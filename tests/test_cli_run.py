"""chainray run / bench from the command line, in-process on the session's Ray."""

from __future__ import annotations

import json

import pytest

from chainray.cli.main import main

FAST = ["--sim-speed", "50", "--rpm", "100000", "--tpm", "10000000", "--quiet"]


def test_run_writes_the_json_contract(ray_session, tmp_path, capsys):
    out = tmp_path / "out.json"
    assert main(["run", "quantum_research", "--strategy", "parallel", "--json", str(out),
                 *FAST]) == 0
    data = json.loads(out.read_text())
    for key in ("scenario", "strategy", "shape", "phases", "latency_ms", "critical_path_ms",
                "total_tokens", "prompt_tokens", "completion_tokens", "api_calls", "retries",
                "rate_limited", "estimated_cost", "output_length", "output", "steps"):
        assert key in data, key
    step = data["steps"][0]
    for key in ("id", "depends_on", "status", "error", "started_at", "finished_at",
                "latency_ms", "prompt_tokens", "completion_tokens", "attempts", "node_id",
                "task_id"):
        assert key in step, key
    assert data["strategy"] == "parallel" and data["api_calls"] == 6
    assert "synthesis" in capsys.readouterr().out


def test_auto_strategy_says_why(ray_session, capsys):
    assert main(["run", "progressive_refinement", "--strategy", "auto", *FAST]) == 0
    err = capsys.readouterr().err
    assert "auto: sequential" in err and "every step needs the one before" in err


def test_bench_table_json_and_timeline(ray_session, tmp_path, capsys):
    out, chart = tmp_path / "bench.json", tmp_path / "timeline.html"
    assert main(["bench", "headline_ensemble", "--strategies", "parallel,sequential",
                 "--repeat", "2", "--json", str(out), "--timeline", str(chart), *FAST]) == 0
    results = json.loads(out.read_text())
    assert [r["strategy"] for r in results] == ["parallel", "sequential"] * 2
    text = capsys.readouterr().out
    for word in ("Strategy", "Latency", "Tokens", "Calls", "Cost", "Output", "Fastest:",
                 "Cheapest:", "Longest output:", "medians of 2 runs"):
        assert word in text, word
    assert "Pick for latency, from what was measured: parallel\n" in text  # withholds nothing
    page = chart.read_text()
    assert page.count("<svg") == 4 + 2 and page.count("<rect x=") >= 4 * 6  # + 2 time axes


def test_bad_input_exits_2_before_connecting(tmp_path, capsys):
    assert main(["run", "quantum_research", "--set", "nope=1", *FAST]) == 2
    assert "no input 'nope'" in capsys.readouterr().err
    assert main(["run", "quantum_research", "--set", "topic", *FAST]) == 2
    with pytest.raises(SystemExit) as flag_error:
        main(["bench", "quantum_research", "--strategies", "fast"])
    assert flag_error.value.code == 2 and "unknown strategy 'fast'" in capsys.readouterr().err
    assert main(["run", "quantum_research", "--json", str(tmp_path / "no/dir/x.json"),
                 *FAST]) == 2
    assert main(["run", "no_such_scenario", *FAST]) == 2


def test_batch_runs_every_line_under_one_budget(ray_session, sim, tmp_path, capsys):
    sim.configure(speed=50.0)
    inputs, out = tmp_path / "in.jsonl", tmp_path / "batch.json"
    inputs.write_text("\n".join(json.dumps({"topic": f"topic {i}"}) for i in range(6)) + "\n")
    assert main(["run", "headline_ensemble", "--inputs", str(inputs), "--json", str(out),
                 "--base-url", sim.base_url, "--batch-window", "3", "--quiet"]) == 2
    assert "unknown input 'topic'" in capsys.readouterr().err
    inputs.write_text("\n".join(json.dumps({"article": f"story {i}"}) for i in range(6)))
    assert main(["run", "headline_ensemble", "--inputs", str(inputs), "--json", str(out),
                 "--base-url", sim.base_url, "--batch-window", "3"]) == 0  # with progress
    assert "batch of 6 runs (6 ok" in capsys.readouterr().out
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    runs, batch = lines[:-1], lines[-1]["batch"]
    assert len(runs) == batch["runs"] == batch["ok"] == 6 and batch["failed"] == 0
    assert batch["api_calls"] == sum(r["api_calls"] for r in runs) == 36
    stats = sim.stats()
    assert batch["api_calls"] == stats["requests"]
    assert batch["total_tokens"] == stats["total_tokens"]
    assert batch["requests_per_min"] > 0 and batch["tokens_per_min"] > 0
    assert len({r["run_id"] for r in runs}) == 6


def test_a_batch_with_progress_on_of_a_chain_with_defaults(ray_session, sim, tmp_path, capsys):
    """The batch's forecast (progress on) compares the runs' chains: one holding dicts too."""
    sim.configure(speed=50.0)
    chain = tmp_path / "fan.yaml"
    chain.write_text("name: fan\ninputs: {topic: tea}\ndefaults: {max_tokens: 20}\nsteps:\n"
                     "  - {id: a, prompt: 'about {topic}'}\n")
    inputs = tmp_path / "in.jsonl"
    inputs.write_text('{"topic": "a"}\n{"topic": "b"}\n')
    assert main(["run", str(chain), "--inputs", str(inputs), "--base-url", sim.base_url]) == 0
    assert "batch of 2 runs (2 ok" in capsys.readouterr().out

"""Issue 13 + 16 through the public API: ``max_cost=``, ``cache=`` and ``hedge_after=`` on
``chainray.run`` / ``bench`` / ``Session``, checked and refused as the CLI does; and the CLI and
the API translate the same options into the same ``SessionConfig`` and ``RunJob``."""

from __future__ import annotations

import json
import shutil

import pytest
from helpers import fan_chain
from plain_server import PlainServer

import chainray
from chainray.cli.main import main
from chainray.errors import InputError
from chainray.plan.cost import BUNDLED_PRICES, load_prices
from chainray.spec.chain import chain_from_dict

FAST = {"rpm": 100_000, "tpm": 10_000_000}


def server_cost(sim) -> float:
    """What the simulator itself counted, at the bundled price table."""
    prices = load_prices()
    return sum(prices.cost(r["model"], r["prompt_tokens"], r["completion_tokens"],
                           r["cached_tokens"])
               for r in sim.stats()["request_log"] if r["status"] == 200)


def test_max_cost_stops_admission_keeps_real_spend_under_it_and_names_unstarted_runs(
        ray_session, sim):
    sim.configure(speed=50.0, rpm=100_000, tpm=10_000_000)
    cap = 0.002
    briefs = [("progressive_refinement", {"brief": f"brief {i}"}) for i in range(12)]
    with chainray.Session(base_url=sim.base_url, max_cost=cap, **FAST) as session:
        runs = session.run_many(briefs, window=2)
        later = session.run("progressive_refinement")  # the cap is used up: it never starts
        spend = session.spend_state()
    assert server_cost(sim) <= cap and server_cost(sim) >= 0.5 * cap
    assert spend["stopped"] and spend["spent_usd"] <= cap and runs.spend["stopped"]
    # Every run asked for keeps its place: finished, partial or never started, told apart.
    assert len(runs) == 12 and [r.run_id for r in runs] == list(dict.fromkeys(
        r.run_id for r in runs))
    never = [r for r in runs if r.run_id in runs.not_started]
    assert never and runs[-1] in never and any(r.status == "ok" for r in runs)
    for result in [*never, later]:
        assert result.status == "failed" and result.error.startswith("not started:")
        assert "spend cap" in result.error and result.api_calls == 0
        assert {s.status for s in result.steps} == {"skipped"}
    started = [r for r in runs if r.run_id not in runs.not_started]
    assert sim.stats()["requests"] == sum(r.api_calls for r in started)


def test_a_model_without_a_price_under_a_cap_is_refused_before_anything_is_sent(
        ray_session, sim):
    sim.reset()
    unpriced = chain_from_dict({"name": "unpriced", "defaults": {"model": "house-model-7"},
                                "steps": [{"id": "a", "prompt": "hi"}]})
    with pytest.raises(InputError, match="no price for model 'house-model-7'"):
        chainray.run(unpriced, base_url=sim.base_url, max_cost=1.0)
    with pytest.raises(InputError, match="no price for model 'no-such-model'"):
        chainray.run("quantum_research", base_url=sim.base_url, max_cost=1.0,
                     model="no-such-model")
    with chainray.Session(base_url=sim.base_url, max_cost=1.0, **FAST) as session:
        with pytest.raises(InputError, match="house-model-7"):  # checked before the first run
            session.run_many(["progressive_refinement", unpriced])
    assert sim.stats()["requests"] == 0
    # Without a cap the same chain is no error: its cost is simply unknown.
    assert chainray.run(unpriced, base_url=sim.base_url, **FAST).status == "ok"


def test_cache_makes_a_rerun_send_nothing_with_identical_output(ray_session, sim, tmp_path):
    sim.configure(speed=50.0, rpm=100_000, tpm=10_000_000)
    folder = tmp_path / "replies"
    first = chainray.run("quantum_research", base_url=sim.base_url, cache=folder, **FAST)
    sent = sim.stats()["requests"]
    sim.reset()
    again = chainray.run("quantum_research", base_url=sim.base_url, cache=str(folder), **FAST)
    assert sent == first.api_calls > 0 and sim.stats()["requests"] == 0
    assert again.output == first.output
    assert [s.output for s in again.steps] == [s.output for s in first.steps]
    assert all(s.cached for s in again.steps) and not any(s.cached for s in first.steps)
    assert again.api_calls == 0 and again.estimated_cost == 0


def test_cache_hits_across_embedded_simulators_which_listen_on_new_ports(ray_session, tmp_path):
    # Each run starts its own simulator on a free port; its replies do not depend on the port.
    first = chainray.run("progressive_refinement", sim_speed=50, cache=tmp_path, **FAST)
    again = chainray.run("progressive_refinement", sim_speed=50, cache=tmp_path, **FAST)
    assert first.api_calls > 0 and not any(s.cached for s in first.steps)
    assert again.api_calls == 0 and all(s.cached for s in again.steps)
    assert [s.output for s in again.steps] == [s.output for s in first.steps]


def test_cache_true_is_the_default_folder_and_works_on_a_server_that_is_not_the_simulator(
        ray_session, tmp_path, monkeypatch):
    monkeypatch.setenv("CHAINRAY_HOME", str(tmp_path))
    server = PlainServer(latency_s=0.05)
    with server.running() as base_url:
        runs = chainray.bench("code_review", strategies=["parallel", "hybrid"],
                              base_url=base_url, cache=True, **FAST)
        sent = len(server.log)
        again = chainray.bench("code_review", strategies=["parallel", "hybrid"],
                               base_url=base_url, cache=True, **FAST)
    assert sent == sum(r.api_calls for r in runs) > 0
    assert len(server.log) == sent  # the rerun sent nothing
    assert [r.output for r in again] == [r.output for r in runs]
    assert all(s.cached for r in again for s in r.steps)
    assert any((tmp_path / "cache").rglob("*.json"))  # $CHAINRAY_HOME/cache, as --cache


def test_hedge_after_is_accepted_and_hedges_stragglers(ray_session, sim):
    sim.configure(speed=5.0, ttft_sigma=0.0, faults={"slow": 0.25, "slow_factor": 4.0},
                  rpm=100_000, tpm=10_000_000)
    # The first run's 30 steps start together, before any has a finished request to be
    # compared with: the later runs are the ones that hedge.
    chains = [fan_chain(30, max_tokens=30, name=f"h{i}") for i in range(3)]
    with chainray.Session(base_url=sim.base_url, hedge_after=0.5, max_concurrency=400,
                          **FAST) as session:
        runs = session.run_many(chains, window=1)
    steps = [s for r in runs for s in r.steps]
    assert all(r.status == "ok" for r in runs)
    assert any(s.hedged for s in steps)
    # Every request the server saw is counted, one cancelled before it left is not (as in
    # test_beyond.py's hedging test).
    in_flight = sum(a.outcome == "cancelled" and a.code != "not_sent"
                    for s in steps for a in s.attempt_log)
    counted, seen = sum(r.api_calls for r in runs), sim.stats()["requests"]
    assert len(steps) <= seen <= counted <= seen + in_flight and counted > len(steps)


@pytest.mark.parametrize("options,expected", [
    ({"max_cost": 0}, "max_cost must be a number greater than 0"),
    ({"max_cost": "5"}, "max_cost must be a number"),
    ({"hedge_after": 1.5}, "hedge_after must lie in"),
    ({"hedge_after": 0}, "hedge_after must lie in"),
    ({"hedge_after": True}, "hedge_after must lie in"),
    ({"cache": 5}, "cache must be a folder or True"),
    ({"cache": ""}, "cache must be a folder or True"),
    ({"on_error": "ignore"}, "on_error must be fail, continue or isolate"),
    ({"prices": "/no/such/prices.json"}, "no such file"),
])
def test_bad_new_options_are_refused_before_anything_starts(options, expected):
    with pytest.raises(InputError, match=expected):
        chainray.run("quantum_research", base_url="http://127.0.0.1:9/v1", **options)


def test_a_cache_path_that_is_a_file_is_refused(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="is a file, not a folder"):
        chainray.Session(base_url="http://127.0.0.1:9/v1", cache=blocker)
    assert main(["run", "quantum_research", "--cache", str(blocker), "--quiet",
                 "--base-url", "http://127.0.0.1:9/v1"]) == 2


def test_the_cli_and_the_api_translate_the_same_options_identically(recorded, tmp_path):
    prices = tmp_path / "prices.json"
    shutil.copy(BUNDLED_PRICES, prices)
    folder = tmp_path / "cache"
    common = {"base_url": "http://127.0.0.1:9/v1", "address": "127.0.0.1:1",
              "model": "gpt-4o", "rpm": 900, "tpm": 90_000, "max_concurrency": 7,
              "target_share": 0.8, "on_error": "isolate", "max_cost": 2.5,
              "hedge_after": 0.9, "priority": False, "timeout": 12.0, "max_attempts": 3,
              "sim_speed": 4.0, "prices": str(prices), "api_version": "2024-06-01",
              "prefix_warmup": False}
    flags = ["--base-url", "http://127.0.0.1:9/v1", "--address", "127.0.0.1:1",
             "--model", "gpt-4o", "--rpm", "900", "--tpm", "90000", "--max-concurrency", "7",
             "--target-share", "0.8", "--on-error", "isolate", "--max-cost", "2.5",
             "--hedge-after", "0.9", "--no-priority", "--timeout", "12", "--max-attempts",
             "3", "--sim-speed", "4", "--prices", str(prices), "--api-version", "2024-06-01",
             "--quiet", "--no-prefix-warmup"]
    cli = recorded(main, ["run", "quantum_research", "--strategy", "auto", "--objective",
                          "cost", "--set", "topic=tea", "--cache", str(folder), *flags])
    api = recorded(chainray.run, "quantum_research", "auto", {"topic": "tea"},
                   objective="cost", cache=folder, **common)
    assert cli == api
    config, job = api
    assert (config.max_cost, config.hedge_after, config.cache) == (2.5, 0.9, str(folder))
    assert config.models == ("gpt-4o",)  # the run's limiters open with the session
    assert job["strategy"] == chainray.plan("quantum_research", "cost").strategy
    assert job["inputs"]["topic"] == "tea" and job["on_error"] == "isolate"
    assert job["prefix_warmup"] is False and job["cache_min_prefix_tokens"] == 1024
    # A bare --cache is cache=True; bench's runs are the API bench's.
    bench_cli = recorded(main, ["bench", "code_review", "--strategies", "parallel,hybrid",
                                "--cache", *flags])
    bench_api = recorded(chainray.bench, "code_review", ["parallel", "hybrid"], cache=True,
                         **common)
    assert bench_cli == bench_api and bench_api[1]["strategy"] == "parallel"
    assert bench_api[0].cache.endswith("cache")


def test_a_batch_line_becomes_the_run_the_api_builds_for_those_inputs(recorded, tmp_path):
    lines = tmp_path / "in.jsonl"
    lines.write_text(json.dumps({"brief": "tea"}) + "\n")
    flags = ["--base-url", "http://127.0.0.1:9/v1", "--model", "gpt-4o", "--on-error",
             "continue", "--quiet", "--no-journal"]
    cli = recorded(main, ["run", "progressive_refinement", "--inputs", str(lines), *flags])
    api = recorded(lambda: chainray.Session(base_url="http://127.0.0.1:9/v1", model="gpt-4o",
                                            on_error="continue").run_many(
        [("progressive_refinement", {"brief": "tea"})], journal=False))
    assert cli[1] == api[1]


def test_a_capped_cli_bench_keeps_every_run_in_place_and_exits_1(ray_session, sim, tmp_path,
                                                                  capsys):
    sim.configure(speed=50.0, rpm=100_000, tpm=10_000_000)
    out, cap = tmp_path / "bench.json", 0.0008
    code = main(["bench", "progressive_refinement", "--strategies", "sequential,hybrid",
                 "--repeat", "3", "--max-cost", str(cap), "--base-url", sim.base_url,
                 "--json", str(out), "--quiet", "--rpm", "100000", "--tpm", "10000000"])
    assert code == 1 and "spend cap $0.0008 reached" in capsys.readouterr().err
    runs = json.loads(out.read_text())
    assert [r["strategy"] for r in runs] == ["sequential", "hybrid"] * 3
    assert runs[-1]["error"].startswith("not started:") and runs[-1]["api_calls"] == 0
    assert runs[0]["status"] == "ok" and server_cost(sim) <= cap

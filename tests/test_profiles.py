"""Endpoint profiles: learned from synthetic runs (no Ray, no server), stored safely, and what
``plan`` predicts from them."""

from __future__ import annotations

import json
import multiprocessing
import os

import pytest

from chainray.api.planning import plan
from chainray.cli.main import main
from chainray.plan.fit import LatencyModel, Sample, fit_samples
from chainray.plan.learn import Learner
from chainray.plan.makespan import capped_finish, longest_finish, shared_finish
from chainray.plan.profiles import (
    MAX_SAMPLES,
    SIMULATOR,
    endpoint_label,
    load_profile,
    profiles_dir,
)
from chainray.plan.schedule import STRATEGIES, resolve
from chainray.results import Attempt, RunResult, StepResult
from chainray.spec.chain import Chain, load_chain
from chainray.spec.prompts import render_prompt
from chainray.tokens import estimate_prompt_tokens

URL = "http://127.0.0.1:9/v1"


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("CHAINRAY_HOME", str(tmp_path))
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def fake_run(chain: Chain, strategy: str, *, reply: int = 300, tps: float = 150.0,
             ttft: float = 0.3, slots: int | None = None, model: str | None = "m",
             start: float = 1000.0, run_id: str = "r",
             reply_of: dict[str, int] | None = None,
             python_chars: int | None = None) -> RunResult:
    """A run as a server that always writes ``reply`` tokens (whatever max_tokens says; a
    model in ``reply_of`` that many) would produce it: phases one after another, every step of
    a phase sent at once, each slowed by ``max(1, k / slots)`` with k requests in the phase.
    ``model`` None: each step's model is the chain's; ``python_chars``: what a python step
    returns (default: the join of what it sees)."""
    schedule = resolve(chain, strategy)
    outputs: dict[str, str] = {}
    steps, now = {}, start
    for phase in schedule.phases:
        llm = [s for s in phase if chain.by_id[s].kind == "llm"]
        slow = max(1.0, len(llm) / slots) if slots else 1.0
        ends = []
        for step_id in phase:
            step = chain.by_id[step_id]
            seen = {s: outputs[s] for s in schedule.plan[step_id].sees}
            if step.kind == "python":
                outputs[step_id] = "\n\n".join(f"## {k}\n{v}" for k, v in seen.items()) \
                    if python_chars is None else "x" * python_chars
                steps[step_id] = StepResult(id=step_id, status="ok", output=outputs[step_id],
                                            started_at=now, finished_at=now + 0.001)
                continue
            cap = chain.settings_for(step).max_tokens or 512
            named = model or chain.settings_for(step).model
            tokens = min((reply_of or {}).get(named, reply), cap)
            text = render_prompt(step.prompt or "", chain.inputs, seen, step.after)
            prompt = estimate_prompt_tokens([{"role": "user", "content": text}])
            seconds = (ttft + (tokens - 1) / tps) * slow
            outputs[step_id] = " ".join(["word"] * tokens)
            attempt = Attempt(queued_at=now, sent_at=now, finished_at=now + seconds,
                              outcome="ok")
            steps[step_id] = StepResult(
                id=step_id, status="ok", output=outputs[step_id], started_at=now,
                finished_at=now + seconds, latency_ms=seconds * 1000, ttft_ms=ttft * 1000,
                prompt_tokens=prompt, completion_tokens=tokens, attempts=1,
                attempt_log=(attempt,), truncated=tokens == cap and reply > cap, model=named)
            ends.append(seconds)
        now += max(ends, default=0.001) + 0.02  # chainray's own 20 ms between phases
    ordered = tuple(steps[p.id] for p in schedule.steps)
    total = sum(s.prompt_tokens + s.completion_tokens for s in ordered)
    return RunResult(scenario=chain.name, strategy=strategy, shape=schedule.shape, status="ok",
                     run_id=run_id, phases=schedule.phases, latency_ms=(now - start) * 1000,
                     critical_path_ms=(now - start - 0.02 * len(schedule.phases)) * 1000,
                     total_tokens=total, prompt_tokens=sum(s.prompt_tokens for s in ordered),
                     completion_tokens=sum(s.completion_tokens for s in ordered),
                     api_calls=len(ordered), retries=0, rate_limited=0, estimated_cost=0,
                     output_length=0, output="", steps=ordered)


def learn(chain: Chain, label: str = URL, **server) -> None:
    """One fake run of ``chain`` per strategy, learned into ``label``'s profiles (a URL, or
    the embedded simulator's name as-is)."""
    learner = Learner(label if label.startswith(SIMULATOR) else endpoint_label(label))
    for i, strategy in enumerate(STRATEGIES):
        result = fake_run(chain, strategy, run_id=f"{chain.name}-{strategy}", **server,
                          start=1000.0 + 100 * i)
        learner.expect(result.run_id, chain, chain.inputs)
        learner.add([result])
    learner.flush()


@pytest.mark.parametrize("server", [dict(reply=300, tps=150.0, ttft=0.3),
                                    dict(reply=120, tps=60.0, ttft=0.8)])
def test_after_a_bench_of_one_chain_plan_predicts_another(server):
    learn(load_chain("code_review"), **server)
    unseen = load_chain("quantum_research")
    found = plan(unseen, base_url=URL, model="m", strict=True)
    assert found.profiled and found.latency_model.requests > 0
    for strategy in STRATEGIES:
        measured = fake_run(unseen, strategy, **server)
        guess = found.predictions[strategy]
        assert guess.total_tokens == pytest.approx(measured.total_tokens, rel=0.05), strategy
        assert guess.makespan_s == pytest.approx(measured.latency_ms / 1000, rel=0.10), strategy
        # the replies' length (capped by max_tokens), not a share of max_tokens
        assert guess.completion_tokens == pytest.approx(measured.completion_tokens, rel=0.02)


def test_a_slotted_engine_is_found_and_the_advice_says_what_it_means():
    learn(load_chain("quantum_research"), slots=2)
    found = plan("quantum_research", base_url=URL, model="m", strict=True)
    assert found.latency_model.slots == 2
    measured = fake_run(load_chain("quantum_research"), "parallel", slots=2)
    assert found.predictions["parallel"].makespan_s == pytest.approx(
        measured.latency_ms / 1000, rel=0.15)
    assert any("slows beyond ~2 requests in flight" in r for r in found.reasons)


def test_profile_holds_numbers_only_and_stays_bounded(home):
    secret = "http://user:sk-secret-123@127.0.0.1:9/v1?api-key=sk-other"
    chain = load_chain("quantum_research")
    learner = Learner(endpoint_label(secret))
    for i in range(MAX_SAMPLES // 6 + 20):
        result = fake_run(chain, "hybrid", run_id=f"r{i}", start=1000.0 + 100 * i)
        learner.expect(result.run_id, chain, chain.inputs)
        learner.add([result])
    learner.flush()
    (path,) = profiles_dir().glob("*.json")
    text = path.read_text()
    assert "sk-secret" not in text and "sk-other" not in text and "user" not in text
    assert "Research" not in text and "word word" not in text  # no prompt, no reply
    data = json.loads(text)
    assert data["endpoint"] == URL and data["runs"] == MAX_SAMPLES // 6 + 20
    assert len(data["samples"]) == MAX_SAMPLES
    assert data["steps"]["quantum_research/hardware"]["tokens"]["hybrid"]["n"] <= 50


def test_an_unreadable_profile_is_reported_in_one_line_and_replaced(capsys):
    learn(load_chain("code_review"))
    (path,) = profiles_dir().glob("*.json")
    path.write_text("{not json")
    assert load_profile(URL, "m")[1].startswith(f"profile {path} is unreadable")
    learn(load_chain("code_review"))
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unreadable" in err[0] and err[0].endswith("replaced")
    assert load_profile(URL, "m")[0].runs == 3


def _learn_in_a_process(home: str) -> None:
    os.environ["CHAINRAY_HOME"] = home
    for _ in range(5):
        learn(load_chain("code_review"))


def test_drivers_learning_at_once_lose_nothing(home):
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_learn_in_a_process, args=(str(home),))
               for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    assert load_profile(URL, "m")[0].runs == 3 * 5 * 3


def test_learning_off_writes_nothing(home):
    learner = Learner(URL, enabled=False)
    result = fake_run(load_chain("code_review"), "hybrid")
    learner.expect(result.run_id, load_chain("code_review"), {})
    learner.add([result])
    learner.flush()
    assert not (home / "profiles").exists()


def test_plan_of_an_unknown_endpoint_exits_2_in_one_line(capsys):
    assert main(["plan", "quantum_research", "--base-url", "http://127.0.0.1:7/v1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no profile of http://127.0.0.1:7/v1" in err[0]


def test_plan_without_a_profile_says_it_uses_defaults(capsys):
    assert main(["plan", "quantum_research"]) == 0
    out = capsys.readouterr().out
    assert "defaults: nothing measured on embedded simulator" in out


def test_plan_names_the_profile_and_its_spread(capsys):
    learn(load_chain("code_review"))
    assert main(["plan", "quantum_research", "--base-url", URL + "/", "--model", "m"]) == 0
    out = capsys.readouterr().out
    assert f"profile: {URL} (m), 15 requests" in out  # 3 runs x 5 llm steps
    assert "the endpoint's typical reply" in out
    assert "(ranges: 10th-90th percentile of reply lengths" in out


def test_calibrate_with_another_models_runs_is_refused(tmp_path, capsys):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps([json.loads(fake_run(load_chain("code_review"), "hybrid",
                                                    model="other").model_dump_json())]))
    assert main(["plan", "quantum_research", "--calibrate", str(path), "--model", "m"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "called other, not m" in err[0]
    found = plan("quantum_research", calibrate_from=[str(path)], model="other")
    measured = fake_run(load_chain("quantum_research"), "hybrid", model="other")
    assert found.profiled
    assert found.predictions["hybrid"].completion_tokens == measured.completion_tokens


def test_endpoint_labels_drop_credentials_and_trailing_slashes():
    assert endpoint_label("https://u:p@host:8443/v1/?key=x") == "https://host:8443/v1"
    assert endpoint_label(None, simulated=True, sim_speed=10) == "embedded simulator --speed 10"


def test_makespans_of_a_shared_and_a_capped_engine():
    order = list("abcdef")
    depends = {s: () for s in order}
    work = dict.fromkeys(order, 1.0)
    delay = dict.fromkeys(order, 0.0)
    assert longest_finish(order, depends, work) == 1.0
    assert shared_finish(order, depends, work, delay, 3) == pytest.approx(2.0)
    assert capped_finish(order, depends, work, delay, 3) == pytest.approx(2.0)
    # a long chain behind one step: capping sends the critical path first
    order = ["a", "b", "c", "d", "e", "z"]
    depends = {"a": (), "b": (), "c": (), "d": (), "e": (), "z": ("a",)}
    work = {"a": 1.0, "b": 1.0, "c": 1.0, "d": 1.0, "e": 1.0, "z": 5.0}
    delay = dict.fromkeys(order, 0.0)
    assert capped_finish(order, depends, work, delay, 2) == pytest.approx(6.0)
    assert shared_finish(order, depends, work, delay, 2) == pytest.approx(7.5)


def test_slots_are_fitted_only_when_requests_slow_down():
    base = [Sample(100, c, 0.3 + (c - 1) / 100, 0.3, 1.0) for c in (50, 100, 200, 300)]
    crowded = [Sample(100, c, (0.3 + (c - 1) / 100) * max(1, k / 3), None, k)
               for c in (100, 200) for k in (2, 3, 4, 6, 9)]
    assert fit_samples(base + crowded).slots == 3
    calm = [Sample(100, c, 0.3 + (c - 1) / 100, None, k) for c in (100, 200) for k in (2, 6)]
    model = fit_samples(base + calm)
    assert model.slots is None and model.tokens_per_s == pytest.approx(100, rel=0.01)
    assert isinstance(model, LatencyModel)


def test_plan_from_a_corrupt_profile_exits_2_in_one_line(capsys):
    learn(load_chain("code_review"))
    (path,) = profiles_dir().glob("*.json")
    path.write_bytes(b"\x00garbage")
    assert main(["plan", "quantum_research", "--base-url", URL, "--model", "m"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is unreadable" in err[0] and "no profile of" in err[0]


def test_after_its_own_runs_a_chain_with_a_python_join_is_predicted_closely():
    from pathlib import Path

    chain = load_chain(str(Path(__file__).parents[1] / "benchmarks/chains/diamonds.yaml"))
    learn(chain, reply=110, tps=60.0, ttft=0.8)
    found = plan(chain, base_url=URL, model="m", strict=True)
    for strategy in STRATEGIES:
        measured = fake_run(chain, strategy, reply=110, tps=60.0, ttft=0.8)
        guess = found.predictions[strategy]
        assert guess.lengths_from == {"this step, this strategy": 13}
        assert guess.total_tokens == pytest.approx(measured.total_tokens, rel=0.01), strategy
        assert guess.makespan_s == pytest.approx(measured.latency_ms / 1000, rel=0.05), strategy


TWO_MODELS = Chain.model_validate({
    "name": "two_models", "inputs": {"topic": "tides"},
    "defaults": {"model": "gpt-4o-mini", "max_tokens": 400},
    "steps": [{"id": "facts", "prompt": "Facts about {topic}"},
              {"id": "question", "model": "gpt-4o", "prompt": "A question on {topic}"},
              {"id": "merge", "after": ["facts", "question"],
               "prompt": "Merge {facts} and {question}"}]})


@pytest.mark.parametrize("how", ["learned", "calibrated"])
def test_each_models_steps_are_predicted_from_that_models_own_profile(how, tmp_path):
    # A cheap model writes 60 tokens, a strong one 350 on the same endpoint: the strong
    # model's step, predicted from the cheap model's profile, came out at the cheap one's
    # typical reply (a newcomer's mixed chain: 34 % too cheap after learning). --calibrate
    # files feed each model's profile too.
    chain = TWO_MODELS
    server = dict(reply=60, reply_of={"gpt-4o": 350}, model=None)
    if how == "learned":
        learn(chain, **server)
        found = plan(chain, base_url=URL, strict=True)
    else:
        runs = tmp_path / "runs.json"
        runs.write_text(json.dumps([fake_run(chain, s, **server).model_dump(mode="json")
                                    for s in STRATEGIES]))
        found = plan(chain, base_url=URL, strict=True, calibrate_from=[str(runs)])
    assert found.model == "gpt-4o-mini" and found.other_models == {"gpt-4o": 3}
    for strategy in STRATEGIES:
        measured = fake_run(chain, strategy, **server)
        guess = found.predictions[strategy]
        assert guess.completion_tokens == measured.completion_tokens, strategy
        assert guess.total_tokens == pytest.approx(measured.total_tokens, rel=0.02), strategy
        # gpt-4o's three requests cannot fit a decode speed alone: the main model's (same
        # endpoint) stands in, not the defaults' 70 tokens/s (4.1 s predicted for 0.95 s)
        assert guess.makespan_s == pytest.approx(measured.latency_ms / 1000, rel=0.05), \
            strategy
    lines = "\n".join(found_lines(found))
    assert "gpt-4o's steps: its own profile, 3 requests" in lines


def found_lines(found) -> list[str]:
    from chainray.cli.plan import _basis

    return _basis(found)


def test_a_python_steps_output_learned_under_the_chains_model_serves_another_main_model():
    # The default model (where a python step's output is learned) is not the most used one.
    chain = Chain.model_validate({
        "name": "pyjoin", "inputs": {"topic": "tides"},
        "defaults": {"model": "gpt-4o-mini", "max_tokens": 400},
        "steps": [*({"id": i, "model": "gpt-4o", "prompt": f"{i} on {{topic}}"}
                    for i in ("a", "b", "c")),
                  {"id": "d", "prompt": "d on {topic}"},
                  {"id": "p", "kind": "python", "call": "chainray.builtin_steps:join",
                   "after": ["a", "b", "d"]},
                  {"id": "e", "after": ["p", "c"], "prompt": "Sum up {p} and {c}"}]})
    server = dict(reply=80, model=None, python_chars=40)
    learn(chain, **server)
    found = plan(chain, base_url=URL, strict=True)
    assert found.model == "gpt-4o"
    for strategy in STRATEGIES:
        measured = fake_run(chain, strategy, **server)
        guess = found.predictions[strategy]
        assert guess.prompt_tokens == pytest.approx(measured.prompt_tokens, rel=0.02), strategy


def test_a_simulator_at_another_speed_is_forecast_from_its_own_profile():
    from chainray.api.batch import batch_forecast
    from chainray.api.config import SessionConfig

    # Runs at --sim-speed 20 are learned as "embedded simulator --speed 20": a batch forecast
    # at that speed read the speed-1 profile (a 5.7 s batch forecast at 29 s).
    chain = load_chain("quantum_research")
    config = SessionConfig(sim_speed=20)
    assert config.profile_endpoint == "embedded simulator --speed 20"
    assert SessionConfig(base_url=URL).profile_endpoint == URL
    learn(chain, config.profile_endpoint, reply=100, model=None)
    forecast = batch_forecast(config, chain, "hybrid", [dict(chain.inputs)], 4)
    measured = fake_run(chain, "hybrid", reply=100, model=None)
    assert forecast.total_tokens == pytest.approx(measured.total_tokens, rel=0.02)
    assert forecast.run_makespan_s == pytest.approx(measured.latency_ms / 1000, rel=0.05)


def test_plan_reads_what_runs_at_a_simulator_speed_learned(capsys):
    # Runs with --sim-speed 20 learn "embedded simulator --speed 20"; plan had no way to it.
    chain = load_chain("quantum_research")
    learn(chain, "embedded simulator --speed 20", reply=100, model=None)
    assert main(["plan", "quantum_research"]) == 0
    assert "measured there at other speeds: plan --sim-speed 20 (18 requests)" in \
        capsys.readouterr().out
    assert main(["plan", "quantum_research", "--sim-speed", "20"]) == 0
    assert "profile: embedded simulator --speed 20 (gpt-4o-mini), 18 requests" in \
        capsys.readouterr().out
    assert main(["plan", "quantum_research", "--sim-speed", "20", "--base-url", URL]) == 2
    assert "does not go with --base-url" in capsys.readouterr().err


def test_a_profile_of_an_earlier_simulator_is_set_aside_and_replaced():
    from chainray.plan.profiles import known_profiles

    learn(load_chain("code_review"), SIMULATOR)
    learn(load_chain("code_review"))
    (old,) = [p for p in profiles_dir().glob("*.json")
              if json.loads(p.read_text())["endpoint"] == SIMULATOR]
    data = json.loads(old.read_text())
    del data["simulator"]  # as the simulator of whole-word tokens wrote it
    old.write_text(json.dumps(data))
    model = data["model"]
    assert load_profile(SIMULATOR, model) == (None, None)
    assert [e for e, _, _ in known_profiles()] == [endpoint_label(URL)]
    assert load_profile(URL, "m")[0].runs == 3  # another endpoint's profile stands
    learn(load_chain("code_review"), SIMULATOR)
    assert load_profile(SIMULATOR, model)[0].runs == 3  # learned afresh

"""Issue 16: the spend cap, the response cache, on_error isolate and hedged stragglers."""

from __future__ import annotations

import json
import uuid
from collections import Counter

import pytest
from helpers import fan_chain, job, session_for
from step_failing_server import StepFailingServer

from chainray.api.config import SessionConfig
from chainray.api.session import Driver
from chainray.cli.main import main
from chainray.plan.cost import load_prices

FAST = ["--quiet", "--no-dashboard", "--rpm", "100000", "--tpm", "10000000"]


def server_cost(sim) -> float:
    """What the server counted, at the bundled price table."""
    prices = load_prices()
    return sum(prices.cost(r["model"], r["prompt_tokens"], r["completion_tokens"],
                           r["cached_tokens"])
               for r in sim.stats()["request_log"] if r["status"] == 200)


def test_the_cap_holds_with_over_a_hundred_calls_in_flight(ray_session, sim):
    # Calls last ~3 s, so dispatch under load still overlaps 100+ of them.
    sim.configure(speed=0.25, ttft_sigma=0.0, rpm=100_000, tpm=10_000_000)
    cap = 0.003
    runs = [job(fan_chain(130, max_tokens=20, name=f"fan{i}")) for i in range(3)]
    with session_for(sim, max_cost=cap, max_concurrency=400, rpm=100_000,
                     tpm=10_000_000) as session:
        results = list(session.run_many(runs, window=3))
        state = session.spend_state()
    stats = sim.stats()
    assert stats["peak_in_flight"] >= 100
    assert server_cost(sim) <= cap
    assert server_cost(sim) >= 0.5 * cap
    assert state["stopped"] and state["spent_usd"] <= cap
    refused = [s for r in results for s in r.steps if s.error and "spend cap" in s.error]
    assert refused and all(s.attempts == 0 for s in refused)  # a refused call sends nothing
    assert stats["requests"] == sum(r.api_calls for r in results)


def test_a_model_without_a_price_is_refused_up_front_under_a_cap(tmp_path, capsys):
    chain = tmp_path / "c.yaml"
    chain.write_text("name: c\nsteps:\n  - id: a\n    prompt: hi\n")
    code = main(["run", str(chain), "--max-cost", "1", "--model", "no-such-model",
                 "--base-url", "http://127.0.0.1:9/v1", *FAST])
    assert code == 2
    assert "no price for model 'no-such-model'" in capsys.readouterr().err


def test_a_capped_batch_stops_starting_runs_and_resumes_with_a_higher_cap(
        ray_session, sim, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CHAINRAY_HOME", str(tmp_path))
    sim.configure(speed=50.0)
    inputs = tmp_path / "in.jsonl"
    inputs.write_text("\n".join(json.dumps({"brief": f"brief {i}"}) for i in range(12)))
    out, again = tmp_path / "out.jsonl", tmp_path / "again.jsonl"
    args = ["run", "progressive_refinement", "--inputs", str(inputs), "--base-url",
            sim.base_url, "--batch-window", "2", *FAST]
    assert main([*args, "--json", str(out), "--max-cost", "0.002"]) == 1
    err = capsys.readouterr().err
    assert "spend cap $0.0020 reached" in err and "never started" in err
    summary = json.loads(out.read_text().splitlines()[-1])["batch"]
    assert summary["spend"]["stopped"] and summary["not_started"]
    assert summary["spend"]["spent_usd"] <= 0.002 and server_cost(sim) <= 0.002
    batch_id = summary["batch_id"]
    assert main(["run", "progressive_refinement", "--resume", batch_id, "--base-url",
                 sim.base_url, "--json", str(again), "--max-cost", "1", *FAST]) == 0
    final = json.loads(again.read_text().splitlines()[-1])["batch"]
    assert final["runs"] == final["ok"] == 12


def test_a_rerun_with_the_cache_sends_nothing_and_gives_the_same_output(
        ray_session, sim, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CHAINRAY_HOME", str(tmp_path))
    sim.configure(speed=50.0)
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    args = ["run", "quantum_research", "--base-url", sim.base_url, "--cache", *FAST]
    assert main([*args, "--json", str(first)]) == 0
    sent = sim.stats()["requests"]
    sim.reset()
    assert main([*args, "--json", str(second)]) == 0
    assert sim.stats()["requests"] == 0 and sent > 0
    a, b = json.loads(first.read_text()), json.loads(second.read_text())
    assert a["output"] == b["output"]
    assert [s["output"] for s in a["steps"]] == [s["output"] for s in b["steps"]]
    assert all(s["cached"] for s in b["steps"]) and not any(s["cached"] for s in a["steps"])
    assert b["api_calls"] == 0 and b["estimated_cost"] == 0 and b["total_tokens"] == 0
    capsys.readouterr()
    assert main(["cache", "stats"]) == 0
    assert f"{sent} cached replies" in capsys.readouterr().out
    assert main(["cache", "clear"]) == 0
    assert main(["cache", "stats"]) == 0
    assert " 0 cached replies" in capsys.readouterr().out


BRANCHES = """\
name: branches
inputs: {topic: "tea"}
defaults: {max_tokens: 20, stream: false}
on_error: isolate
steps:
  - id: a1
    prompt: "A {topic}"
  - id: a2
    after: [a1]
    prompt: "A2 {a1}"
  - id: b1
    prompt: "B {topic}"
  - id: b2
    after: [b1]
    prompt: "B2 {b1}"
  - id: final
    after: [a2, b2]
    prompt: "All {a2} {b2}"
"""


def test_isolate_keeps_independent_branches_and_resume_sends_only_the_failed_subtree(
        ray_session, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CHAINRAY_HOME", str(tmp_path))
    chain, first, second = tmp_path / "b.yaml", tmp_path / "1.json", tmp_path / "2.json"
    chain.write_text(BRANCHES)
    with StepFailingServer({"b1"}) as server:
        common = ["run", str(chain), "--base-url", server.base_url, *FAST]
        assert main([*common, "--json", str(first)]) == 1
        data = json.loads(first.read_text())
        status = {s["id"]: s["status"] for s in data["steps"]}
        assert data["status"] == "partial"
        assert status == {"a1": "ok", "a2": "ok", "b1": "error", "b2": "skipped",
                          "final": "skipped"}
        assert sorted(server.sent) == ["a1", "a2", "b1"]
        server.failing.clear()  # the fix
        server.sent.clear()
        assert main([*common, "--json", str(second), "--resume", data["run_id"]]) == 0
        assert sorted(server.sent) == ["b1", "b2", "final"]
        assert json.loads(second.read_text())["status"] == "ok"


def test_fail_still_stops_every_branch(ray_session, tmp_path, monkeypatch):
    monkeypatch.setenv("CHAINRAY_HOME", str(tmp_path))
    chain = tmp_path / "b.yaml"
    chain.write_text(BRANCHES.replace("on_error: isolate", "on_error: fail").replace(
        '  - id: a2\n    after: [a1]', '  - id: a2\n    after: [a1, b1]'))
    with StepFailingServer({"b1"}) as server:
        out = tmp_path / "o.json"
        assert main(["run", str(chain), "--base-url", server.base_url, "--json", str(out),
                     *FAST]) == 1
        assert json.loads(out.read_text())["status"] == "failed"
        assert "a2" not in server.sent


@pytest.mark.parametrize("hedge", [None, 0.5])
def test_hedged_steps_are_marked_and_their_duplicates_counted(ray_session, sim, hedge):
    sim.configure(speed=5.0, ttft_sigma=0.0, faults={"slow": 0.25, "slow_factor": 4.0},
                  rpm=100_000, tpm=10_000_000)
    runs = [job(fan_chain(30, max_tokens=30, name=f"h{i}")) for i in range(3)]
    with session_for(sim, hedge_after=hedge, max_concurrency=400, rpm=100_000,
                     tpm=10_000_000) as session:
        results = list(session.run_many(runs, window=1))
    steps = [s for r in results for s in r.steps]
    hedged = [s for s in steps if s.hedged]
    stats = sim.stats()
    # Every request the server saw is counted, and one cancelled before it left is not; one
    # cancelled as its bytes went out may have been dropped unread (the only way they differ).
    in_flight = sum(a.outcome == "cancelled" and a.code != "not_sent"
                    for s in steps for a in s.attempt_log)
    counted = sum(r.api_calls for r in results)
    assert stats["requests"] <= counted <= stats["requests"] + in_flight
    if hedge is None:
        assert counted == stats["requests"]
        assert not hedged and stats["requests"] == len(steps)
        return
    assert hedged and all(s.attempts >= 2 for s in hedged)  # a retry may add one
    # Each step's tokens against what the server counted for that step's requests: equal for
    # a step not hedged; a hedged step's cancelled loser is an estimate (a stream: its prompt
    # and the text it had delivered; a whole answer: the winner's count, the same prompt),
    # so its reply may differ by up to max_tokens (30) either way.
    served = Counter()
    for r in stats["request_log"]:
        served[r["tag"]] += r["prompt_tokens"] + r["completion_tokens"]
    answered = sum(r["prompt_tokens"] + r["completion_tokens"]
                   for r in stats["request_log"] if r["status"] == 200)
    counted = 0
    for run in results:
        for step in run.steps:
            tokens, tag = step.prompt_tokens + step.completion_tokens, \
                f"{run.scenario}:{run.strategy}:{step.id}"
            counted += tokens
            if step.hedged:
                losers = sum(a.outcome == "cancelled" and a.code != "not_sent"
                             for a in step.attempt_log)
                assert abs(tokens - served[tag]) <= 30 * losers, (step.id, tokens, served[tag])
            else:
                assert tokens == served[tag], (step.id, tokens, served[tag])
    assert counted >= answered > sum(s.prompt_tokens + s.completion_tokens for s in steps
                                     if not s.hedged)


def one_step_chain(name: str = "one", stream: bool = True):
    from chainray.spec.chain import chain_from_dict

    return chain_from_dict({"name": name, "inputs": {"topic": "tea"},
                            "defaults": {"max_tokens": 30, "stream": stream},
                            "steps": [{"id": "a", "prompt": "say {topic}"}]})


def run_against_a_straggler(server, stream: bool) -> list:
    """Sixteen one-step runs, one at a time, against ``server`` with ``--hedge-after 0.9``."""
    with server.running() as base_url:
        config = dict(base_url=base_url, env={"OPENAI_API_KEY": "sk-test"}, progress=False,
                      limiter_namespace=f"test-{uuid.uuid4().hex[:8]}", timeout=30.0,
                      rpm=100_000, tpm=10_000_000, hedge_after=0.9)
        with Driver(SessionConfig(**config)) as session:
            return list(session.run_many([job(one_step_chain(stream=stream))
                                          for _ in range(16)], window=1))


def test_a_straggler_is_hedged_and_the_run_ends_long_before_it_would(ray_session):
    from straggler_server import COMPLETION_TOKENS, PROMPT_TOKENS, StragglerServer

    # Not streamed: only the whole-duration rule can tell. Quick requests make the history
    # (the runners share it within a fraction of a second); the fifteenth is held for 8 s;
    # its duplicate is not. (On a busy machine a quick request may also outlast the others
    # enough to be hedged: that is the rule too, and is charged the same way.)
    server = StragglerServer(latency_s=0.05, slow={15}, slow_s=8.0)
    results = run_against_a_straggler(server, stream=False)
    by_request = {r["n"]: r for r in server.log}
    assert by_request[15]["status"] == 499  # the straggler was cancelled ...
    assert by_request[16]["status"] == 200  # ... its duplicate answered
    assert all(r.status == "ok" for r in results)
    assert max(r.latency_ms for r in results) < 0.5 * 8000  # no run waited for it
    slowed = [r for r in results if r.steps[0].hedged]
    assert slowed and all(r.steps[0].attempts == 2 for r in slowed)
    # A reply not streamed may have been generated whole: the cancelled request is charged
    # as much as the one that answered.
    assert all(r.steps[0].prompt_tokens == r.steps[0].attempts * PROMPT_TOKENS and
               r.steps[0].completion_tokens == r.steps[0].attempts * COMPLETION_TOKENS
               for r in results)


def test_a_stream_late_to_its_first_token_is_hedged_and_cut_when_its_duplicate_answers(
        ray_session):
    from straggler_server import COMPLETION_TOKENS, PROMPT_TOKENS, StragglerServer

    from chainray.tokens import estimate_prompt_tokens

    # Streams whose first content token comes after 0.05 s (an empty role chunk at once),
    # then 17 tokens 0.05 s apart; the fifteenth request holds its first token for 8 s.
    server = StragglerServer(latency_s=0.05, slow={15}, slow_s=8.0, chunk_s=0.05)
    results = run_against_a_straggler(server, stream=True)
    # It is hedged once in flight longer than the others took whole (~0.9 s), not at their
    # first-token time: a duplicate pays the prompt again.
    # (Runs go one at a time, so the late request's duplicate is the next one the server
    # sees. On a busy machine a quick request may be hedged too: charged the same way.)
    late, duplicate = (next(r for r in server.log if r["n"] == n) for n in (15, 16))
    assert all(r.status == "ok" for r in results)
    assert max(r.latency_ms for r in results) < 0.5 * 8000  # none waits for the late one
    # The late request was cut when its duplicate started answering (its first token came
    # 0.05 s after it left), not when the duplicate ended (0.85 s later), and sent nothing.
    assert late["status"] == 499 and late["chunks"] == 0
    assert duplicate["status"] == 200 and duplicate["chunks"] == COMPLETION_TOKENS
    assert late["left"] - duplicate["start"] < 0.5 < duplicate["end"] - late["left"]
    # Counted: the answer's usage, plus the cut request's prompt (as the answer counted it:
    # a server reports no usage for a request the client left, so this is an estimate) and
    # no output.
    hedged = [r.steps[0] for r in results if r.steps[0].hedged]
    for step in hedged:
        assert step.attempts == 2 and len(step.attempt_log) == 2 and step.usage_estimated
        assert sorted(a.outcome for a in step.attempt_log) == ["cancelled", "ok"]
        assert step.prompt_tokens == 2 * PROMPT_TOKENS != estimate_prompt_tokens(
            late["messages"])
        assert step.completion_tokens >= COMPLETION_TOKENS
    assert any(step.completion_tokens == COMPLETION_TOKENS for step in hedged)  # the late one
    assert all(r.total_tokens == PROMPT_TOKENS + COMPLETION_TOKENS
               for r in results if not r.steps[0].hedged)


def test_a_slow_decoder_is_hedged_by_its_pace_long_before_the_others_end(ray_session):
    from straggler_server import COMPLETION_TOKENS, PROMPT_TOKENS, StragglerServer

    # Streams of 17 chunks of ~85 characters 0.05 s apart (~0.9 s each); the fifteenth
    # starts on time and then sends a chunk every 0.5 s (it would take 8.5 s).
    server = StragglerServer(latency_s=0.05, chunk_s=0.05, chunk_chars=80, slow_pace={15},
                             slow_s=0.5)
    results = run_against_a_straggler(server, stream=True)
    slow, duplicate = (next(r for r in server.log if r["n"] == n) for n in (15, 16))
    # Its pace gives it away ~0.2 s after its first chunk: the duplicate leaves long before
    # the slow one has been in flight as long as the others take whole.
    assert duplicate["start"] - slow["start"] < 0.6
    assert slow["status"] == 499 and 1 <= slow["chunks"] <= 3
    assert duplicate["status"] == 200 and duplicate["chunks"] == COMPLETION_TOKENS
    assert all(r.status == "ok" for r in results)
    assert max(r.latency_ms for r in results) < 3000  # none waits for the slow one (8.5 s)
    # Charged: the answer, plus the cut stream's prompt and the output it had delivered
    # (its characters at the answer's tokens per character). On a busy machine a quick
    # request may be hedged too: charged the same way.
    hedged = [r.steps[0] for r in results if r.steps[0].hedged]
    assert all(step.usage_estimated and step.prompt_tokens == 2 * PROMPT_TOKENS and
               step.completion_tokens >= COMPLETION_TOKENS for step in hedged)
    assert any(step.completion_tokens == COMPLETION_TOKENS + slow["chunks"] for step in hedged)


def test_slow_simulator_requests_are_hedged_within_a_fraction_of_their_time(ray_session, sim):
    factor = 8.0
    sim.configure(speed=2.0, ttft_sigma=0.0, faults={"slow": 0.1, "slow_factor": factor},
                  rpm=100_000, tpm=10_000_000)
    runs = [job(fan_chain(6, max_tokens=30, name=f"s{i}", temperature=0)) for i in range(8)]
    with session_for(sim, hedge_after=0.8, max_concurrency=400, rpm=100_000,
                     tpm=10_000_000) as session:
        results = list(session.run_many(runs, window=2))
    log = sim.stats()["request_log"]
    normal_s = sorted(r["end"] - r["start"] for r in log if r["status"] == 200)
    slow_s = factor * normal_s[len(normal_s) // 2]  # what a slow request takes
    steps = [s for r in results for s in r.steps]
    hedged = [s for s in steps if s.hedged]
    assert hedged and all(s.latency_ms / 1000 < 0.6 * slow_s for s in hedged)
    assert len(log) == sum(r.api_calls for r in results) > len(steps)  # duplicates counted
    # Slow requests are late to their first token (ttft_sigma 0: every normal one takes as
    # long): the race ends at the duplicate's first token, and the cancelled request has sent
    # no output; the server counted its prompt only.
    cut = [r for r in log if r["status"] == 499]
    assert cut and all(r["completion_tokens"] == 0 for r in cut)
    # chainray counts each request as the server did: a hedged step pays a second prompt and
    # no second output (at temperature 0 the simulator's reply depends on the prompt only).
    plain = {s.id: (s.prompt_tokens, s.completion_tokens) for s in steps
             if not s.hedged and s.attempts == 1}
    assert any(s.id in plain for s in hedged)
    assert all((s.prompt_tokens, s.completion_tokens) == (2 * plain[s.id][0], plain[s.id][1])
               and s.usage_estimated for s in hedged if s.id in plain and s.attempts == 2)


def test_the_embedded_simulator_keeps_answering_when_it_writes_a_lot_to_its_output():
    import http.client
    import urllib.parse
    import urllib.request

    from chainray.sim import start_simulator

    # Every client that leaves a stream early (a hedge's loser) makes the simulator log a
    # traceback of about 2 KB: 100 of them fill an unread pipe (64 KiB) three times over, and a
    # simulator blocked on its output would answer nothing more.
    body = json.dumps({"model": "gpt-4o-mini", "max_tokens": 20, "stream": True,
                       "messages": [{"role": "user", "content": "hello"}]})
    with start_simulator("--ttft-median", "0.01", "--speed", "10") as sim:
        address = urllib.parse.urlparse(sim.base_url)
        for _ in range(100):
            connection = http.client.HTTPConnection(address.hostname, address.port, timeout=10)
            connection.request("POST", "/v1/chat/completions", body,
                               {"Content-Type": "application/json"})
            connection.getresponse().close()  # the headers only: the client leaves
            connection.close()
        request = urllib.request.Request(
            f"{sim.base_url}/chat/completions", headers={"Content-Type": "application/json"},
            data=body.replace('"stream": true', '"stream": false').encode())
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert json.load(answer)["choices"][0]["message"]["content"]
        log = sim.stats()["request_log"]
    # (the last client to leave may not have been noticed yet)
    assert len(log) == 101 and sum(r["status"] == 499 for r in log) >= 99

"""The provider Batch API (``--batch-api``, ``batch_api=True``): against a fixture server that
is not the simulator (tests/batch_server.py counts every request and bills every line), and
against the simulator's own /v1/files and /v1/batches. No Ray is involved."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from batch_server import BatchServer

from chainray.api.batch import run_batch_api
from chainray.api.config import SessionConfig
from chainray.api.resume import prepare_batch
from chainray.call.batch_client import BatchClient
from chainray.call.endpoint import Endpoint
from chainray.cli.main import main
from chainray.errors import EndpointError
from chainray.plan.cost import load_prices
from chainray.plan.schedule import resolve
from chainray.spec.chain import load_chain

RUNS = 5


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    path = tmp_path / "inputs.jsonl"
    path.write_text("".join(json.dumps({"topic": f"topic {i}"}) + "\n" for i in range(RUNS)))
    return path


def _run(capsys, *argv: str) -> tuple[int, list[dict], str]:
    """``chainray run`` in this process: exit code, JSON lines written, stderr."""
    out = Path(os.environ["CHAINRAY_HOME"]) / f"out-{time.monotonic_ns()}.jsonl"
    code = main(["run", *argv, "--quiet", "--json", str(out)])
    lines = [json.loads(x) for x in out.read_text().splitlines()] if out.exists() else []
    return code, lines, capsys.readouterr().err


def _run_batch(capsys, server: BatchServer, inputs: Path) -> tuple[int, list[dict], str]:
    """``chainray run quantum_research --inputs INPUTS --batch-api`` against ``server``."""
    with server.running() as url:
        return _run(capsys, "quantum_research", "--inputs", str(inputs), "--batch-api",
                    "--base-url", url)


def _list_cost(billed: list[dict]) -> float:
    prices = load_prices()
    return sum(prices.cost(b["model"], b["prompt"], b["completion"]) for b in billed)


def test_a_batch_of_runs_costs_one_job_per_phase_at_half_price(capsys, inputs):
    server = BatchServer()
    code, lines, err = _run_batch(capsys, server, inputs)
    runs, summary = lines[:-1], lines[-1]["batch"]
    phases = resolve(load_chain("quantum_research"), "hybrid").phases
    assert code == 0, err
    assert server.count["chat"] == 0  # no direct chat request
    assert server.count["batch_create"] == len(phases) == summary["batch_api"]["jobs"]
    assert [r["status"] for r in runs] == ["ok"] * RUNS
    assert len(server.billed) == RUNS * 6 == sum(r["api_calls"] for r in runs)
    assert sum(r["total_tokens"] for r in runs) == sum(
        b["prompt"] + b["completion"] for b in server.billed)
    cost = sum(r["estimated_cost"] for r in runs)
    assert cost == pytest.approx(0.5 * _list_cost(server.billed), rel=0.01)
    assert summary["estimated_cost"] == pytest.approx(cost) and summary["retries"] == 0
    assert all(s["batch_job"] for r in runs for s in r["steps"])
    # Upstream outputs reach the next phase's lines as online runs render them.
    synthesis = [b["body"] for b in server.billed if b["custom_id"].endswith("/synthesis")]
    assert all("hardware answer" in body["messages"][-1]["content"] for body in synthesis)


def test_a_failed_line_goes_into_the_next_job_and_is_paid_once(capsys, inputs):
    server = BatchServer(fail_once={"security"})
    code, lines, err = _run_batch(capsys, server, inputs)
    runs = lines[:-1]
    assert code == 0, err
    assert [r["status"] for r in runs] == ["ok"] * RUNS
    security = [s for r in runs for s in r["steps"] if s["id"] == "security"]
    assert [s["attempts"] for s in security] == [2] * RUNS  # one failed line, one retry
    assert lines[-1]["batch"]["retries"] == RUNS == sum(r["retries"] for r in runs)
    # the retries ride in one extra job (academic waits for security), never more
    assert server.count["batch_create"] == 4 + 1
    assert server.count["chat"] == 0
    assert sum(r["total_tokens"] for r in runs) == sum(
        b["prompt"] + b["completion"] for b in server.billed)


def test_a_job_over_the_enqueued_token_limit_is_sent_again_in_jobs_under_it(capsys, inputs):
    # The third phase (640 prompt tokens here) passes the limit: the server refuses its job
    # as a whole, stating the limit, and chainray learns it from that error.
    limit = 300
    server = BatchServer(enqueued_limit=limit)
    code, lines, err = _run_batch(capsys, server, inputs)
    runs = lines[:-1]
    assert code == 0, err
    assert [r["status"] for r in runs] == ["ok"] * RUNS
    refused = [j for j, job in server.jobs.items() if job["status"] == "failed"]
    assert len(refused) == 1 and server.enqueued[refused[0]] > limit
    later = server.created_ids[server.created_ids.index(refused[0]) + 1:]
    assert len(later) > 2 and all(server.enqueued[j] <= limit for j in later)
    # nothing in the refused job ran or counts: every line billed once, as counted
    assert len(server.billed) == RUNS * 6 == sum(r["api_calls"] for r in runs)
    assert len({b["custom_id"] for b in server.billed}) == len(server.billed)
    assert sum(r["total_tokens"] for r in runs) == sum(
        b["prompt"] + b["completion"] for b in server.billed)


def test_a_queue_other_jobs_hold_is_waited_for_and_a_line_over_the_limit_fails_uncounted(
        capsys, inputs):
    # Others hold 250 of 300 tokens while the first two jobs are refused: the first phase
    # (under 300 tokens) fits, so it waits and goes again; nothing refused is counted.
    server = BatchServer(enqueued_limit=300, others=250, others_for=2)
    code, lines, err = _run_batch(capsys, server, inputs)
    runs, summary = lines[:-1], lines[-1]["batch"]["batch_api"]
    assert code == 0, err
    assert [r["status"] for r in runs] == ["ok"] * RUNS and server.refused >= 2
    assert len(server.billed) == RUNS * 6 == sum(r["api_calls"] for r in runs)
    assert summary["lines"] == len(server.billed)  # refused lines were not sent after all
    assert len(summary["turnaround_s"]) == summary["jobs"] - server.refused
    # A limit below every line: each step fails at once, not counted, nothing billed.
    server = BatchServer(enqueued_limit=10)
    code, lines, err = _run_batch(capsys, server, inputs)
    runs = lines[:-1]
    assert code == 1 and all(r["status"] == "failed" for r in runs)
    assert server.billed == [] and sum(r["api_calls"] for r in runs) == 0
    assert {s["error_code"] for r in runs for s in r["steps"] if s["status"] == "error"} \
        == {"too_large"}
    assert server.count["batch_create"] <= 1 + RUNS * 3  # one refusal, then one per line


def test_a_line_the_server_rejects_is_reported_and_what_was_paid_is_kept(capsys, inputs):
    server = BatchServer(reject={"synthesis"})
    code, lines, err = _run_batch(capsys, server, inputs)
    runs = lines[:-1]
    assert code == 1
    assert {r["status"] for r in runs} == {"failed"}
    assert {r["error_code"] for r in runs} == {"bad_request"}
    assert all("is not a valid request" in r["error"] and "\n" not in r["error"]
               for r in runs)
    assert server.count["batch_create"] == 4  # a 400 is not sent again
    # the five answered steps of each run are journaled: a resume would not pay for them
    folder = next(p for p in (Path(os.environ["CHAINRAY_HOME"]) / "runs").iterdir()
                  if p.name == runs[0]["run_id"].rsplit("-", 1)[0])
    journal = (folder / f"{runs[0]['run_id']}.jsonl").read_text().splitlines()
    assert len(journal) == 1 + 5


@pytest.mark.parametrize("argv, says", [
    (("--batch-api",), "--batch-api runs a batch"),
    (("--deadline", "soon"), "--deadline"),
])
def test_bad_batch_flags_are_refused_in_one_line(capsys, argv, says):
    server = BatchServer()
    with server.running() as url:
        code = main(["run", "quantum_research", "--base-url", url, "--quiet", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and says in err[0]
    assert sum(server.count.values()) == 0


def test_an_endpoint_without_a_batch_api_is_bad_input(capsys, inputs):
    server = BatchServer(batch_api=False)
    code, _, err = _run_batch(capsys, server, inputs)
    assert code == 2
    assert "has no Batch API" in err and "HTTP 404" in err
    assert server.count["chat"] == 0


def test_fallbacks_reasoning_parameters_and_structured_output_work_in_lines(tmp_path):
    chain = tmp_path / "c.yaml"
    chain.write_text("""
name: lines
inputs: {topic: x}
defaults: {model: o4-mini, temperature: 0.3, max_tokens: 50, fallback_models: [gpt-4o-mini]}
steps:
  - id: facts
    prompt: "Facts about {topic}"
    output_schema: {type: object, properties: {answer: {type: string}}, required: [answer]}
  - id: count
    kind: python
    after: [facts]
    call: chainray.builtin_steps:join
  - id: summary
    after: [facts, count]
    model: gpt-9-missing
    prompt: "Summarise {facts} ({count})"
""")
    server = BatchServer(missing_models={"gpt-9-missing"})
    with server.running() as url:
        config = SessionConfig(base_url=url, batch_api=True)
        with prepare_batch([(str(chain), {"topic": "a"}), (str(chain), {"topic": "b"})],
                           "hybrid", config=config, journal=False) as batch:
            ran = run_batch_api(batch, config)
    assert [r.status for r in ran.results] == ["ok", "ok"]
    facts = [b["body"] for b in server.billed if b["custom_id"].endswith("/facts")]
    assert all("max_completion_tokens" in b and "max_tokens" not in b
               and "temperature" not in b for b in facts)  # o4-mini's parameters
    assert all(b["response_format"]["type"] == "json_schema" for b in facts)
    summary = [s for r in ran.results for s in r.steps if s.id == "summary"]
    assert {s.model for s in summary} == {"gpt-4o-mini"} and {s.attempts for s in summary} == {2}
    assert ran.report.jobs == 3 and server.count["chat"] == 0


TWO_MODELS = """
name: two_models
inputs: {topic: x}
defaults: {model: gpt-4o-mini, temperature: 0.3, max_tokens: 40}
steps:
  - id: facts
    prompt: "Three facts about {topic}"
  - id: question
    model: gpt-4o
    prompt: "The hardest open question about {topic}, in one sentence of plain words"
  - id: merge
    after: [facts, question]
    prompt: "Merge {facts} with {question}"
"""


def _two_models(tmp_path: Path, url: str, runs: int, batch_id: str | None = None,
                resume: str | None = None, **config) -> object:
    """``runs`` runs of TWO_MODELS through the Batch API at ``url``."""
    chain = tmp_path / "two_models.yaml"
    chain.write_text(TWO_MODELS)
    items = [(str(chain), {"topic": f"topic {i}"}) for i in range(runs)]
    config = SessionConfig(base_url=url, batch_api=True, **config)
    with prepare_batch(items, "hybrid", config=config, batch_id=batch_id, resume=resume,
                       journal=batch_id is not None or resume is not None) as batch:
        return run_batch_api(batch, config)


def _models_per_job(server: BatchServer) -> list[set[str]]:
    return [{line["body"]["model"] for line in server.jobs[j]["_lines"]}
            for j in server.created_ids]


def test_a_phase_of_two_models_sends_a_job_per_model_at_once(tmp_path):
    # Providers take one model per file (the server refuses a mixed one), and a phase's
    # jobs run at the provider together: neither job here ends before both exist, so
    # sending them one after another would leave the first to the 10 s deadline.
    server = BatchServer(hold_until=2)
    with server.running() as url:
        ran = _two_models(tmp_path, url, 4, deadline="10s")
    assert [r.status for r in ran.results] == ["ok"] * 4
    assert sorted(map(sorted, _models_per_job(server))) == [
        ["gpt-4o"], ["gpt-4o-mini"], ["gpt-4o-mini"]]  # two at once for phase 1, then merge
    assert ran.report.jobs == 3 and len(ran.report.turnaround_s) == 3
    assert len(server.billed) == 12 == sum(r.api_calls for r in ran.results)
    assert sum(r.total_tokens for r in ran.results) == sum(
        b["prompt"] + b["completion"] for b in server.billed)
    assert {s.model for r in ran.results for s in r.steps if s.id == "question"} == {"gpt-4o"}


def test_each_models_enqueued_limit_is_its_own_and_a_resume_keeps_it(tmp_path, monkeypatch):
    from chainray.runner.batch_jobs import JobLog

    class Died(BaseException):
        """the driver dies as it journals the first job cut to the limit it learned"""

    # gpt-4o may hold ~2 lines' prompt tokens; gpt-4o-mini has no limit.
    server = BatchServer(model_limits={"gpt-4o": 40})
    created = JobLog.created

    def die_after_the_refusal(self, file_id, job_id):
        job = server.jobs[job_id]
        if server.refused and job["status"] != "failed" and \
                job["_lines"][0]["body"]["model"] == "gpt-4o":
            raise Died
        created(self, file_id, job_id)

    with server.running() as url:
        with monkeypatch.context() as patch:
            patch.setattr(JobLog, "created", die_after_the_refusal)
            with pytest.raises(Died):
                _two_models(tmp_path, url, 6, batch_id="blimits")
        assert server.refused == 1  # gpt-4o's lines at once; gpt-4o-mini's were taken
        journal = Path(os.environ["CHAINRAY_HOME"]) / "runs" / "blimits" / "jobs.jsonl"
        assert JobLog(journal).limits_at(url) == {"gpt-4o": 40}
        ran = _two_models(tmp_path, url, 6, resume="blimits")
    assert [r.status for r in ran.results] == ["ok"] * 6
    assert server.refused == 1  # the resume cut gpt-4o's lines to the limit from the start
    assert all(len(models) == 1 for models in _models_per_job(server))
    assert all(server.enqueued[j] <= 40 for j in server.created_ids
               if _models_per_job(server)[server.created_ids.index(j)] == {"gpt-4o"}
               and server.jobs[j]["status"] != "failed")
    assert ran.report.adopted_jobs >= 1  # the chunk created as the driver died, not again
    assert len(server.billed) == 18 == len({b["custom_id"] for b in server.billed})
    assert sum(r.run_totals.api_calls for r in ran.results) == 18  # both invocations'


def test_a_model_whose_job_fails_leaves_the_others_answers_to_the_resume_unpaid_twice(
        tmp_path):
    # gpt-4o's job cannot be polled: the run fails with it, while gpt-4o-mini's job has
    # answered. Its answers were not journaled, so the job is not marked collected either:
    # the resume polls it again (free) instead of sending its lines again (paid twice).
    server = BatchServer(broken_polls={"gpt-4o"})
    with server.running() as url:
        with pytest.raises(EndpointError):
            _two_models(tmp_path, url, 3, batch_id="bbroken", backoff_s=0.2,
                        max_attempts=3)
        assert len(server.billed) == 3  # gpt-4o-mini's lines
        server.broken_polls = set()
        ran = _two_models(tmp_path, url, 3, resume="bbroken")
    assert [r.status for r in ran.results] == ["ok"] * 3
    assert ran.report.adopted_jobs == 2 and server.count["batch_create"] == 3
    assert len(server.billed) == 9 == len({b["custom_id"] for b in server.billed})
    assert sum(r.run_totals.api_calls for r in ran.results) == 9


def test_the_spend_cap_reserves_a_jobs_worst_case_before_creating_it(inputs):
    server = BatchServer()
    with server.running() as url:
        config = SessionConfig(base_url=url, batch_api=True, max_cost=0.0001)
        items = [("quantum_research", {"topic": f"t{i}"}) for i in range(RUNS)]
        with prepare_batch(items, "hybrid", config=config, journal=False) as batch:
            ran = run_batch_api(batch, config)
    assert server.count["batch_create"] == 0  # the first job's worst case did not fit
    assert {r.error_code for r in ran.results} == {"spend_cap"}
    assert ran.spend["stopped"] and ran.spend["spent_usd"] == 0


def _driver(url: str, home: str, *extra: str, chain: str = "quantum_research"
            ) -> subprocess.Popen:
    env = {**os.environ, "CHAINRAY_HOME": home}
    return subprocess.Popen(
        [sys.executable, "-m", "chainray.cli.main", "run", chain, "--base-url",
         url, "--quiet", *extra], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True)


def test_a_killed_driver_resumes_by_polling_its_job_not_creating_it_again(tmp_path, inputs):
    home = str(tmp_path / "home")
    server = BatchServer(hold=True)
    with server.running() as url:
        driver = _driver(url, home, "--batch-api", "--inputs", str(inputs))
        ends = time.monotonic() + 60
        while not server.retrieved and time.monotonic() < ends:  # the first job is polled
            time.sleep(0.05)
        assert server.retrieved, "the driver never polled a job"
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
        held = server.created_ids[0]
        polled_before = server.retrieved[held]
        server.hold = False
        batch_id = next((Path(home) / "runs").iterdir()).name
        # no --batch-api: the batch's journal says it went through the Batch API
        resumed = _driver(url, home, "--resume", batch_id, "--json",
                          str(tmp_path / "out.jsonl"))
        out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    assert server.retrieved[held] > polled_before  # the resume polled the held job
    phases = resolve(load_chain("quantum_research"), "hybrid").phases
    assert server.count["batch_create"] == len(phases)  # the held job was not created again
    assert server.created_ids.count(held) == 1
    lines = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["status"] for r in lines[:-1]] == ["ok"] * RUNS
    assert lines[-1]["batch"]["batch_api"]["adopted_jobs"] == 1
    assert len(server.billed) == RUNS * 6  # every line paid exactly once
    assert server.count["chat"] == 0


# -- the simulator's Batch API -------------------------------------------------------------

@pytest.fixture
def batch_sim(sim):
    sim.configure(batch_turnaround_s=0.2, batch_fail_every=0, batch_expire_every=0)
    yield sim
    sim.configure(batch_turnaround_s=2.0, batch_fail_every=0, batch_expire_every=0)


def _sim_batch(sim, **config):
    settings = SessionConfig(base_url=sim.base_url, batch_api=True, **config)
    items = [("quantum_research", {"topic": f"t{i}"}) for i in range(3)]
    with prepare_batch(items, "sequential", config=settings, journal=False) as batch:
        return run_batch_api(batch, settings)


def test_the_simulator_serves_a_batch_with_failed_lines_and_expired_jobs(batch_sim):
    batch_sim.configure(batch_fail_every=5, batch_expire_every=3)
    ran = _sim_batch(batch_sim)
    assert [r.status for r in ran.results] == ["ok"] * 3
    assert max(s.attempts for r in ran.results for s in r.steps) >= 2
    assert ran.report.jobs > 6  # sequential: one job per step, plus the retries
    assert batch_sim.stats(requests=False)["requests"] == 0  # no chat request


def test_the_simulator_cancels_a_job_and_says_so_per_line(batch_sim):
    batch_sim.configure(batch_turnaround_s=60)
    client = BatchClient(Endpoint(base_url=batch_sim.base_url, api_key="k"))
    line = {"custom_id": "r/s", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}}
    job = client.create(client.upload([line]), {})
    assert client.retrieve(job.id).status == "in_progress"
    cancelled = client.cancel(job.id)
    assert cancelled.status == "cancelled"
    [row] = client.read(cancelled.error_file_id)
    assert row["custom_id"] == "r/s" and row["error"]["code"] == "batch_cancelled"


def test_bench_rows_through_the_batch_api_cost_half_of_list():
    from chainray.api.batch import bench_batch_api

    server = BatchServer()
    with server.running() as url:
        config = SessionConfig(base_url=url, batch_api=True)
        rows = bench_batch_api(load_chain("quantum_research"), ["sequential", "hybrid"], 2,
                               None, config)
    assert [r.strategy for r in rows] == ["sequential+batch"] * 2 + ["hybrid+batch"] * 2
    assert all(r.status == "ok" for r in rows)
    assert server.count["batch_create"] == 6 + 4  # one job per phase, repeats together
    assert sum(r.estimated_cost for r in rows) == pytest.approx(
        0.5 * _list_cost(server.billed), rel=0.01)


# -- --deadline: batch or online -----------------------------------------------------------

def test_the_advisor_picks_by_deadline_and_cost_and_says_where_turnaround_came_from():
    from chainray.plan.advisor import batch_or_online

    window = "the provider's documented completion window"
    online, why = batch_or_online(7200, 60, 1.0, 0.5, 4, 86400, window)
    assert online is False and "may not finish within" in why[-1] and window in why[1]
    batch, why = batch_or_online(7200, 60, 1.0, 0.5, 4, 30, "median of 3 job(s)")
    assert batch is True and "costs less" in why[-1]
    batch, why = batch_or_online(100, 600, 1.0, 0.5, 4, 20, "median of 3 job(s)")
    assert batch is True and "only the Batch API fits" in why[-1]


def test_deadline_advice_uses_measured_turnarounds_else_the_completion_window(
        tmp_path, monkeypatch):
    from chainray.api.batch import batch_forecast
    from chainray.api.planning import batch_api_advice

    monkeypatch.setenv("CHAINRAY_HOME", str(tmp_path))
    chain = load_chain("quantum_research")
    config = SessionConfig(base_url="http://127.0.0.1:9/v1", deadline="2h")
    use, why = batch_api_advice(config, chain, "hybrid", [{"topic": "t"}] * 5, 64)
    assert use is False and "completion window" in why[1]
    log = tmp_path / "runs" / "b1" / "jobs.jsonl"
    log.parent.mkdir(parents=True)
    log.write_text('{"event": "uploaded", "file": "f", "lines": {}}\n'
                   '{"event": "collected", "file": "f", "turnaround_s": 40.0}\n')
    use, why = batch_api_advice(config, chain, "hybrid", [{"topic": "t"}] * 5, 64)
    assert use is True and "median of 1 job(s)" in why[1] and "4 job(s)" in why[1]
    # A limit learned at this endpoint cuts a phase into jobs in series; another's does not.
    log.write_text(log.read_text() + json.dumps({
        "event": "limit", "model": "gpt-4o-mini", "tokens": 300,
        "endpoint": "http://127.0.0.1:9/v1"}) + "\n" + json.dumps({
        "event": "limit", "model": "gpt-4o-mini", "tokens": 10,
        "endpoint": "http://elsewhere.example/v1"}) + "\n")
    use, why = batch_api_advice(config, chain, "hybrid", [{"topic": "t"}] * 5, 64)
    forecast = batch_forecast(config, chain, "hybrid", [{"topic": "t"}] * 5, 64)
    series = sum(math.ceil(sum(forecast.step_prompt_tokens[s] for s in phase) / 240)
                 for phase in resolve(chain, "hybrid").phases)
    assert series > 4 and f"{series} job(s)" in why[1]
    assert "gpt-4o-mini's enqueued-token limit of 300" in why[2]


def test_a_session_with_batch_api_runs_many_without_ray(monkeypatch):
    import chainray
    from chainray.api.session import Driver

    def no_ray(*args, **kwargs):
        raise AssertionError("a Batch API session started a Ray driver")

    monkeypatch.setattr(Driver, "__init__", no_ray)  # whatever Ray this test process has
    server = BatchServer()
    with server.running() as url:
        with chainray.Session(batch_api=True, base_url=url) as session:
            runs = session.run_many([("quantum_research", {"topic": "a"}),
                                     ("quantum_research", {"topic": "b"})], "sequential")
    assert [r.status for r in runs] == ["ok", "ok"] and runs.batch_id
    assert server.count["batch_create"] == 6 and server.count["chat"] == 0


def test_a_deadline_cancels_the_job_still_running_and_sends_nothing_more():
    server = BatchServer(hold=True)
    with server.running() as url:
        config = SessionConfig(base_url=url, batch_api=True, deadline="1s")
        items = [("quantum_research", {"topic": f"t{i}"}) for i in range(2)]
        with prepare_batch(items, "hybrid", config=config, journal=False) as batch:
            ran = run_batch_api(batch, config)
    assert server.count["batch_create"] == 1 and server.count["batch_cancel"] == 1
    assert {r.status for r in ran.results} == {"failed"}
    assert {r.error_code for r in ran.results} <= {"timeout", "interrupted"}
    assert not server.billed


def test_a_queue_that_stays_full_fails_its_steps_within_the_deadline_uncounted():
    server = BatchServer(enqueued_limit=300, others=290, others_for=10**6)  # never frees
    with server.running() as url:
        config = SessionConfig(base_url=url, batch_api=True, deadline="4s")
        items = [("quantum_research", {"topic": f"t{i}"}) for i in range(2)]
        started = time.monotonic()
        with prepare_batch(items, "hybrid", config=config, journal=False) as batch:
            ran = run_batch_api(batch, config)
    assert time.monotonic() - started < 8
    assert {r.status for r in ran.results} == {"failed"}
    failed = [s for r in ran.results for s in r.steps if s.status == "error"]
    assert failed and {s.error_code for s in failed} == {"rate_limited"}
    assert all("queue stayed full" in s.error for s in failed)
    assert server.refused == server.count["batch_create"] >= 2 and not server.billed
    assert sum(r.api_calls for r in ran.results) == 0


def test_a_job_created_but_not_journaled_is_found_by_its_file(monkeypatch):
    from chainray.runner.batch_jobs import JobLog

    class Died(BaseException):
        """the driver dies between creating a job and journaling its id"""

    def die(self, file_id, job_id):
        raise Died

    server = BatchServer()
    items = [("quantum_research", {"topic": f"t{i}"}) for i in range(2)]
    with server.running() as url:
        config = SessionConfig(base_url=url, batch_api=True)
        with monkeypatch.context() as patch:
            patch.setattr(JobLog, "created", die)
            with pytest.raises(Died), prepare_batch(items, "hybrid", config=config,
                                                    batch_id="bfound") as batch:
                run_batch_api(batch, config)
        with prepare_batch(items, "hybrid", config=config, resume="bfound") as batch:
            ran = run_batch_api(batch, config)
    assert ran.report.adopted_jobs == 1 and server.count["batch_list"] == 1
    assert server.count["batch_create"] == 4  # the found job was not created again
    assert len(server.billed) == 2 * 6 and [r.status for r in ran.results] == ["ok", "ok"]


def test_ctrl_c_while_a_job_runs_exits_130_and_the_resume_polls_that_job(tmp_path, inputs):
    home = str(tmp_path / "home")
    server = BatchServer(hold=True)
    with server.running() as url:
        driver = _driver(url, home, "--batch-api", "--inputs", str(inputs))
        ends = time.monotonic() + 60
        while not server.retrieved and time.monotonic() < ends:
            time.sleep(0.05)
        os.killpg(driver.pid, signal.SIGINT)
        _, err = driver.communicate(timeout=60)
        server.hold = False
        batch_id = next((Path(home) / "runs").iterdir()).name
        resumed = _driver(url, home, "--resume", batch_id)
        resumed.communicate(timeout=120)
    assert driver.returncode == 130 and "a resume polls them" in err
    assert resumed.returncode == 0 and server.created_ids.count("job0") == 1
    assert server.count["batch_create"] == 4 and len(server.billed) == RUNS * 6


def test_ctrl_c_while_two_models_jobs_run_stops_both_and_the_resume_polls_them(tmp_path,
                                                                              inputs):
    chain, home = tmp_path / "two_models.yaml", str(tmp_path / "home")
    chain.write_text(TWO_MODELS)
    server = BatchServer(hold=True)
    with server.running() as url:
        driver = _driver(url, home, "--batch-api", "--inputs", str(inputs), chain=str(chain))
        ends = time.monotonic() + 60
        while len(server.retrieved) < 2 and time.monotonic() < ends:
            time.sleep(0.05)
        os.killpg(driver.pid, signal.SIGINT)
        _, err = driver.communicate(timeout=30)  # the other model's thread stops too
        server.hold = False
        batch_id = next((Path(home) / "runs").iterdir()).name
        resumed = _driver(url, home, "--resume", batch_id, chain=str(chain))
        _, resumed_err = resumed.communicate(timeout=120)
    assert driver.returncode == 130 and "a resume polls them" in err
    assert resumed.returncode == 0, resumed_err
    assert server.created_ids[:2] == ["job0", "job1"] and server.count["batch_create"] == 3
    assert len(server.billed) == RUNS * 3 == len({b["custom_id"] for b in server.billed})

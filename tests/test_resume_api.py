"""Resume through the Python API (issue 22.4), one resume at a time and resumes that finish
what failed (issue 26.3, 26.4): counted at the server, which sees every request."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys

import pytest
from step_failing_server import StepFailingServer

import chainray
from chainray.api.library import prepare_batch, prepare_run
from chainray.cli.main import main
from chainray.errors import InputError
from chainray.runner.journal import journal_dir
from chainray.spec.chain import chain_from_dict

FAST = {"rpm": 100_000, "tpm": 10_000_000}
FLAGS = ["--quiet", "--no-dashboard", "--rpm", "100000", "--tpm", "10000000"]


def branches(name: str = "branches"):
    """a1 -> a2 and b1 -> b2, both into final; on_error isolate."""
    return chain_from_dict({
        "name": name, "inputs": {"topic": "tea"}, "on_error": "isolate",
        "defaults": {"max_tokens": 20, "stream": False},
        "steps": [{"id": "a1", "prompt": "A {topic}"},
                  {"id": "a2", "after": ["a1"], "prompt": "A2 {a1}"},
                  {"id": "b1", "prompt": "B {topic}"},
                  {"id": "b2", "after": ["b1"], "prompt": "B2 {b1}"},
                  {"id": "final", "after": ["a2", "b2"], "prompt": "All {a2} {b2}"}]})


def solo(name: str = "solo"):
    return chain_from_dict({"name": name, "inputs": {"topic": "tea"},
                            "defaults": {"max_tokens": 20, "stream": False},
                            "steps": [{"id": "c1", "prompt": "C {topic}"}]})


def test_run_and_run_many_take_resume():
    assert "resume" in inspect.signature(chainray.run).parameters
    assert "resume" in inspect.signature(chainray.Session.run).parameters
    assert "resume" in inspect.signature(chainray.Session.run_many).parameters


def test_chainray_run_resume_sends_only_the_unfinished_steps(ray_session, tmp_path,
                                                             monkeypatch):
    monkeypatch.setenv("CHAINRAY_HOME", str(tmp_path))
    with StepFailingServer({"b1"}) as server:
        first = chainray.run(branches(), base_url=server.base_url, **FAST)
        assert first.status == "partial" and sorted(server.sent) == ["a1", "a2", "b1"]
        server.failing.clear()
        server.sent.clear()
        again = chainray.run(branches(), base_url=server.base_url, resume=first.run_id, **FAST)
    assert sorted(server.sent) == ["b1", "b2", "final"]  # a1 and a2 were not sent again
    assert again.status == "ok" and again.run_id == first.run_id
    assert set(again.resumed_steps) == {"a1", "a2"} and again.api_calls == 3
    # A run that is not there, or another chain under that id, is refused: nothing sent.
    with pytest.raises(InputError, match="no journal"):
        chainray.run(branches(), base_url=server.base_url, resume="nosuchrun")
    with pytest.raises(InputError, match="same ones"):
        chainray.run(solo(), base_url=server.base_url, resume=first.run_id)


def test_run_many_resume_reruns_failed_runs_without_their_finished_steps(
        ray_session, tmp_path, monkeypatch):
    monkeypatch.setenv("CHAINRAY_HOME", str(tmp_path))
    runs = [solo("s0"), branches(), solo("s2")]
    with StepFailingServer({"b1"}) as server, chainray.Session(base_url=server.base_url,
                                                               **FAST) as session:
        first = session.run_many(runs, window=1)
        assert [r.status for r in first] == ["ok", "partial", "ok"] and first.batch_id
        server.failing.clear()
        server.sent.clear()
        again = session.run_many(runs, resume=first.batch_id)
        assert sorted(server.sent) == ["b1", "b2", "final"]
        assert [r.status for r in again] == ["ok", "ok", "ok"]
        assert again.resumed == [first[0].run_id, first[2].run_id]
        assert [r.run_id for r in again] == [r.run_id for r in first]
        assert again[0] == first[0]  # an ok run is the recorded one, nothing sent
        with pytest.raises(InputError, match="same ones"):  # other runs under that id
            session.run_many(runs[:2], resume=first.batch_id)
        with pytest.raises(InputError, match="same ones"):
            session.run_many(runs, "sequential", resume=first.batch_id)


def test_cli_resume_of_a_batch_reruns_its_partial_runs_and_counts_every_invocation(
        ray_session, tmp_path, monkeypatch):
    monkeypatch.setenv("CHAINRAY_HOME", str(tmp_path))
    chain, lines = tmp_path / "b.yaml", tmp_path / "in.jsonl"
    chain.write_text(json.dumps(branches().model_dump(mode="json", exclude_none=True)))
    lines.write_text("\n".join(json.dumps({"topic": t}) for t in ("tea", "rye", "oat")))
    first, second = tmp_path / "1.jsonl", tmp_path / "2.jsonl"
    with StepFailingServer({"b1"}) as server:
        common = ["run", str(chain), "--base-url", server.base_url, *FLAGS]
        assert main([*common, "--inputs", str(lines), "--json", str(first)]) == 1
        batch_id = json.loads(first.read_text().splitlines()[-1])["batch"]["batch_id"]
        assert server.requests == 9  # a1, a2, b1 of each run
        server.failing.clear()
        # A run of the batch resumes on its own, by its id (its journal is in the batch's
        # folder); then the batch finishes the other two and leaves that one be.
        assert main([*common, "--resume", f"{batch_id}-0"]) == 0
        assert server.requests == 12
        assert main([*common, "--resume", batch_id, "--json", str(second)]) == 0
        assert server.requests == 18  # b1, b2, final of each run: nothing sent twice
    rows = [json.loads(line) for line in second.read_text().splitlines()]
    summary = rows[-1]["batch"]
    assert summary["ok"] == summary["runs"] == 3 and summary["resumed_runs"] == 1
    assert summary["api_calls"] == 6
    assert summary["run_totals"]["api_calls"] == server.requests  # every invocation's


_HOLD = """
import sys, time
from pathlib import Path
from chainray.runner.journal import locked
with locked(Path(sys.argv[1]), "run"):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_a_run_being_executed_refuses_a_second_resume_naming_the_process(
        tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CHAINRAY_HOME", str(tmp_path))
    with prepare_run(solo(), run_id="r7") as prepared:  # a run started and journaled
        assert prepared.path == journal_dir() / "r7.jsonl"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(journal_dir() / "r7.lock")],
                              stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "CHAINRAY_HOME": str(tmp_path)})
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(InputError, match=f"process {holder.pid}"):
            prepare_run(solo(), resume="r7")
        # The CLI refuses at once too (exit 2), before Ray or any endpoint is touched.
        assert main(["run", _write(tmp_path), "--resume", "r7",
                     "--base-url", "http://127.0.0.1:9/v1", "--quiet"]) == 2
        assert f"process {holder.pid}" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait(timeout=30)
    # The kernel released the dead holder's lock: the run can be resumed now.
    with prepare_run(solo(), resume="r7") as prepared:
        assert prepared.job.resumed == {}


def _write(tmp_path) -> str:
    path = tmp_path / "solo.yaml"
    path.write_text(json.dumps(solo().model_dump(mode="json", exclude_none=True)))
    return str(path)


def test_a_batch_being_executed_is_locked_for_a_second_invocation(tmp_path, monkeypatch):
    monkeypatch.setenv("CHAINRAY_HOME", str(tmp_path))
    with prepare_batch([solo(), solo()]) as batch:
        with pytest.raises(InputError, match=f"process {os.getpid()}"):
            prepare_batch([solo(), solo()], resume=batch.batch_id)
    with prepare_batch([solo(), solo()], resume=batch.batch_id) as again:  # released
        assert [job.run_id for job in again.todo] == [f"{batch.batch_id}-0",
                                                      f"{batch.batch_id}-1"]


def test_a_journal_with_a_step_twice_keeps_the_first(tmp_path, monkeypatch):
    from chainray.results import StepResult
    from chainray.runner.journal import append_step

    monkeypatch.setenv("CHAINRAY_HOME", str(tmp_path))
    with prepare_run(solo(), run_id="r8") as prepared:
        path = prepared.path
    append_step(path, StepResult(id="c1", status="ok", output="first", attempts=1))
    append_step(path, StepResult(id="c1", status="ok", output="second", attempts=1))
    append_step(path, StepResult(id="c1", status="error", error="x"))  # never journaled
    assert len(path.read_text().splitlines()) == 3  # the header and one line per record
    with prepare_run(solo(), resume="r8") as prepared:
        assert prepared.job.resumed["c1"].output == "first"

"""Resume that cannot mix up runs, and batches that survive kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import ray

from chainray.cli.main import main
from chainray.runner.journal import Journal, journal_dir, run_key, run_parts
from chainray.spec.chain import load_chain

FAST = ["--quiet", "--no-dashboard"]


def journal_of(run_id: str, model: str | None = None) -> Journal:
    chain = load_chain("progressive_refinement")
    parts = run_parts(chain.model_dump_json(), "hybrid", dict(chain.inputs), model)
    journal = Journal(journal_dir(), run_id, run_key(parts), parts)
    journal.start()
    return journal


def test_resume_with_another_model_is_refused_saying_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CHAINRAY_HOME", str(tmp_path))
    journal_of("r1")
    assert main(["run", "progressive_refinement", "--resume", "r1", "--model", "gpt-4o",
                 *FAST]) == 2
    err = capsys.readouterr().err
    assert "--model" in err and "same ones" in err


def test_corrupt_journal_exits_2_with_a_reason(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CHAINRAY_HOME", str(tmp_path))
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "r2.jsonl").write_text("\x00garbage{\n")
    assert main(["run", "progressive_refinement", "--resume", "r2", *FAST]) == 2
    assert "not a chainray journal" in capsys.readouterr().err


def test_run_ids_cannot_escape_the_runs_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CHAINRAY_HOME", str(tmp_path / "home"))
    (tmp_path / "x.jsonl").write_text('{"run_id": "x", "key": "k"}\n')
    for bad in ("../../x", "/etc/passwd", "a/b", ".hidden", ""):
        assert main(["run", "progressive_refinement", "--resume", bad, *FAST]) == 2
        assert "run id" in capsys.readouterr().err
    assert not (tmp_path / "home").exists()


def test_a_resumed_complete_run_counts_only_what_it_sent(ray_session, sim, tmp_path,
                                                         monkeypatch, capsys):
    monkeypatch.setenv("CHAINRAY_HOME", str(tmp_path))
    sim.configure(speed=50.0)
    first, again = tmp_path / "first.json", tmp_path / "again.json"
    assert main(["run", "progressive_refinement", "--base-url", sim.base_url, "--json",
                 str(first), *FAST]) == 0
    run_id = json.loads(first.read_text())["run_id"]
    sim.reset()
    assert main(["run", "progressive_refinement", "--base-url", sim.base_url, "--json",
                 str(again), "--resume", run_id, *FAST]) == 0
    data = json.loads(again.read_text())
    assert sim.stats()["requests"] == 0
    assert data["api_calls"] == 0 and data["total_tokens"] == 0
    assert data["run_totals"]["api_calls"] == 3 and data["run_totals"]["total_tokens"] > 0
    assert set(data["resumed_steps"]) == {"draft", "expand", "polish"}


SEQUENCE = """\
name: seq3
inputs: {topic: "tea"}
defaults: {max_tokens: 40}
steps:
  - id: one
    prompt: "One {topic}"
  - id: two
    after: [one]
    prompt: "Two {one:.40}"
  - id: three
    after: [two]
    prompt: "Three {two:.40}"
"""


def _journaled_steps(folder) -> dict[str, int]:
    return {path.stem: len(path.read_text().splitlines()) - 1
            for path in folder.glob("*.jsonl") if path.name != "results.jsonl"}


def test_batch_killed_then_resumed_sends_no_finished_step(ray_session, sim, tmp_path,
                                                          monkeypatch):
    sim.configure(speed=4.0, ttft_sigma=0.0)  # each step a few hundred ms
    monkeypatch.setenv("CHAINRAY_HOME", str(tmp_path))
    chain, inputs = tmp_path / "seq3.yaml", tmp_path / "in.jsonl"
    chain.write_text(SEQUENCE)
    inputs.write_text("\n".join(json.dumps({"topic": f"topic {i}"}) for i in range(6)))
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "CHAINRAY_HOME": str(tmp_path)}
    command = [sys.executable, "-m", "chainray.cli.main", "run", str(chain), "--inputs",
               str(inputs), "--json", str(first), "--batch-window", "2", "--address",
               ray.get_runtime_context().gcs_address, "--base-url", sim.base_url, "--quiet"]
    driver = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    batch_id = driver.stderr.readline().split()[1]
    threading.Thread(target=driver.stderr.read, daemon=True).start()
    deadline = time.time() + 90
    while time.time() < deadline and (not first.exists()
                                      or len(first.read_text().splitlines()) < 2):
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=10)
    finished_lines = first.read_text().splitlines()
    finished = [json.loads(line) for line in finished_lines if line.endswith("}")]
    assert 2 <= len(finished) < 6, "the batch should die part way"
    assert all("run_id" in run for run in finished)  # every finished run is readable
    # The dead driver's actors go down with it, but not at once: let a request they had in
    # flight land before reading the journals and counting what the resume sends (bounded).
    quiet_since, settle_deadline = time.time(), time.time() + 30
    while time.time() < settle_deadline and time.time() - quiet_since < 1.5:
        if sim.stats()["in_flight"]:
            quiet_since = time.time()
        time.sleep(0.1)
    folder = tmp_path / "runs" / batch_id
    journaled = _journaled_steps(folder)
    finished_ids = {json.loads(line)["run_id"]
                    for line in (folder / "results.jsonl").read_text().splitlines()}
    expected = sum(3 - journaled.get(f"{batch_id}-{i}", 0) for i in range(6)
                   if f"{batch_id}-{i}" not in finished_ids)
    sim.reset()
    assert main(["run", str(chain), "--resume", batch_id, "--json", str(second),
                 "--base-url", sim.base_url, *FAST]) == 0
    assert sim.stats()["requests"] == expected  # no finished step was sent again
    lines = [json.loads(line) for line in second.read_text().splitlines()]
    runs, summary = lines[:-1], lines[-1]["batch"]
    assert sorted(r["run_id"] for r in runs) == sorted(f"{batch_id}-{i}" for i in range(6))
    assert summary["runs"] == summary["ok"] == 6
    assert summary["resumed_runs"] == len(finished_ids)
    assert summary["api_calls"] == expected
    assert summary["run_totals"]["api_calls"] >= 18


def test_batch_resume_with_another_model_or_strategy_is_refused(tmp_path, monkeypatch,
                                                                 capsys):
    from chainray.api.resume import BatchManifest, BatchRecord, BatchRun

    monkeypatch.setenv("CHAINRAY_HOME", str(tmp_path))
    chain = load_chain("progressive_refinement")
    inputs = dict(chain.inputs)
    parts = run_parts(chain.model_dump_json(), "hybrid", inputs, None)
    BatchRecord(journal_dir(), "bx1").create(BatchManifest(
        batch_id="bx1", scenario="progressive_refinement",
        runs=[BatchRun(parts=parts, inputs=inputs)]))
    assert main(["run", "progressive_refinement", "--resume", "bx1", "--model", "gpt-4o",
                 *FAST]) == 2
    assert "--model" in capsys.readouterr().err
    assert main(["run", "progressive_refinement", "--resume", "bx1", "--strategy",
                 "sequential", *FAST]) == 2
    assert "strategy" in capsys.readouterr().err
    (journal_dir() / "bx1" / "manifest.json").write_text("{not json")
    assert main(["run", "progressive_refinement", "--resume", "bx1", *FAST]) == 2
    assert "not a batch manifest" in capsys.readouterr().err


def _shout(inputs: dict, upstream: dict) -> str:
    return inputs["topic"].upper()


def test_a_step_journals_its_own_reply_on_the_journals_node_and_only_there(tmp_path):
    """The process that received a reply writes it before returning it (a driver killed
    meanwhile loses nothing); on another node the Coordinator writes it when it arrives."""
    from chainray.runner.step_exec import StepRequest, execute_python_step
    from chainray.spec.chain import ModelSettings, Step

    journal = tmp_path / "r1.jsonl"
    request = StepRequest(run_id="r1", task_name="c:hybrid:s", inputs={"topic": "tea"},
                          step=Step(id="s", kind="python", call=_shout),
                          settings=ModelSettings(), sees=(), depends_on=(),
                          journal=str(journal), journal_node="node-a")
    here = execute_python_step(request, (), lambda: ("node-a", "task-1"))
    assert here.output == "TEA"
    assert [json.loads(line)["output"] for line in journal.read_text().splitlines()] == ["TEA"]
    elsewhere = execute_python_step(request, (), lambda: ("node-b", "task-2"))
    assert elsewhere.status == "ok" and len(journal.read_text().splitlines()) == 1

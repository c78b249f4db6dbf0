"""A planted API key must not reach logs, results, timelines, journals, errors or Ray's logs."""

from __future__ import annotations

import os
from pathlib import Path

import ray

from chainray.call.llm import redact
from chainray.cli.main import main
from chainray.errors import EndpointError

KEY = "sk-planted-SECRET-7f3a9c2e1b"


def _files_under(path: Path):
    return [p for p in path.rglob("*") if p.is_file()]


def test_planted_key_appears_nowhere(ray_session, sim, tmp_path, monkeypatch, capsys):
    sim.configure(api_key=KEY, speed=50.0)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("CHAINRAY_HOME", str(tmp_path / "home"))
    out, chart = tmp_path / "out.json", tmp_path / "t.html"
    assert main(["run", "quantum_research", "--base-url", sim.base_url, "--json", str(out),
                 "--timeline", str(chart), "--quiet"]) == 0
    # and a failing run, whose errors travel through Ray and into the result
    monkeypatch.setenv("OPENAI_API_KEY", KEY + "-wrong")
    failed = tmp_path / "failed.json"
    assert main(["run", "quantum_research", "--base-url", sim.base_url, "--json",
                 str(failed), "--quiet"]) == 1
    printed = capsys.readouterr()
    places = {"stdout": printed.out, "stderr": printed.err}
    for path in [out, chart, failed, *_files_under(tmp_path / "home")]:
        places[str(path)] = path.read_text()
    ray_logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
    for path in _files_under(ray_logs):
        places[str(path)] = path.read_text(errors="replace")
    leaks = [where for where, text in places.items() if KEY[:12] in text]
    assert leaks == [] and len(places) > 5
    assert "401" in failed.read_text()


def test_redact_removes_full_and_partial_keys():
    message = f"Incorrect API key provided: {KEY}. Also {KEY[:14]}..."
    assert KEY[:12] not in redact(message, KEY)
    assert str(EndpointError(redact(message, KEY), status=401)).count("[redacted]") == 2


def test_simulator_binds_loopback_unless_told(simulator):
    host = simulator.base_url.split("//")[1].split(":")[0]
    assert host == "127.0.0.1"
    assert os.environ.get("OPENAI_API_KEY") in (None, "")

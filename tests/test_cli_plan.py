"""The plan and scenarios commands, and bad input exiting 2."""

from __future__ import annotations

import subprocess
import sys

from chainray.cli.main import main


def test_plan_prints_critical_paths(capsys):
    assert main(["plan", "quantum_research"]) == 0
    out = capsys.readouterr().out
    assert "critical path: 6 steps" in out
    assert "critical path: 2 steps" in out
    assert "critical path: 4 steps" in out
    # the pick names what it passed over, so "parallel is fastest" above does not read as
    # another answer
    assert "recommended for latency: hybrid (not parallel: it withholds declared context)" in out
    assert main(["plan", "quantum_research", "--objective", "quality"]) == 0
    assert ("sequential has the most upstream context per step of those (each step sees 15 "
            "upstream outputs in all; predicted") in capsys.readouterr().out


def test_cycle_exits_2_naming_it(tmp_path, capsys):
    path = tmp_path / "cycle.yaml"
    path.write_text("name: c\nsteps:\n  - {id: a, prompt: x, after: [b]}\n"
                    "  - {id: b, prompt: x, after: [a]}\n")
    assert main(["plan", str(path)]) == 2
    err = capsys.readouterr().err
    assert "cycle" in err and str(path) in err


def test_scenarios_lists_quantum_research(capsys):
    assert main(["scenarios"]) == 0
    assert "quantum_research" in capsys.readouterr().out


def test_console_script_help_and_bad_flag():
    help_out = subprocess.run([sys.executable, "-m", "chainray.cli.main", "--help"],
                              capture_output=True, text=True)
    assert help_out.returncode == 0 and "plan" in help_out.stdout
    bad = subprocess.run([sys.executable, "-m", "chainray.cli.main", "plan"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "SCENARIO" in bad.stderr.upper()

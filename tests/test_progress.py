"""Progress through a Session: a run's line counts its own steps, not earlier runs'."""

from __future__ import annotations

from chainray.report.progress import ProgressView
from tests.helpers import fan_chain, job, session_for


def test_each_runs_progress_counts_only_its_own_steps(ray_session, sim, monkeypatch):
    shown: list[dict] = []
    monkeypatch.setattr(ProgressView, "show", lambda self, counts: shown.append(dict(counts)))
    chain = fan_chain(5)  # 6 steps
    with session_for(sim) as session:
        for _ in range(3):
            shown.clear()
            assert session.run(job(chain)).status == "ok"
            assert max(c.get("done", 0) for c in shown) == 6  # never 12 or 18
            assert shown[-1].get("calls") == 6 and shown[-1].get("runs") == 1


def test_a_batch_counts_runs_against_the_total(ray_session, sim, monkeypatch):
    shown: list[dict] = []
    monkeypatch.setattr(ProgressView, "show", lambda self, counts: shown.append(dict(counts)))
    with session_for(sim) as session:
        results = list(session.run_many([job(fan_chain(2)) for _ in range(5)], window=2,
                                        total=5, forecast_s=3.0))
    assert len(results) == 5
    assert shown[-1]["runs"] == 5 and shown[-1]["runs_total"] == 5
    assert shown[-1]["done"] == 5 * 3
    assert all(c.get("runs_running", 0) <= 2 for c in shown)


def test_a_log_gets_a_line_when_counts_change_and_a_heartbeat_when_they_do_not(
        monkeypatch, capsys):
    import chainray.report.progress as progress

    now = [0.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: now[0])
    view = ProgressView("run", every_s=5.0)  # stderr is captured: not a terminal
    with view:
        for second in range(0, 181):  # 3 minutes, shown every second
            now[0] = float(second)
            view.show({"running": 1, "done": 0 if second < 100 else 1})
    lines = capsys.readouterr().err.splitlines()
    # the first line at 5 s; nothing changes until 100 s: a heartbeat a minute later; the
    # change at 100 s; a heartbeat at 160 s (before: a line every 5 s, 36 of them)
    assert [line.split()[1] for line in lines] == ["5.0s", "65.0s", "100.0s", "160.0s"]

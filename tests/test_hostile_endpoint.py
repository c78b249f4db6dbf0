"""chainray against a hostile endpoint (tests/fixture_server.py, not the simulator).

For each misbehaviour: the exit code, ``api_calls`` equal to the requests the server saw, no
permit left behind (a following call is granted at once), the JSON written, and nothing
printed that a terminal would obey.
"""

from __future__ import annotations

import json
import time

import pytest
import ray

from chainray.actors.rate_limiter import LIMITER_NAMESPACE, limiter_name
from chainray.cli.main import main
from tests.fixture_server import MARKUP_TEXT, FixtureServer

CHAIN = """\
name: hostile
inputs: {q: "hello"}
defaults: {max_tokens: 20}
steps:
  - id: answer
    prompt: "Answer {q}"
"""
FLAGS = ["--max-attempts", "2", "--timeout", "1", "--quiet", "--no-journal"]


@pytest.fixture(scope="module")
def hostile():
    with FixtureServer() as server:
        yield server


@pytest.fixture
def chain_file(tmp_path):
    path = tmp_path / "hostile.yaml"
    path.write_text(CHAIN)
    return str(path)


def assert_no_permit_leak(base_url: str) -> None:
    limiter = ray.get_actor(limiter_name(base_url, "gpt-4o-mini"), namespace=LIMITER_NAMESPACE)
    assert ray.get(limiter.stats.remote(), timeout=30)["in_flight"] == 0
    started = time.monotonic()
    permit = ray.get(limiter.acquire.remote(1, 0.0, 5.0), timeout=30)
    ray.get(limiter.release.remote(permit.id, 0, None), timeout=30)
    assert time.monotonic() - started < 1.0 and permit.waited_s < 0.5


# misbehaviour, how many requests misbehave (None: all), exit code, requests the server sees
CASES = [
    ("ok", None, 0, 1),
    ("bad_json", None, 1, 2),
    ("bad_json", 1, 0, 2),
    ("html", None, 1, 2),
    ("empty_choices", None, 1, 2),
    ("missing_usage", None, 0, 1),
    ("length", None, 0, 1),
    ("null_content", None, 1, 1),
    ("refusal", None, 0, 1),
    ("retry_after_garbage", 1, 0, 2),
    ("retry_after_negative", 1, 0, 2),
    ("retry_after_nan", 1, 0, 2),
    ("retry_after_http_date", 1, 0, 2),
    ("retry_after_3600", None, 1, 1),
    ("insufficient_quota", None, 1, 1),
    ("context_length_exceeded", None, 1, 1),
    ("drip", None, 1, 2),
    ("reset", None, 1, 2),
    ("markup", None, 0, 1),
    ("error_markup", None, 1, 1),
]


@pytest.mark.parametrize("mode, times, code, requests", CASES,
                         ids=[f"{c[0]}-{'always' if c[1] is None else 'once'}" for c in CASES])
def test_misbehaviour_is_accounted_for(ray_session, hostile, chain_file, tmp_path, capsys,
                                       mode, times, code, requests):
    hostile.behave(mode, times)
    out = tmp_path / "out.json"
    started = time.monotonic()
    assert main(["run", chain_file, "--base-url", hostile.base_url, "--json", str(out),
                 *FLAGS]) == code
    elapsed = time.monotonic() - started
    data = json.loads(out.read_text())
    step = data["steps"][0]
    assert data["api_calls"] == hostile.requests == requests == step["attempts"]
    assert data["status"] == ("ok" if code == 0 else "failed")
    assert_attempts_timed(step, ok=code == 0)
    assert_no_permit_leak(hostile.base_url)
    printed = capsys.readouterr()
    ours = [line for line in (printed.out + printed.err).splitlines()
            if "(raylet)" not in line]  # Ray's own warnings are not chainray's output
    shown = "\n".join(ours)
    assert "\x1b" not in shown and "\x07" not in shown and "\u202e" not in shown
    if code:
        assert step["status"] == "error" and len(step["error"]) <= 300
        assert "\n" not in step["error"] and "Traceback" not in step["error"]
    assert elapsed < 30
    check = EXTRA.get(mode)
    if check:
        check(data, step, printed.out)


def assert_attempts_timed(step: dict, ok: bool) -> None:
    """Every request the server saw has its own entry, in order, ending as the step did."""
    sent = [a for a in step["attempt_log"] if a["code"] not in ("connect_failed",
                                                                  "permit_timeout")]
    assert len(sent) == step["attempts"]
    for attempt, following in zip(sent, sent[1:] + [None], strict=True):
        assert attempt["queued_at"] <= attempt["sent_at"] <= attempt["finished_at"]
        if following is not None:
            assert attempt["outcome"] != "ok" and attempt["finished_at"] <= following["queued_at"]
    assert (sent[-1]["outcome"] == "ok") == ok
    for attempt in sent:
        if attempt["outcome"] == "rate_limited":
            assert attempt["code"] in ("429", "rate_limit_exceeded", "insufficient_quota")


def _usage_estimated(data, step, out):
    assert step["usage_estimated"] and step["prompt_tokens"] > 0
    assert step["completion_tokens"] > 0 and data["estimated_cost"] > 0
    assert "usage estimated" in out


def _truncated(data, step, out):
    assert step["truncated"] and "truncated" in out


def _rate_limited_once(data, step, out):
    assert data["rate_limited"] == 1 and data["retries"] == 1
    assert [a["outcome"] for a in step["attempt_log"]] == ["rate_limited", "ok"]


def _markup(data, step, out):
    assert data["output"] == MARKUP_TEXT  # the JSON keeps the exact text
    assert "[/INST]" in out and "[bold red]red[/]" in out  # printed literally


def _refusal(data, step, out):
    assert data["output"] == "I can't help."


def _waits_too_long(data, step, out):
    assert "3600" in step["error"] and data["rate_limited"] == 1


def _quota(data, step, out):
    assert data["rate_limited"] == 1 and "insufficient_quota" in step["error"]


def _error_markup(data, step, out):
    assert "[/INST]" in out and "[/INST]" in step["error"]


EXTRA = {
    "missing_usage": _usage_estimated,
    "length": _truncated,
    "refusal": _refusal,
    "retry_after_garbage": _rate_limited_once,
    "retry_after_negative": _rate_limited_once,
    "retry_after_nan": _rate_limited_once,
    "retry_after_http_date": _rate_limited_once,
    "retry_after_3600": _waits_too_long,
    "insufficient_quota": _quota,
    "markup": _markup,
    "error_markup": _error_markup,
}


def test_results_are_written_before_anything_is_printed(ray_session, hostile, chain_file,
                                                        tmp_path, monkeypatch):
    hostile.behave("markup")

    def broken_terminal(*args, **kwargs):
        raise RuntimeError("the terminal went away")

    monkeypatch.setattr("chainray.cli.run.print_run", broken_terminal)
    out, timeline = tmp_path / "out.json", tmp_path / "timeline.html"
    with pytest.raises(RuntimeError):
        main(["run", chain_file, "--base-url", hostile.base_url, "--json", str(out),
              "--timeline", str(timeline), *FLAGS])
    assert json.loads(out.read_text())["output"] == MARKUP_TEXT
    assert timeline.stat().st_size > 0


def test_a_failed_step_under_continue_makes_the_run_partial(ray_session, hostile, tmp_path,
                                                             capsys):
    chain = tmp_path / "two.yaml"
    chain.write_text(CHAIN + '  - id: final\n    after: [answer]\n    prompt: "Sum {answer}"\n')
    hostile.behave("null_content", times=1)
    out = tmp_path / "out.json"
    assert main(["run", str(chain), "--base-url", hostile.base_url, "--json", str(out),
                 "--on-error", "continue", *FLAGS]) == 1
    data = json.loads(out.read_text())
    assert data["status"] == "partial" and data["api_calls"] == hostile.requests == 2
    assert [s["status"] for s in data["steps"]] == ["error", "ok"]
    assert "some steps failed" in capsys.readouterr().out

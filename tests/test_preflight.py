"""Exit 2 means nothing was sent: output paths, inputs and prompt sizes are checked before the
first request (the simulator counts what reached it), and all problems are named at once."""

from __future__ import annotations

import json

import pytest

import chainray
from chainray.api.preflight import context_window, input_problems
from chainray.cli.main import main
from chainray.errors import InputError
from chainray.spec.chain import chain_from_dict

CHAIN = "name: ok\ninputs: {topic: x}\nsteps:\n  - {id: a, prompt: 'hello {topic}'}\n"
BIG = "word " * 400_000  # 2 MB: about 500,000 tokens, four times gpt-4o-mini's window


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    try:
        code = main(args)
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


@pytest.fixture
def chain_file(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text(CHAIN)
    return str(path)


@pytest.fixture
def home(tmp_path, monkeypatch):
    folder = tmp_path / "home"
    monkeypatch.setenv("CHAINRAY_HOME", str(folder))
    return folder


def lines_file(tmp_path, *lines: str) -> str:
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def test_json_into_a_folder_is_refused_before_anything_is_sent(sim, chain_file, tmp_path,
                                                                capsys):
    code, err = run_cli(["run", chain_file, "--base-url", sim.base_url, "--quiet",
                         "--json", str(tmp_path)], capsys)
    assert code == 2 and f"--json: {tmp_path} is a folder" in err
    assert sim.stats()["requests"] == 0


def test_a_batch_writing_json_into_a_folder_is_refused_without_a_traceback(
        sim, chain_file, tmp_path, capsys, home):
    inputs = lines_file(tmp_path, '{"topic": "tea"}')
    code, err = run_cli(["run", chain_file, "--inputs", inputs, "--base-url", sim.base_url,
                         "--quiet", "--json", str(tmp_path)], capsys)
    assert code == 2 and "--json" in err and "is a folder" in err
    assert "Traceback" not in err and sim.stats()["requests"] == 0
    assert not (home / "runs").exists()  # no batch folder left behind


def test_a_lone_surrogate_in_an_input_line_refuses_the_batch(sim, chain_file, tmp_path,
                                                             capsys, home):
    inputs = lines_file(tmp_path, '{"topic": "tea"}', '{"topic": "bad \\ud800 text"}')
    code, err = run_cli(["run", chain_file, "--inputs", inputs, "--base-url", sim.base_url,
                         "--quiet"], capsys)
    assert code == 2 and "line 2: input 'topic' is not valid text" in err
    assert "'\\ud800' at character 4" in err and "Traceback" not in err
    assert sim.stats()["requests"] == 0 and not (home / "runs").exists()


def test_a_lone_surrogate_given_with_set_is_refused(sim, chain_file, capsys):
    # argv holds undecodable bytes as lone surrogates (surrogateescape)
    code, err = run_cli(["run", chain_file, "--base-url", sim.base_url, "--quiet", "--set",
                         "topic=caf\udce9"], capsys)
    assert code == 2 and "--set: input 'topic' is not valid text" in err
    assert sim.stats()["requests"] == 0


def test_every_bad_input_of_every_line_is_named(sim, chain_file, tmp_path, capsys, home):
    inputs = lines_file(tmp_path, '{"topic": "tea"}', '{"topci": "x", "topic": null}',
                        '{"topic": [1]}')
    code, err = run_cli(["run", chain_file, "--inputs", inputs, "--base-url", sim.base_url,
                         "--quiet"], capsys)
    assert code == 2 and "3 problems, nothing was sent" in err
    assert "line 2: unknown input 'topci'; did you mean 'topic'?" in err
    assert "line 2: input 'topic' must be text or a number, got null" in err
    assert "line 3: input 'topic' must be text or a number, got a list" in err
    assert sim.stats()["requests"] == 0 and not (home / "runs").exists()


def test_a_missing_timeline_folder_blames_timeline(sim, chain_file, capsys):
    code, err = run_cli(["run", chain_file, "--base-url", sim.base_url, "--quiet",
                         "--timeline", "/missing/t.html"], capsys)
    assert code == 2 and "--timeline: the folder of /missing/t.html does not exist" in err
    assert "--json" not in err and sim.stats()["requests"] == 0


def test_every_problem_is_named_at_once(sim, chain_file, tmp_path, capsys):
    code, err = run_cli(["run", chain_file, "--base-url", sim.base_url, "--quiet",
                         "--json", str(tmp_path), "--timeline", "/missing/t.html",
                         "--trace", str(tmp_path / "t.json"), "--set", "topci=tea",
                         "--set", "oops"], capsys)
    assert code == 2 and "4 problems, nothing was sent" in err
    for expected in ("--json: ", "--timeline: ", "the chain has no input 'topci'; did you "
                     "mean 'topic'?", "--set 'oops': write NAME=VALUE"):
        assert expected in err
    assert sim.stats()["requests"] == 0


def test_an_input_over_the_context_window_is_refused_before_it_is_sent(
        sim, chain_file, tmp_path, capsys, home):
    inputs = lines_file(tmp_path, '{"topic": "tea"}', json.dumps({"topic": BIG}))
    code, err = run_cli(["run", chain_file, "--inputs", inputs, "--base-url", sim.base_url,
                         "--quiet"], capsys)
    assert code == 2 and "line 2: step 'a': its prompt is about 500,00" in err
    assert "gpt-4o-mini's context window of 128,000 tokens" in err
    assert "input 'topic' is 2,000,000 characters" in err and "line 1" not in err
    assert sim.stats()["requests"] == 0


def test_an_unwritable_journal_folder_is_refused_naming_the_way_out(sim, chain_file,
                                                                    tmp_path, capsys,
                                                                    monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("CHAINRAY_HOME", str(blocker))
    code, err = run_cli(["run", chain_file, "--base-url", sim.base_url, "--quiet"], capsys)
    assert code == 2 and "journal folder" in err and "--no-journal" in err
    assert sim.stats()["requests"] == 0


def test_the_python_api_checks_inputs_before_starting_anything(sim):
    for inputs, says in (({"topic": "bad \ud800"}, "not valid text"),
                         ({"topic": BIG}, "context window")):
        with pytest.raises(InputError, match=says):
            chainray.run(chain_from_dict({"name": "c", "inputs": {"topic": "x"},
                                          "steps": [{"id": "a", "prompt": "{topic}"}]}),
                         inputs=inputs, base_url=sim.base_url)
    assert sim.stats()["requests"] == 0


def test_context_windows_are_known_by_family_and_unknown_models_go_unchecked():
    assert context_window("gpt-4o-mini-2024-07-18") == 128_000
    assert context_window("gpt-4.1-mini") == 1_047_576 and context_window("my-model") is None
    assert context_window("o3") is None  # no window in the price table: not checked
    chain = chain_from_dict({"name": "c", "inputs": {"topic": "x"},
                             "steps": [{"id": "a", "prompt": "{topic}", "max_tokens": 100}]})
    assert input_problems(chain, {"topic": BIG}, model="my-model") == []
    assert input_problems(chain, {"topic": "w" * 400_000}) == []  # 100,000 tokens fit
    assert input_problems(chain, {"topic": True}, where="line 2: ") == [
        "line 2: input 'topic' must be text or a number, got true/false"]


async def step_against_fixture(topic: str, mode: str | None = None):
    from pydantic import SecretStr

    from chainray.call.endpoint import CallServices, Endpoint, make_client
    from chainray.limit.permit_book import Limits, PermitBook
    from chainray.runner.step_exec import StepRequest, execute_llm_step
    from tests.fixture_server import FixtureServer

    chain = chain_from_dict({"name": "c", "inputs": {"topic": "x"},
                             "steps": [{"id": "facts", "prompt": "{topic}", "model": "m"}]})
    step = chain.by_id["facts"]
    request = StepRequest(run_id="r", task_name="c:facts", step=step,
                          settings=chain.settings_for(step), inputs={"topic": topic},
                          sees=(), depends_on=())
    with FixtureServer() as server:  # aiohttp takes bodies up to 1 MiB: 413 beyond
        if mode:
            server.behave(mode)
        endpoint = Endpoint(base_url=server.base_url, api_key=SecretStr("sk-test-0123456789"),
                            timeout_s=10, max_attempts=3, backoff_s=0.01)
        limits = {"m": PermitBook(Limits(rpm=60_000, tpm=10_000_000, max_concurrency=1))}
        services = CallServices(make_client(endpoint), endpoint, limits)
        result = await execute_llm_step(request, [], services)
    assert result.status == "error" and result.attempts == 1  # never retried as it is
    return result


async def test_a_413_names_the_step_and_the_size():
    result = await step_against_fixture(BIG)
    assert result.error.startswith("step 'facts': its request of about 500,518 tokens")
    assert "too large for m: HTTP 413 (request_too_large)" in result.error
    assert "2,000,126 bytes sent" in result.error and "Error code: 413" not in result.error


async def test_a_context_length_error_names_the_step_and_the_size():
    result = await step_against_fixture("tea", "context_length_exceeded")
    assert result.error.startswith("step 'facts': its request of about 519 tokens")
    assert "(context_length_exceeded): Error code: 400 - This model's maximum" in result.error

"""Bad input: exit 2 with the cause named, and not one request sent (the simulator counts)."""

from __future__ import annotations

import pytest

from chainray.cli.main import main

CHAIN_OK = "name: ok\nsteps:\n  - {id: a, prompt: 'hello {topic}'}\ninputs: {topic: x}\n"
BAD_CHAINS = {
    "malformed-yaml": ("name: x\nsteps: [\n", "malformed YAML"),
    "unknown-key": ("name: x\nsteps:\n  - {id: a, promt: hi}\n", "promt"),
    "cycle": ("name: x\nsteps:\n  - {id: a, prompt: x, after: [b]}\n"
              "  - {id: b, prompt: x, after: [a]}\n", "cycle"),
    "unknown-id": ("name: x\nsteps:\n  - {id: a, prompt: x, after: [ghost]}\n", "ghost"),
    "duplicate-id": ("name: x\nsteps:\n  - {id: a, prompt: x}\n  - {id: a, prompt: y}\n",
                     "duplicate"),
    "missing-template-variable": ("name: x\nsteps:\n  - {id: a, prompt: '{nowhere}'}\n",
                                  "nowhere"),
    "negative-max-tokens": ("name: x\nsteps:\n  - {id: a, prompt: x, max_tokens: -1}\n",
                            "max_tokens"),
}


def run_cli(args, capsys) -> tuple[int, str]:
    try:
        code = main(args)
    except SystemExit as exc:  # argparse refuses bad flags itself, also with 2
        code = exc.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("name", list(BAD_CHAINS))
def test_bad_chain_exits_2_and_sends_nothing(sim, tmp_path, capsys, name):
    text, expected = BAD_CHAINS[name]
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    code, err = run_cli(["run", str(path), "--base-url", sim.base_url, "--quiet"], capsys)
    assert code == 2 and expected in err and str(path) in err
    assert sim.stats()["requests"] == 0


def test_a_chain_file_with_several_mistakes_reports_them_all_at_once(sim, tmp_path, capsys):
    path = tmp_path / "typos.yaml"
    path.write_text("name: x\ninputs: {topic: tea}\nsteps:\n"
                    "  - {id: overview, prompt: 'about {topic}'}\n"
                    "  - {id: b, after: [overview], prompt: '{overveiw}', max_tokns: 5}\n"
                    "  - {id: c, after: [b, overveiw], prompt: '{b}'}\n")
    code, err = run_cli(["run", str(path), "--base-url", sim.base_url, "--quiet"], capsys)
    assert code == 2 and "3 problems" in err and str(path) in err
    assert "did you mean {overview}?" in err and "did you mean 'max_tokens'?" in err
    assert "depends on unknown step 'overveiw'; did you mean 'overview'?" in err
    assert sim.stats()["requests"] == 0


@pytest.mark.parametrize("flags,expected", [
    (["--rpm", "0"], "--rpm"), (["--tpm", "-5"], "--tpm"),
    (["--max-concurrency", "0"], "--max-concurrency"), (["--set", "topic"], "NAME=VALUE"),
    (["--set", "colour=red"], "no input 'colour'"), (["--strategy", "fastest"], "--strategy"),
    (["--json", "/no/such/dir/out.json"], "does not exist"),
    (["--prices", "/no/such/prices.json"], "--prices"),
])
def test_bad_flags_exit_2_and_send_nothing(sim, tmp_path, capsys, flags, expected):
    path = tmp_path / "ok.yaml"
    path.write_text(CHAIN_OK)
    code, err = run_cli(["run", str(path), "--base-url", sim.base_url, "--quiet", *flags],
                        capsys)
    assert code == 2 and expected in err
    assert sim.stats()["requests"] == 0


def test_unknown_scenario_exits_2(capsys):
    code, err = run_cli(["run", "no_such_scenario", "--quiet"], capsys)
    assert code == 2 and "bundled scenarios" in err


def test_unreachable_endpoint_exits_2_before_starting_anything(capsys):
    code, err = run_cli(["run", "quantum_research", "--base-url", "http://127.0.0.1:9/v1",
                         "--quiet"], capsys)
    assert code == 2 and "cannot reach the endpoint" in err


@pytest.mark.parametrize("lines,expected", [
    (['{"topic": "a"}', "not json", '{"topic": "b"}'], "line 2: not JSON"),
    (['{"topic": "a"}', '{"colour": "red"}'], "line 2: unknown input 'colour'"),
    (['["a"]'], "line 1: must be an object"),
    ([""], "no input lines"),
])
def test_bad_batch_lines_refuse_the_whole_batch(sim, tmp_path, capsys, lines, expected):
    chain, inputs = tmp_path / "ok.yaml", tmp_path / "in.jsonl"
    chain.write_text(CHAIN_OK)
    inputs.write_text("\n".join(lines) + "\n")
    code, err = run_cli(["run", str(chain), "--inputs", str(inputs), "--base-url",
                         sim.base_url, "--quiet"], capsys)
    assert code == 2 and expected in err
    assert sim.stats()["requests"] == 0


@pytest.mark.parametrize("flags, named", [(["--rpm", "-5"], "--rpm"),
                                          (["--strategy", "fastest"], "--strategy")])
def test_a_bad_flag_is_one_line_naming_it(capsys, flags, named):
    code, err = run_cli(["run", "quantum_research", *flags], capsys)
    [line] = err.splitlines()
    assert code == 2 and named in line and "see 'chainray run --help'" in line

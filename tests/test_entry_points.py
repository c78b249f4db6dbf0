"""Entry points that must not pay for Ray, the one installed package, the schema, and the
scenario list a pipe can cut short."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jsonschema
import pytest
import yaml

import chainray

REPO = Path(__file__).resolve().parents[1]

# Loaded at interpreter start (sitecustomize): any import of ray or openai fails.
_BLOCKER = textwrap.dedent("""
    import sys

    class _Blocked:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("ray", "openai"):
                raise ImportError(f"{name} is blocked by the test")
            return None

    sys.meta_path.insert(0, _Blocked())
""")


@pytest.fixture
def no_ray_env(tmp_path):
    (tmp_path / "sitecustomize.py").write_text(_BLOCKER)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    check = subprocess.run([sys.executable, "-c", "import ray"], env=env, capture_output=True,
                           text=True, timeout=60)
    assert check.returncode != 0 and "blocked by the test" in check.stderr  # the blocker works
    return env


def _chainray(*args, env=None, cwd=None, **kwargs):
    return subprocess.run([sys.executable, "-m", "chainray.cli.main", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=120, **kwargs)


@pytest.mark.parametrize("args", [["--help"], ["scenarios"], ["plan", "quantum_research"],
                                  ["plan", "sql_pipeline", "--objective", "cost"], ["schema"],
                                  ["sim", "--help"], ["run", "--help"], ["up", "--help"],
                                  ["status"], ["down"]])
def test_commands_work_with_ray_and_openai_unimportable(no_ray_env, tmp_path, args):
    done = _chainray(*args, env=no_ray_env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() and "blocked" not in done.stderr


def test_the_simulator_serves_with_ray_and_openai_unimportable(no_ray_env, tmp_path):
    process = subprocess.Popen([sys.executable, "-m", "chainray.cli.main", "sim", "--port", "0"],
                               env=no_ray_env, cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert line.startswith("chainray sim listening on http://127.0.0.1:"), \
            process.stderr.read() if process.poll() is not None else line
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_python_plan_works_with_ray_unimportable(no_ray_env, tmp_path):
    code = ("import chainray, sys; p = chainray.plan('quantum_research', objective='latency');"
            "print(p.strategy, 'ray' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], env=no_ray_env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["hybrid", "False"]


def test_import_runtime_fails_after_install_from_another_folder(tmp_path):
    for name in ("runtime", "actors", "scenarios"):
        done = subprocess.run([sys.executable, "-c", f"import {name}"], cwd=tmp_path,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode != 0 and "ModuleNotFoundError" in done.stderr, name
    done = subprocess.run([sys.executable, "-c", "import chainray.scenarios.sql_helpers"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_import_runtime_fails_in_process_even_from_the_repository(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))  # the folders are right there, and still:
    for name in ("runtime", "actors", "scenarios"):
        monkeypatch.delitem(sys.modules, name, raising=False)
        with pytest.raises(ImportError, match="import chainray"):
            __import__(name)
        assert name not in sys.modules


def test_import_chainray_is_cheap():
    code = ("import chainray, sys; print(sorted(m for m in "
            "('ray', 'openai', 'pydantic', 'aiohttp', 'rich') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.stdout.strip() == "[]", done.stderr


def test_bundled_chain_files_validate_against_chainray_schema(tmp_path):
    schema = json.loads(_chainray("schema").stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    from chainray.spec.chain import SCENARIO_DIR

    for path in SCENARIO_DIR.glob("*.yaml"):
        jsonschema.validate(yaml.safe_load(path.read_text()), schema)
    typo = {"name": "x", "steps": [{"id": "a", "promt": "hi"}]}
    with pytest.raises(jsonschema.ValidationError, match="promt"):
        jsonschema.validate(typo, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"name": "x", "steps": [{"id": "a", "kind": "python",
                                                     "call": "not a call"}]}, schema)


def test_scenarios_survives_a_closed_pipe_and_keeps_words_whole():
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line is written (| head -0)
    try:
        done = subprocess.run([sys.executable, "-m", "chainray.cli.main", "scenarios"],
                              stdout=write, stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write)
    assert done.returncode == 0 and done.stderr == ""
    listing = _chainray("scenarios", env={**os.environ, "COLUMNS": "70"}).stdout
    words = set(listing.split())
    for path in chainray.load_chain("quantum_research"), chainray.load_chain("sql_pipeline"):
        for word in path.description.split():
            assert word in words  # wrapped, never cut mid-word or truncated
    assert max(len(line) for line in listing.splitlines()) <= 70


def test_help_loads_no_heavy_modules_but_run_help_is_complete():
    code = ("import sys\nfrom chainray.cli.main import main\ntry:\n    main(['--help'])\n"
            "except SystemExit:\n    pass\nprint('LOADED', sorted(m for m in ('ray', 'openai', "
            "'aiohttp', 'rich', 'chainray.cli.run') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.stdout.splitlines()[-1] == "LOADED []", done.stderr
    assert all(name in done.stdout for name in ("run", "bench", "sim", "plan", "schema"))
    run_help = _chainray("run", "--help").stdout
    assert "--strategy" in run_help and "--dashboard" in run_help

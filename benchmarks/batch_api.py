"""The provider Batch API (``--batch-api``) against a fixture server that is not the simulator.

tests/batch_server.py serves /v1/files and /v1/batches its own way (a job ends after two
polls), counts every request and bills every line it answers. Three cases, each a batch of
``--runs`` runs of quantum_research (6 steps; hybrid: 4 phases), through ``chainray run``
in a child process:

1. plain: chat requests (target 0), jobs created (target <= phases), runs ok (target all),
   cost against list price of what the server billed (target 50 % within 1 %).
2. kill -9 of the driver while its first job runs (the server holds it), then ``--resume``:
   jobs created in all (target = phases: the held job is polled, not created again), lines
   billed (target runs x 6: each paid once), runs ok.
3. bad input: ``--batch-api`` without ``--inputs``; a server without the Batch API (404);
   ``--deadline soon``; a line the server rejects: exit codes and the one line each says.

    python benchmarks/batch_api.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from batch_server import BatchServer  # noqa: E402

from chainray.plan.cost import load_prices  # noqa: E402
from chainray.plan.schedule import resolve  # noqa: E402
from chainray.spec.chain import load_chain  # noqa: E402

CHAIN = "quantum_research"


def chainray(home: str, *argv: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "chainray.cli.main", "run", CHAIN, *argv,
                             "--quiet"], env={**os.environ, "CHAINRAY_HOME": home},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def results(path: Path) -> tuple[list[dict], dict]:
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    return lines[:-1], lines[-1]["batch"]


def list_cost(server: BatchServer) -> float:
    prices = load_prices()
    return sum(prices.cost(b["model"], b["prompt"], b["completion"]) for b in server.billed)


def plain(inputs: Path, phases: int, home: str) -> None:
    server, out = BatchServer(), Path(home) / "plain.jsonl"
    with server.running() as url:
        started = time.perf_counter()
        driver = chainray(home, "--inputs", str(inputs), "--batch-api", "--base-url", url,
                          "--json", str(out))
        _, err = driver.communicate(timeout=600)
        elapsed = time.perf_counter() - started
    runs, summary = results(out)
    cost, listed = sum(r["estimated_cost"] for r in runs), list_cost(server)
    print(f"1. plain: exit {driver.returncode}, {elapsed:.1f}s; chat requests "
          f"{server.count['chat']} (target 0); jobs {server.count['batch_create']} for "
          f"{phases} phases (target <= {phases}); runs ok {sum(r['status'] == 'ok' for r in runs)}"
          f"/{len(runs)}; cost ${cost:.6f} = {100 * cost / listed:.2f} % of list ${listed:.6f} "
          f"(target 50 % within 1 %); lines {summary['batch_api']['lines']}, Batch API "
          f"requests {summary['batch_api']['requests']}")


def killed(inputs: Path, phases: int, runs_n: int, home: str) -> None:
    server, out = BatchServer(hold=True), Path(home) / "resumed.jsonl"
    with server.running() as url:
        driver = chainray(home, "--inputs", str(inputs), "--batch-api", "--base-url", url)
        ends = time.monotonic() + 120
        while not server.retrieved and time.monotonic() < ends:
            time.sleep(0.05)
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
        held, created_before = server.created_ids[0], server.count["batch_create"]
        server.hold = False
        batch_id = next((Path(home) / "runs").iterdir()).name
        resumed = chainray(home, "--resume", batch_id, "--base-url", url, "--json", str(out))
        _, err = resumed.communicate(timeout=600)
    runs, summary = results(out)
    print(f"2. kill -9 then --resume: exit {resumed.returncode}; jobs created before the kill "
          f"{created_before}, in all {server.count['batch_create']} (target {phases}); held "
          f"job {held} created {server.created_ids.count(held)}x (target 1), polled by the "
          f"resume: {summary['batch_api']['adopted_jobs'] == 1}; lines billed "
          f"{len(server.billed)} (target {runs_n * 6}); runs ok "
          f"{sum(r['status'] == 'ok' for r in runs)}/{len(runs)}; chat {server.count['chat']}")


def bad_input(inputs: Path, home: str) -> None:
    cases = [("--batch-api without --inputs", BatchServer(), ("--batch-api",)),
             ("no /v1/batches (404)", BatchServer(batch_api=False),
              ("--batch-api", "--inputs", str(inputs))),
             ("--deadline soon", BatchServer(), ("--deadline", "soon", "--inputs", str(inputs))),
             ("a rejected line", BatchServer(reject={"synthesis"}),
              ("--batch-api", "--inputs", str(inputs), "--json", f"{home}/rejected.jsonl"))]
    print("3. bad input:")
    for name, server, argv in cases:
        with server.running() as url:
            driver = chainray(home, "--base-url", url, *argv)
            _, err = driver.communicate(timeout=600)
        said = [line for line in err.splitlines() if "error" in line.lower()]
        if name == "a rejected line":
            runs, _ = results(Path(f"{home}/rejected.jsonl"))
            said = [f"runs failed: {sum(r['status'] == 'failed' for r in runs)}, error: "
                    f"{runs[0]['error']}; answered steps billed {len(server.billed)} and "
                    "journaled"]
        print(f"   {name}: exit {driver.returncode}; {' | '.join(said)[:300]}; chat requests "
              f"{server.count['chat']}, jobs created {server.count['batch_create']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    phases = len(resolve(load_chain(CHAIN), "hybrid").phases)
    with tempfile.TemporaryDirectory() as folder:
        inputs = Path(folder) / "inputs.jsonl"
        inputs.write_text("".join(json.dumps({"topic": f"topic {i}"}) + "\n"
                                  for i in range(args.runs)))
        for name, case in (("plain", lambda h: plain(inputs, phases, h)),
                           ("killed", lambda h: killed(inputs, phases, args.runs, h)),
                           ("bad", lambda h: bad_input(inputs, h))):
            home = Path(folder) / name
            home.mkdir()
            case(str(home))


if __name__ == "__main__":
    main()

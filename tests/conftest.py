"""One simulator and one Ray instance per test session (``ray.init`` costs seconds)."""

from __future__ import annotations

import logging
import os
import tempfile

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.pop("OPENAI_API_KEY", None)
os.environ.pop("OPENAI_BASE_URL", None)
os.environ.pop("RAY_ADDRESS", None)
for _name in [n for n in os.environ if n.startswith("OTEL_")]:  # a developer's collector
    os.environ.pop(_name)                                         # traces no test by accident
os.environ["CHAINRAY_HOME"] = tempfile.mkdtemp(prefix="chainray-test-")

from chainray.sim import start_simulator  # noqa: E402
from chainray.sim.reasoning import REASONING_MODELS  # noqa: E402

SIM_SEED = 7  # the session simulator's seed; each test starts from it


@pytest.fixture(autouse=True)
def own_home(tmp_path_factory, monkeypatch):
    """Each test its own ``$CHAINRAY_HOME``: what one test's runs learned (profiles,
    journals, the cache) never decides another's advice, whatever order they run in."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("CHAINRAY_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def simulator():
    with start_simulator("--speed", "20", "--seed", str(SIM_SEED)) as sim:
        yield sim


@pytest.fixture
def sim(simulator):
    """The session's simulator, reset to its start settings (fast latency) for this test."""
    simulator.configure(speed=20.0, seed=SIM_SEED, rpm=500, tpm=200_000, burst_s=60.0,
                        api_key=None,
                        enforce="minute",
                        ttft_sigma=0.65, ttft_median_s=0.5, tokens_per_s=70.0,
                        prefill_s_per_token=0.00005, lengths={},
                        reasoning_models=REASONING_MODELS, retry_after_headers=True,
                        slots=None, reply_tokens=None, ignore_max_tokens=False,
                        prompt_cache=True, prompt_cache_min_tokens=1024,
                        cached_prefill_share=0.2, faults={
                            "error_500": 0, "error_429": 0, "slow": 0, "hang": 0, "drop": 0,
                            "quota_exhausted": False, "hang_s": 300.0})
    return simulator


@pytest.fixture(scope="session")
def ray_session():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False,
             logging_level=logging.ERROR, log_to_driver=False)
    yield ray
    ray.shutdown()


class _Captured(Exception):
    """Raised by the recording driver once it has what the CLI or the API handed it."""


@pytest.fixture
def recorded(monkeypatch):
    """Replace the driver (``chainray.api.session.Driver``) by one that records the
    ``SessionConfig`` it is opened with and the first ``RunJob`` it is given, then stops."""
    seen: dict = {}

    class Recorder:
        def __init__(self, config):
            seen["config"] = config

        def _record(self, job):
            seen["job"] = job
            raise _Captured

        def run(self, job, label=None):
            self._record(job)

        def run_many(self, jobs, **_):
            for job in jobs:
                self._record(job)
            yield from ()

        def close(self):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

    monkeypatch.setattr("chainray.api.library.Driver", Recorder)

    def capture(call, *args, **kwargs):
        seen.clear()
        with pytest.raises(_Captured):
            call(*args, **kwargs)
        return seen["config"], seen["job"].model_dump(exclude={"run_id", "journal_key"})

    return capture

"""An OpenAI-compatible simulated LLM server: realistic latency, OpenAI's rate limits, faults.

It is chainray's default backend: the unchanged ``openai`` client talks to it over loopback, so
the code path that serves the real API is the one exercised.
"""

from chainray.sim.config import SimConfig
from chainray.sim.embedded import EmbeddedSimulator, start_simulator

__all__ = ["SimConfig", "EmbeddedSimulator", "start_simulator"]

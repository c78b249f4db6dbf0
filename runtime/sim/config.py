"""The simulator's settings: latency profile, rate limits, faults. Changeable while it runs."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from chainray.sim.lengths import LengthModel
from chainray.sim.reasoning import REASONING_MODELS

__all__ = ["SimConfig", "FaultConfig"]


class FaultConfig(BaseModel):
    """Shares of requests (0..1) that fail on purpose, drawn from the seeded generator."""

    model_config = ConfigDict(extra="forbid")

    error_500: float = Field(0.0, ge=0, le=1, description="answer 500 server_error")
    error_429: float = Field(0.0, ge=0, le=1, description="answer a spurious 429 with retry-after")
    slow: float = Field(0.0, ge=0, le=1, description="take slow_factor times longer")
    hang: float = Field(0.0, ge=0, le=1, description="never answer (until hang_s passes)")
    drop: float = Field(0.0, ge=0, le=1, description="close the connection without an answer")
    slow_factor: float = Field(4.0, ge=1)
    hang_s: float = Field(300.0, gt=0)
    quota_exhausted: bool = Field(False, description="answer every call 429 insufficient_quota")


class SimConfig(BaseModel):
    """Everything the simulator does. Rate limits are per real minute; ``speed`` scales latency.

    The default profile is about a gpt-4o-mini: time to first token lognormal with median 0.5 s
    and p95 about 1.5 s, 0.05 ms a prompt token of prefill, 70 tokens/s of decode. ``slots``,
    ``reply_tokens`` and ``ignore_max_tokens`` make it answer like a self-hosted engine
    (vLLM, Ollama, llama.cpp, TGI) instead.
    """

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(0, ge=0, le=65535)
    rpm: int = Field(500, gt=0, description="requests per minute")
    tpm: int = Field(200_000, gt=0, description="tokens per minute")
    burst_s: float = Field(60.0, gt=0, description="bucket capacity in seconds of refill")
    enforce: Literal["minute", "second"] = Field(
        "minute", description="minute: buckets hold burst_s of refill; second: a minute's "
        "limit enforced per second (buckets hold 1 s; a larger request is admitted into a "
        "full bucket and leaves debt), as OpenAI may quantize limits")
    refund_unused: bool = True
    retry_after_headers: bool = True
    seed: int = 0
    speed: float = Field(1.0, gt=0, description="latency runs this many times faster")
    ttft_median_s: float = Field(0.5, ge=0)
    ttft_sigma: float = Field(0.65, ge=0, description="lognormal shape of time to first token")
    prefill_s_per_token: float = Field(0.00005, ge=0)
    tokens_per_s: float = Field(70.0, gt=0)
    itl_jitter: float = Field(0.1, ge=0, lt=1)
    chunk_s: float = Field(0.005, ge=0, description="a stream sends at most one chunk per "
                           "this many seconds, holding every token due by then (a server "
                           "or network does as much; at high speeds a chunk per token made "
                           "the simulator and its client CPU-bound)")
    lengths: LengthModel = LengthModel()  # how long replies are: see chainray.sim.lengths
    default_max_tokens: int = Field(512, gt=0)
    reply_tokens: int | None = Field(None, gt=0, description="every reply wants exactly this "
                                     "many tokens (instead of the length model's share of "
                                     "max_tokens)")
    ignore_max_tokens: bool = Field(False, description="max_tokens does not cut a reply: it is "
                                    "as long as the model wants (reply_tokens, or the length "
                                    "model's share of default_max_tokens) and finish_reason "
                                    "stays stop, as some self-hosted servers answer")
    slots: int | None = Field(None, ge=1, description="a self-hosted engine: this many "
                              "requests decode at tokens_per_s; with k > slots decoding at "
                              "once, each decodes at tokens_per_s * slots / k (None: every "
                              "request at full speed, as a hosted API)")
    reasoning_models: str = Field(REASONING_MODELS, description="models (a regex) that answer "
                                  "as OpenAI's reasoning models: 400 on max_tokens and on "
                                  "sampling settings other than the default")
    prompt_cache: bool = Field(True, description="automatic prefix caching as OpenAI's: a "
                               "prompt prefix of prompt_cache_min_tokens or more, in 128-token "
                               "steps, usable from its writer's first token, reported in "
                               "usage.prompt_tokens_details.cached_tokens")
    prompt_cache_min_tokens: int = Field(1024, gt=0, description="smallest cached prefix "
                                         "(OpenAI's 1,024)")
    cached_prefill_share: float = Field(0.2, ge=0, le=1, description="a cached token takes "
                                        "this share of an uncached one's prefill (OpenAI: "
                                        "caching cuts latency up to 80%)")
    api_key: str | None = Field(None, repr=False)
    faults: FaultConfig = FaultConfig()
    # The Batch API (chainray.sim.batches): a real job takes minutes to hours (24h promised)
    batch_turnaround_s: float = Field(2.0, ge=0, description="a batch job ends this long "
                                      "after its creation (divided by speed)")
    batch_fail_every: int = Field(0, ge=0, description="each Nth batch line answers 500 "
                                  "(0: none)")
    batch_expire_every: int = Field(0, ge=0, description="each Nth batch job expires with "
                                    "half its lines done (0: none)")

    def expected_ttft_s(self) -> float:
        """Mean of the lognormal time to first token (what a latency model should use)."""
        return self.ttft_median_s * math.exp(self.ttft_sigma**2 / 2)

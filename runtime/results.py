"""Results of steps and runs (DESIGN.md's JSON contract), as pydantic models."""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict

__all__ = ["Attempt", "AttemptOutcome", "StepResult", "RunResult", "RunTotals", "StepStatus",
           "RunStatus", "ErrorCode", "ERROR_CODES"]

StepStatus = Literal["ok", "error", "skipped"]
# ok: every step succeeded; partial: the final step answered but some step failed (on_error
# continue); failed: the final step has no answer.
RunStatus = Literal["ok", "partial", "failed"]
# ok: answered; rate_limited: a 429; error: any other failure (``code`` says which);
# cancelled: abandoned, e.g. the losing duplicate of a hedged request.
AttemptOutcome = Literal["ok", "rate_limited", "error", "cancelled"]
# Why a step has no answer, for programs to act on (``error`` is the sentence for people).
# A closed set: an endpoint's failures map onto it in one table
# (``chainray.call.error_table.error_code``).
ErrorCode = Literal[
    "spend_cap",        # the spend cap (--max-cost) admitted no further call; nothing sent
    "rate_limited",     # 429s outlasted the retry budget (or asked to wait longer than it)
    "quota",            # 429 insufficient_quota and kin: the account is out of credit
    "auth",             # 401 or 403: the key is wrong or lacks access
    "bad_request",      # another 4xx: the request or the model was refused (404 included)
    "too_large",        # larger than a limit admits: 413, the context length, a permit
    "server_error",     # 5xx after retries
    "timeout",          # the request, or the wait for a permit, outlasted its deadline
    "connection",       # the endpoint could not be reached, or the connection dropped
    "malformed_reply",  # the endpoint's reply could not be read, after retries
    "empty_content",    # the model answered nothing (no content, refusal or tool call)
    "schema_mismatch",  # the reply broke the step's output schema twice
    "python_error",     # a python step's callable raised
    "skipped",          # not run: an earlier step failed (on_error fail)
    "upstream_failed",  # not run: a step it depends on failed (on_error isolate)
    "interrupted",      # not run or not sent: the run was stopped (Ctrl-C, SIGTERM)
    "internal",         # anything else: chainray or the process running the step failed
]
ERROR_CODES: tuple[str, ...] = get_args(ErrorCode)


class Attempt(BaseModel):
    """One HTTP request of a step, in Unix seconds: queued for its permit from ``queued_at``,
    in flight from ``sent_at`` to ``finished_at``. The gap before the next attempt's
    ``queued_at`` is the retry backoff."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    queued_at: float
    sent_at: float
    finished_at: float
    outcome: AttemptOutcome
    code: str | None = None  # the error's code or HTTP status, when it failed


class StepResult(BaseModel):
    """What one step did; also what a step task returns to the Coordinator."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    depends_on: tuple[str, ...] = ()
    status: StepStatus
    output: str = ""
    error: str | None = None
    error_code: ErrorCode | None = None  # set whenever status is not "ok"
    started_at: float = 0.0
    finished_at: float = 0.0
    latency_ms: float = 0.0
    queued_ms: float = 0.0  # waiting for rate-limit permits, all attempts together
    ttft_ms: float | None = None  # time to first token, when the reply was streamed
    decode_tokens_per_s: float | None = None  # completion tokens after the first, per second
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # of prompt_tokens, read from the provider's prompt cache
    attempts: int = 0
    rate_limited: int = 0
    attempt_log: tuple[Attempt, ...] = ()  # each request's times (empty: none sent, or older)
    usage_estimated: bool = False  # the server sent no usage; tokens are chainray's estimate
    truncated: bool = False  # the reply stopped at max_tokens (finish_reason "length")
    cached: bool = False  # answered from the response cache: no request was sent
    hedged: bool = False  # a straggler: a duplicate request was sent, the first answer taken
    model: str | None = None
    batch_job: str | None = None  # the Batch API job that answered it (priced at batch prices)
    node_id: str | None = None
    task_id: str | None = None

    def as_upstream(self) -> str:
        """The text a downstream step receives: the output, or the error marked as such."""
        if self.status == "ok":
            return self.output
        return f"[step {self.id} {self.status}: {self.error or 'no output'}]"


class RunTotals(BaseModel):
    """A run's counts over every invocation that worked on it (a resumed run included)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    api_calls: int = 0
    retries: int = 0
    rate_limited: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    total_tokens: int = 0
    estimated_cost: float = 0.0


class RunResult(BaseModel):
    """One execution of a chain under a strategy."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    scenario: str
    strategy: str
    shape: str
    status: RunStatus
    error: str | None = None
    error_code: ErrorCode | None = None  # the code of the step whose error ``error`` names
    run_id: str
    phases: tuple[tuple[str, ...], ...]
    latency_ms: float
    critical_path_ms: float
    queued_ms: float = 0.0
    total_tokens: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0  # of prompt_tokens, priced at the cached-input price
    api_calls: int
    retries: int
    rate_limited: int
    estimated_cost: float
    output_length: int
    output: str
    steps: tuple[StepResult, ...]
    # api_calls, retries, rate_limited, tokens and cost above count this invocation only;
    # steps an earlier invocation finished (``resumed_steps``) count in ``run_totals``.
    resumed_steps: tuple[str, ...] = ()
    run_totals: RunTotals = RunTotals()

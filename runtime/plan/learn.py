"""What runs teach about an endpoint, and the models ``predict`` takes from it.

``observe`` adds finished runs to a ``Profile``: every request's tokens, time in flight, time
to first token and the mean number of requests in flight on the same endpoint and model while
it was (from the attempts' send and finish times of all the runs observed together); each
step's reply length per strategy, how often ``max_tokens`` cut it, characters per token, the
server's prompt-token count against chainray's estimate, and the run's time beyond its steps'.
``Learner`` is the driver's side: it collects results as they come back and writes them to the
stored profiles (``chainray.plan.profiles``). ``models`` turns a profile into the latency
model and reply lengths a prediction uses.
"""

from __future__ import annotations

import bisect
import sys
import time
from collections import defaultdict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from chainray.plan.fit import LatencyModel, Sample, calibrate, fit_samples, fit_steps, load_results
from chainray.plan.lengths import Length, Replies
from chainray.plan.predict import prompt_chars, step_shapes
from chainray.plan.profiles import Acc, Profile, StepEntry, update_profile
from chainray.plan.schedule import resolve
from chainray.results import RunResult, StepResult
from chainray.spec.chain import DEFAULT_MAX_TOKENS, DEFAULT_MODEL, Chain

__all__ = ["Observed", "observe", "models", "Learner", "load_results", "fit_steps",
           "calibrate"]

_FLUSH_EVERY = 64  # results held before they are written ...
_FLUSH_AFTER_S = 2.0  # ... or once this long has passed since the last write
_RECENT_SPANS = 4096  # requests kept to count what was in flight beside later ones


@dataclass(frozen=True)
class Observed:
    """A finished run, with the chain and inputs it ran (None when only results are known)."""

    result: RunResult
    chain: Chain | None = None
    inputs: Mapping[str, str] | None = None


def _crowding(spans: list[tuple[float, float]]) -> tuple[list[float], list[float]]:
    """Breakpoints and cumulative request-seconds of the in-flight count over ``spans``."""
    events = sorted([(a, 1) for a, b in spans if b > a] + [(b, -1) for a, b in spans if b > a])
    times, area, count, total, last = [], [], 0, 0.0, None
    for t, step in events:
        if last is not None:
            total += count * (t - last)
        times.append(t)
        area.append(total)
        count += step
        last = t
    return times, area


def _mean_in_flight(times: list[float], area: list[float], a: float, b: float) -> float:
    def at(t: float) -> float:
        i = bisect.bisect_right(times, t) - 1
        if i < 0:
            return 0.0
        if i + 1 < len(times):
            slope = (area[i + 1] - area[i]) / max(1e-12, times[i + 1] - times[i])
            return area[i] + slope * (t - times[i])
        return area[i]
    return (at(b) - at(a)) / (b - a) if b > a else 1.0


def _decoding(step: StepResult) -> list[tuple[float, float]]:
    """When each request of a step was decoding (from its first token, when streamed; else
    the whole time in flight): what an engine shares among requests."""
    ttft = (step.ttft_ms or 0.0) / 1000
    spans = [(a.sent_at, a.finished_at) for a in step.attempt_log]
    if spans and step.ttft_ms is not None:
        sent, finished = spans[-1]
        spans[-1] = (min(finished, sent + ttft), finished)
    return spans


def _model_of(step: StepResult, chain: Chain | None) -> str:
    if step.model:
        return step.model
    if chain is not None and step.id in chain.by_id:
        return chain.model_for(chain.by_id[step.id])
    return DEFAULT_MODEL


def _last_flight(step: StepResult) -> tuple[float, float] | None:
    sent = [a for a in step.attempt_log if a.outcome == "ok"]
    if sent:
        return sent[-1].sent_at, sent[-1].finished_at
    if step.finished_at > step.started_at > 0:
        return step.finished_at - (step.latency_ms - step.queued_ms) / 1000, step.finished_at
    return None


def _estimates(item: Observed) -> dict[str, float]:
    """chainray's prompt-token estimate of each llm step, from the outputs it really saw."""
    chain, result = item.chain, item.result
    if chain is None or result.strategy not in ("sequential", "parallel", "hybrid"):
        return {}
    shapes = step_shapes(chain, resolve(chain, result.strategy), dict(item.inputs or {}))
    chars = {s.id: float(len(s.as_upstream())) for s in result.steps}
    found = prompt_chars(shapes, chars)
    return {s.id: s.message_tokens + 3 + max(1, (found[s.id] + 3) // 4) for s in shapes
            if s.llm and s.id in found}


def observe(profiles: Mapping[str, Profile], items: Iterable[Observed],
            beside: Mapping[str, list[tuple[float, float]]] | None = None) -> set[str]:
    """Add ``items`` to ``profiles`` (model -> profile); the models that learned something.
    ``beside``: requests (send, finish) of earlier runs per model, that may have been in
    flight while these ran."""
    items = list(items)
    spans = defaultdict(list, {m: list(s) for m, s in (beside or {}).items()})
    for item in items:
        for step in item.result.steps:
            spans[_model_of(step, item.chain)].extend(_decoding(step))
    crowding = {model: _crowding(s) for model, s in spans.items()}
    touched: set[str] = set()
    for item in items:
        result = item.result
        estimates = _estimates(item)
        for model in {_model_of(s, item.chain) for s in result.steps}:
            if model in profiles:
                profiles[model].runs += 1
        for step in result.steps:
            model = _model_of(step, item.chain)
            profile = profiles.get(model)
            if profile is None or step.status != "ok" or step.cached:
                continue
            touched.add(model)
            key = f"{result.scenario}/{step.id}"
            entry = profile.steps.setdefault(key, StepEntry())
            entry.last = profile.runs
            entry.chars.setdefault(result.strategy, Acc()).add(len(step.output))
            python = (item.chain.by_id[step.id].kind == "python" if item.chain is not None
                      and step.id in item.chain.by_id else not step.attempt_log)
            if python or step.attempts == 0:  # no request
                continue
            _observe_request(profile, entry, step, result.strategy, item.chain,
                             crowding.get(model), estimates.get(step.id))
        if result.status == "ok" and result.phases and result.critical_path_ms:
            gap = (result.latency_ms - result.critical_path_ms) / 1000 / len(result.phases)
            for model in {_model_of(s, item.chain) for s in result.steps if s.attempts}:
                if model in profiles:
                    profiles[model].dispatch_s.add(max(0.0, gap))
    return touched


def _observe_request(profile: Profile, entry: StepEntry, step: StepResult, strategy: str,
                     chain: Chain | None, crowding, estimate: float | None) -> None:
    profile.requests += 1
    tokens = float(step.completion_tokens)
    if chain is not None and step.id in chain.by_id:
        entry.max_tokens = chain.settings_for(chain.by_id[step.id]).max_tokens \
            or DEFAULT_MAX_TOKENS
    for name in ("*", strategy):
        entry.tokens.setdefault(name, Acc()).add(tokens)
    if step.truncated:
        entry.truncated += 1
        profile.truncations += 1
    else:
        profile.reply_tokens.add(tokens)
        if entry.max_tokens:
            profile.reply_share.add(tokens / entry.max_tokens)
            profile.max_tokens_seen.append(entry.max_tokens)
    if tokens > 0 and step.output:
        profile.chars_per_token.add(len(step.output) / tokens)
    if estimate and step.prompt_tokens:
        profile.prompt_tokens += step.prompt_tokens
        profile.prompt_estimate += estimate
        if profile.prompt_estimate > 1e7:
            profile.prompt_tokens, profile.prompt_estimate = (profile.prompt_tokens / 2,
                                                              profile.prompt_estimate / 2)
    if step.ttft_ms is not None:
        profile.ttft_s.add(step.ttft_ms / 1000)
    flight = _last_flight(step)
    if flight is not None and not step.hedged:
        decoding = _decoding(step)
        start = decoding[-1][0] if decoding else flight[0]
        in_flight = _mean_in_flight(*crowding, start, flight[1]) if crowding else 1.0
        profile.samples.append((float(step.prompt_tokens), tokens, flight[1] - flight[0],
                                None if step.ttft_ms is None else step.ttft_ms / 1000,
                                round(max(1.0, in_flight), 3)))


def _length(acc: Acc) -> Length:
    return Length(n=acc.n, mean=round(acc.mean, 2), sd=round(acc.sd, 2))


def models(profile: Profile, base: LatencyModel | None = None) -> tuple[LatencyModel, Replies]:
    """The latency model and reply lengths ``profile`` supports."""
    base = base or LatencyModel()
    latency = fit_samples([Sample(*s) for s in profile.samples], base)
    if profile.dispatch_s.n:
        latency = latency.model_copy(update={
            "overhead_s": round(base.overhead_s + profile.dispatch_s.mean, 4)})
    where = f"profile of {profile.endpoint} ({profile.model}): {profile.requests} requests " \
            f"in {profile.runs} runs"
    latency = latency.model_copy(update={"source": f"{where}; {latency.source}",
                                         "requests": profile.requests})
    tok, share = profile.reply_tokens, profile.reply_share
    # Replies follow max_tokens where their share of it varies less than their length does.
    scales = (len(set(profile.max_tokens_seen)) > 1 and share.n > 1 and tok.mean > 0
              and share.sd / max(1e-9, share.mean) < 0.8 * tok.sd / tok.mean)
    replies = Replies(
        steps={k: {s: _length(a) for s, a in e.tokens.items()}
               for k, e in profile.steps.items() if e.tokens},
        python_chars={k: {s: a.mean for s, a in e.chars.items()}
                      for k, e in profile.steps.items() if not e.tokens},
        fallback=_length(tok) if tok.n else None,
        fallback_share=_length(share) if share.n else None, scales_with_max_tokens=scales,
        chars_per_token=round(profile.chars_per_token.mean, 3) if profile.chars_per_token.n
        else 4.0,
        prompt_scale=round(profile.prompt_tokens / profile.prompt_estimate, 4)
        if profile.prompt_estimate else 1.0,
        source=f"{where}; replies of steps never seen: "
               + (f"{share.mean:.0%} of max_tokens" if scales else f"{tok.mean:.0f} tokens"))
    return latency, replies


class Learner:
    """The driver's side: results in, profiles (one per model) written every
    ``_FLUSH_EVERY`` results and at ``flush``. A problem is said in one line on stderr."""

    def __init__(self, label: str, enabled: bool = True) -> None:
        self.label, self.enabled = label, enabled
        self.jobs: dict[str, tuple[Chain, Mapping[str, str]]] = {}
        self.pending: list[Observed] = []
        self.recent: dict[str, deque] = defaultdict(lambda: deque(maxlen=_RECENT_SPANS))
        self.flushed = 0.0

    def expect(self, run_id: str, chain: Chain, inputs: Mapping[str, str]) -> None:
        if self.enabled:
            self.jobs[run_id] = (chain, inputs)

    def add(self, results: Iterable[RunResult]) -> None:
        if not self.enabled:
            return
        for result in results:
            chain, inputs = self.jobs.pop(result.run_id, (None, None))
            self.pending.append(Observed(result, chain, inputs))
        if (len(self.pending) >= _FLUSH_EVERY
                or time.monotonic() - self.flushed >= _FLUSH_AFTER_S):
            self.flush()

    def flush(self) -> None:
        items, self.pending = self.pending, []
        self.flushed = time.monotonic()
        if not items:
            return
        names = {_model_of(s, i.chain) for i in items for s in i.result.steps if s.attempts}
        beside = {m: list(spans) for m, spans in self.recent.items()}
        for item in items:
            for step in item.result.steps:
                self.recent[_model_of(step, item.chain)].extend(
                    (a.sent_at, a.finished_at) for a in step.attempt_log)
        for model in sorted(names):
            def merge(profile: Profile, model: str = model) -> None:
                observe({model: profile}, items, beside)
            try:
                note = update_profile(self.label, model, merge)
            except OSError as exc:
                note = f"cannot write the profile of {self.label} ({model}): {exc}"
            if note:
                print(f"chainray: {note}", file=sys.stderr)

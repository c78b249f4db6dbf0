"""What the simulated model says and how long it takes.

Content and length depend only on the seed and the prompt (the same prompt gets the same
answer); latency is drawn per request from the seeded generator. The text visibly draws on the
prompt: it names the labelled inputs it received and the prompt's key terms.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections import Counter
from dataclasses import dataclass

from chainray.sim.config import SimConfig

__all__ = ["Reply", "plan_reply"]

_STOP = set("""about above after again against their there these those which while would could
should focusing research other into from with that this have been were will your what when where
please using every under between summary synthesize""".split())

_SENTENCES = (
    "On {a}, the picture is one of steady progress with {b} as the limiting factor.",
    "Recent work on {a} suggests that {b} matters more than commonly assumed.",
    "The main open question around {a} is how it interacts with {b}.",
    "Practitioners report that {a} improves when {b} is addressed early.",
    "Compared with last year, {a} has moved faster than {b}.",
)


@dataclass(frozen=True)
class Reply:
    tokens: tuple[str, ...]
    finish_reason: str
    ttft_s: float
    itl_s: tuple[float, ...]  # pause before each token after the first

    @property
    def text(self) -> str:
        return "".join(self.tokens).strip()

    @property
    def duration_s(self) -> float:
        return self.ttft_s + sum(self.itl_s)

    def with_text(self, text: str) -> Reply:
        """The same timing profile for other text (about four characters a token)."""
        tokens = tuple(text[i:i + 4] for i in range(0, len(text), 4)) or ("",)
        mean = sum(self.itl_s) / len(self.itl_s) if self.itl_s else 0.0
        return Reply(tokens, "stop", self.ttft_s, (mean,) * (len(tokens) - 1))


def _key_terms(prompt: str) -> list[str]:
    words = re.findall(r"[A-Za-z][A-Za-z-]{4,}", prompt.lower())
    counts = Counter(w for w in words if w not in _STOP)
    return [w for w, _ in counts.most_common(8)] or ["the question"]


def _labels(prompt: str) -> list[str]:
    seen: dict[str, None] = {}
    for label in re.findall(r"(?m)(?:^|\s)([A-Z][a-z]+):\s", prompt):
        seen.setdefault(label, None)
    return list(seen)


def _words(prompt: str, count: int, rng: random.Random) -> list[str]:
    terms, labels = _key_terms(prompt), _labels(prompt)
    sentences = []
    if len(labels) >= 2:
        sentences.append(f"Drawing on {len(labels)} inputs ({', '.join(labels)}), "
                         f"the common thread is {terms[0]}.")
    words: list[str] = []
    while len(words) < count:
        if not sentences:
            a = rng.choice(terms)
            b = rng.choice([t for t in terms if t != a] or terms)
            sentences.append(rng.choice(_SENTENCES).format(a=a, b=b))
        words.extend(sentences.pop(0).split())
    return [(" " if i else "") + word for i, word in enumerate(words[:count])]


def plan_reply(config: SimConfig, prompt: str, prompt_tokens: int, max_tokens: int,
               latency_rng: random.Random, slow: bool = False) -> Reply:
    digest = hashlib.sha256(f"{config.seed}:{prompt}".encode()).digest()
    content_rng = random.Random(digest)
    low, high = config.completion_share
    wanted = max(1, round(max_tokens * content_rng.uniform(low, high)))
    count = min(wanted, max_tokens)
    tokens = _words(prompt, count, content_rng)
    factor = (config.faults.slow_factor if slow else 1.0) / config.speed
    ttft = (latency_rng.lognormvariate(0, config.ttft_sigma) * config.ttft_median_s
            + config.prefill_s_per_token * prompt_tokens) * factor
    mean_itl = 1.0 / config.tokens_per_s
    jitter = config.itl_jitter
    itl = tuple(mean_itl * latency_rng.uniform(1 - jitter, 1 + jitter) * factor
                for _ in range(count - 1))
    finish = "length" if count == max_tokens else "stop"
    return Reply(tuple(tokens), finish, ttft, itl)

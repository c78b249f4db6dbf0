"""What the simulated model says and how long it takes.

Length in tokens depends only on the seed and the prompt; so does content at temperature 0,
while a sampled request (temperature above 0, or none given: OpenAI's default is 1) words its
answer anew, as a model does (a structured reply's JSON, built from the words, varies a
little in length too), so that identical requests of two runs do not share upstream text a
real model would not repeat (and the prompt cache does not reward what a real one would
not). Latency is drawn per request from the seeded generator. The text visibly draws on the
prompt: it names the labelled inputs it received and the prompt's key terms. How long a reply
is and how much general background it repeats follow ``chainray.sim.lengths``.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections import Counter
from dataclasses import dataclass

from chainray.sim.config import SimConfig
from chainray.sim.lengths import PromptSignals, background_share, read_signals, reply_share

__all__ = ["Reply", "plan_reply"]

_STOP = set("""about above after again against their there these those which while would could
should focusing research other into from with that this have been were will your what when where
please using every under between summary synthesize""".split())

# A specific sentence is composed from these parts, so two replies rarely share a three-word
# phrase unless they share background (the redundancy the bench measures).
_OPENERS = ("On {a},", "For {a},", "Around {a},", "Regarding {a},", "In {a},", "Within {a},",
            "Across {a},", "Beyond {a},", "Behind {a},", "Inside {a},", "Near {a},",
            "Amid {a},", "Throughout {a},", "Concerning {a},", "Along {a},", "Past {a},")
_QUALIFIERS = ("recent", "independent", "early", "several", "large", "smaller", "public",
               "private", "regional", "leading", "academic", "commercial", "national",
               "cautious", "ambitious", "mature", "emerging", "specialist", "federal", "joint",
               "informal", "pioneering", "sceptical", "established")
_NOUNS = ("pilots", "roadmaps", "audits", "adopters", "benchmarks", "surveys", "trials",
          "groups", "vendors", "deployments", "reviews", "consortia", "startups", "labs",
          "programmes", "studies", "regulators", "investors", "analysts", "engineers",
          "suppliers", "insurers", "universities", "operators")
_VERBS = ("point to", "question", "highlight", "underestimate", "track", "expose", "favour",
          "revise", "quantify", "challenge", "confirm", "anticipate", "reframe", "measure",
          "depend on", "accelerate", "document", "overstate", "prioritise", "test", "doubt",
          "welcome", "resist", "model", "publish", "map", "stress", "predict")
_ADJECTIVES = ("uneven", "rising", "fragile", "practical", "costly", "measurable", "slower",
               "overlooked", "incremental", "decisive", "modest", "sustained", "contested",
               "scalable", "hidden", "shifting", "regional", "volatile", "narrow", "durable",
               "stubborn", "gradual", "surprising", "lopsided")
_TAILS = ("", " this year", " in practice", " at scale", " for now", " over the next cycle",
          " despite setbacks", " more than expected", " across sectors", " in the long run",
          " under pressure", " since last spring", " by most accounts", " in early data",
          " among peers", " on paper", " with caveats", " quarter by quarter")


def _specific(terms: list[str], rng: random.Random) -> str:
    a = rng.choice(terms)
    b = rng.choice([t for t in terms if t != a] or terms)
    return (f"{rng.choice(_OPENERS).format(a=a)} {rng.choice(_QUALIFIERS)} "
            f"{rng.choice(_NOUNS)} {rng.choice(_VERBS)} {rng.choice(_ADJECTIVES)} "
            f"{b}{rng.choice(_TAILS)}.")


# General background any step on the topic might write: siblings that cannot see each other
# all write some of it, word for word (what makes parallel outputs redundant).
_BACKGROUND = (
    "In broad terms, {a} and {b} remain the two themes that frame the whole field.",
    "Any overview of {a} has to start with where {b} stands today.",
    "Most observers agree that {a} is advancing, though {b} tempers expectations.",
    "The wider context is that {a} attracts attention largely because of {b}.",
    "Taken together, {a} and {b} explain much of the current debate.",
)


_TOKEN_CHARS = 5  # pieces of up to five characters average four over the simulator's prose


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


def _sentence(templates: tuple[str, ...], terms: list[str], rng: random.Random) -> str:
    a = rng.choice(terms)
    b = rng.choice([t for t in terms if t != a] or terms)
    return rng.choice(templates).format(a=a, b=b)


def _tokens(prompt: str, count: int, rng: random.Random, background: float,
            seed: int) -> list[str]:
    """``count`` tokens of an answer to ``prompt``. A token is a piece of a word of up to
    ``_TOKEN_CHARS`` characters, its leading space included: about four characters a token,
    as ``chainray.tokens`` counts a prompt, so a reply fed to the next step costs what it
    cost to write (whole words were ~7 characters a token: prompts downstream cost twice)."""
    terms, labels = _key_terms(prompt), _labels(prompt)
    topic = _key_terms(" ".join(prompt.split()[:8]))[:3]  # what siblings have in common
    shared = random.Random(f"{seed}:background:{' '.join(topic)}")
    sentences = []
    if len(labels) >= 2:
        sentences.append(f"Drawing on {len(labels)} inputs ({', '.join(labels)}), "
                         f"the common thread is {terms[0]}.")
    tokens: list[str] = []
    while len(tokens) < count:
        if not sentences:
            sentences.append(_sentence(_BACKGROUND, topic, shared) if rng.random() < background
                             else _specific(terms, rng))
        for word in sentences.pop(0).split():
            word = (" " if tokens else "") + word
            tokens.extend(word[i:i + _TOKEN_CHARS] for i in range(0, len(word), _TOKEN_CHARS))
    return tokens[:count]


def sampled(body: dict) -> bool:
    """Whether a request samples its answer: temperature above 0, or none given."""
    temperature = body.get("temperature")
    return temperature is None or float(temperature) > 0


def plan_reply(config: SimConfig, prompt: str, prefill_tokens: float, max_tokens: int,
               latency_rng: random.Random, slow: bool = False, sample: bool = False) -> Reply:
    """``prefill_tokens``: the prompt's tokens, a cached one counted as its share of one;
    ``sample``: word the answer anew (drawn from ``latency_rng``), its length unchanged."""
    draw = f":{latency_rng.getrandbits(64)}" if sample else ""
    digest = hashlib.sha256(f"{config.seed}:{prompt}{draw}".encode()).digest()
    content_rng = random.Random(digest)
    lengths, signals = config.lengths, read_signals(prompt)
    want = _wanted(config, prompt, signals, max_tokens)
    count = want if config.ignore_max_tokens else min(max_tokens, want)
    tokens = _tokens(prompt, count, content_rng, background_share(lengths, signals),
                     config.seed)
    factor = (config.faults.slow_factor if slow else 1.0) / config.speed
    ttft = (latency_rng.lognormvariate(0, config.ttft_sigma) * config.ttft_median_s
            + config.prefill_s_per_token * prefill_tokens) * factor
    mean_itl = 1.0 / config.tokens_per_s
    jitter = config.itl_jitter
    itl = tuple(mean_itl * latency_rng.uniform(1 - jitter, 1 + jitter) * factor
                for _ in range(count - 1))
    finish = "length" if want >= max_tokens and not config.ignore_max_tokens else "stop"
    return Reply(tuple(tokens), finish, ttft, itl)


def _wanted(config: SimConfig, prompt: str, signals: PromptSignals, max_tokens: int) -> int:
    """How many tokens the model wants to write: ``reply_tokens`` when set, else the length
    model's share of ``max_tokens`` (of ``default_max_tokens`` when it ignores max_tokens, so
    the request's limit does not shape the reply)."""
    if config.reply_tokens is not None:
        return config.reply_tokens
    budget = config.default_max_tokens if config.ignore_max_tokens else max_tokens
    return max(1, round(budget * reply_share(config.lengths, signals, prompt, config.seed)))

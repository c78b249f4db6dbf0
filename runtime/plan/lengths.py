"""How long a step's reply will be: what an endpoint's replies were, else a stated default.

``max_tokens`` is a ceiling, not a length: a real model writes what the prompt asks for. So a
reply length is predicted, in order, from

1. the step's own replies on this endpoint and model, under this strategy (keyed by chain and
   step, learned by ``chainray.plan.learn`` from every run);
2. the step's replies under any strategy;
3. the endpoint's fallback for steps never seen: the typical reply length there, learned from
   what replies were. Where replies on the endpoint grow with ``max_tokens`` (the embedded
   simulator's do) the fallback is a share of ``max_tokens``, else a number of tokens;
4. with no profile at all, ``DEFAULT_REPLIES``: the embedded simulator's documented table (a
   plain reply uses 0.50-0.66 of ``max_tokens``, centred 0.58; a prompt whose opening asks for
   detail 0.9-1.0, for brevity 0.36-0.38; an isolated sibling writes 7 % more; each entry of a
   "previously covered" block 10 % less, down to 60 %). Those are the defaults of
   ``chainray sim``, i.e. of a simulator, not of any real model: a prediction from them says so.

Every length is capped at the step's ``max_tokens``.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Length", "Replies", "DEFAULT_REPLIES", "reply_tokens", "share_for"]

_ASKS_LENGTH = re.compile(r"\b(detailed|in[- ]depth|comprehensive|thorough|exhaustive|"
                          r"elaborate|at least \d+ words|long[- ]form)\b", re.IGNORECASE)
_ASKS_BRIEF = re.compile(r"\b(summary|summari[sz]e|brief|briefly|concise|short|one paragraph|"
                         r"one sentence|headline|tl;dr)\b", re.IGNORECASE)
_OPENING_WORDS = 25


class Length(BaseModel):
    """What replies measured: their count, mean and standard deviation (tokens)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n: int = Field(ge=0)
    mean: float = Field(ge=0)
    sd: float = Field(default=0.0, ge=0)


class Replies(BaseModel):
    """Reply lengths on one endpoint and model, and what turns them into prompt tokens."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    steps: dict[str, dict[str, Length]] = {}  # "chain/step" -> strategy (or "*") -> length
    fallback: Length | None = None  # tokens of a step never seen (None: the default table)
    fallback_share: Length | None = None  # the same as a share of max_tokens
    scales_with_max_tokens: bool = True
    chars_per_token: float = Field(default=4.0, gt=0)  # characters of reply text per token
    prompt_scale: float = Field(default=1.0, gt=0)  # the server's prompt tokens / chainray's
    python_chars: dict[str, dict[str, float]] = {}  # "chain/step" -> strategy -> characters
    # a python step returned
    source: str = ("defaults: the embedded simulator's reply-length table (a share of "
                   "max_tokens), not measured on any endpoint")


DEFAULT_REPLIES = Replies()


def share_for(opening: str, withheld: bool, covered: int) -> float:
    """The default table's share of ``max_tokens`` for a prompt (see the module docstring)."""
    words = " ".join(opening.split()[:_OPENING_WORDS])
    share = 0.95 if _ASKS_LENGTH.search(words) else 0.37 if _ASKS_BRIEF.search(words) else 0.58
    if withheld:
        share *= 1.07
    return share * max(0.6, 1.0 - 0.1 * covered)


def reply_tokens(replies: Replies, key: str, strategy: str, max_tokens: int, opening: str,
                 withheld: bool, covered: int) -> tuple[float, float, str]:
    """Predicted completion tokens of one step: (mean, standard deviation, where from)."""
    known = replies.steps.get(key, {})
    length, where = known.get(strategy), "this step, this strategy"
    if length is None and known:
        length, where = known.get("*"), "this step"
    if length is None and replies.fallback is not None:
        if replies.scales_with_max_tokens and replies.fallback_share is not None:
            share = replies.fallback_share
            length = Length(n=share.n, mean=share.mean * max_tokens, sd=share.sd * max_tokens)
            where = "the endpoint's share of max_tokens"
        else:
            length, where = replies.fallback, "the endpoint's typical reply"
    if length is None:
        mean = share_for(opening, withheld, covered) * max_tokens
        return min(mean, max_tokens), 0.05 * mean, "default table"
    return min(length.mean, max_tokens), length.sd, where

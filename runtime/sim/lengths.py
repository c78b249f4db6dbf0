"""How long the simulated model answers, and how much it repeats what siblings say.

The simulator only sees the prompt, so it reads four signals from the text (the strategies'
prompts carry them, see ``chainray.spec.prompts``):

- **asks for length or brevity**: in the prompt's opening words, "detailed", "comprehensive",
  "at least 500 words" move the length from ``share`` to ``long_share`` of ``max_tokens``;
  "summary", "concise", "headline" to ``brief_share``. Otherwise a reply ends before
  ``max_tokens``, as a real model's does.
- **isolated sibling**: the prompt says some upstream output is "not available, it runs at the
  same time" (the parallel strategy withholding a declared dependency). The step cannot see
  what its siblings write, so it writes ``isolated_extra`` more and fills ``isolated_overlap``
  of its sentences with general background on the topic that its siblings write too. A step
  that sees no context at all fills ``background_overlap`` of its sentences that way.
- **told what was covered**: each entry of a "Previously covered by earlier steps" block (the
  sequential strategy) and each labelled upstream excerpt ("Hardware: ...") cuts the length by
  ``covered_cut``, down to ``covered_floor``, and such a step writes no background.
- **upstream context**: upstream output embedded in the prompt (outside that block) makes the
  answer longer by up to ``context_gain``, in proportion to how much *distinct* material it
  carries (distinct word 3-grams between ``context_min`` and ``context_full``): five
  overlapping reports give a shorter synthesis than five complementary ones.

Every decision is a pure function of the prompt (and the seed), so the text stays
deterministic per prompt.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["LengthModel", "PromptSignals", "read_signals", "reply_share", "word_trigrams"]

_ASKS_LENGTH = re.compile(r"\b(detailed|in[- ]depth|comprehensive|thorough|exhaustive|"
                          r"elaborate|at least \d+ words|long[- ]form)\b", re.IGNORECASE)
_ASKS_BRIEF = re.compile(r"\b(summary|summari[sz]e|brief|briefly|concise|short|one paragraph|"
                         r"one sentence|headline|tl;dr)\b", re.IGNORECASE)
_WITHHELD = re.compile(r"not available, it runs at the same time", re.IGNORECASE)
_COVERED = re.compile(r"(?im)^previously covered by earlier steps:\s*$")
_EXCERPT = re.compile(r"(?:^|\s)[A-Z][a-z]+(?: [a-z]+)?:\s+(?!\[)\S")  # "Hardware: text..."
_WORD = re.compile(r"[a-z0-9][a-z0-9'-]*")
_INSTRUCTION_WORDS = 25  # the prompt's own instruction, not upstream material
_OPENING_WORDS = 12  # what the step is asked: the same under every strategy


class LengthModel(BaseModel):
    """The knobs of the reply-length model (defaults reproduce the seed's table)."""

    model_config = ConfigDict(extra="forbid")

    share: tuple[float, float] = Field((0.5, 0.66), description="range of the share of max_tokens "
                                       "a reply uses when the prompt does not ask for length "
                                       "(triangular, centred 0.58)")
    long_share: tuple[float, float] = Field((0.9, 1.0), description="share when it does")
    brief_share: tuple[float, float] = Field((0.36, 0.38), description="share when it asks for "
                                             "brevity (a summary, a headline, 'concise')")
    isolated_extra: float = Field(0.07, ge=0, description="an isolated sibling writes this "
                                  "much more")
    isolated_overlap: float = Field(0.9, ge=0, le=1, description="share of an isolated "
                                    "sibling's sentences that are shared topic background")
    background_overlap: float = Field(0.1, ge=0, le=1, description="the same for a step that "
                                      "sees no context at all")
    covered_cut: float = Field(0.1, ge=0, le=1, description="less per step listed as covered")
    covered_floor: float = Field(0.6, gt=0, le=1, description="the most the cut removes")
    context_gain: float = Field(1.5, ge=0, description="longer answer with rich upstream "
                                "context")
    context_min: int = Field(1200, ge=0, description="distinct upstream 3-grams below which "
                             "context does not lengthen the answer (short excerpts)")
    context_full: int = Field(1650, gt=0, description="distinct upstream 3-grams for the full "
                              "gain")


@dataclass(frozen=True)
class PromptSignals:
    asks_length: bool
    asks_brevity: bool
    withheld: int  # upstream outputs the step was told it cannot see
    covered: int  # entries in a "previously covered" block
    context_trigrams: int  # distinct word 3-grams of upstream material outside that block


def word_trigrams(text: str) -> list[tuple[str, str, str]]:
    words = _WORD.findall(text.lower())
    return list(zip(words, words[1:], words[2:], strict=False))


def read_signals(prompt: str) -> PromptSignals:
    match = _COVERED.search(prompt)
    body, covered = prompt, 0
    if match:
        body = prompt[:match.start()]
        covered = sum(1 for line in prompt[match.end():].splitlines()
                      if line.startswith("- "))
    words = body.split()
    covered += len(_EXCERPT.findall(" ".join(words[_INSTRUCTION_WORDS // 2:])))
    trigrams = word_trigrams(" ".join(_WORD.findall(body.lower())[_INSTRUCTION_WORDS:]))
    instruction = " ".join(body.split()[:_INSTRUCTION_WORDS])
    return PromptSignals(asks_length=bool(_ASKS_LENGTH.search(instruction)),
                         asks_brevity=bool(_ASKS_BRIEF.search(instruction)),
                         withheld=len(_WITHHELD.findall(prompt)), covered=covered,
                         context_trigrams=len(set(trigrams)))


def length_factor(model: LengthModel, signals: PromptSignals) -> float:
    """How much longer (>1) or shorter (<1) than a plain reply this prompt's reply is."""
    factor = 1.0 + (model.isolated_extra if signals.withheld else 0.0)
    factor *= max(model.covered_floor, 1.0 - model.covered_cut * signals.covered)
    span = max(1, model.context_full - model.context_min)
    richness = min(1.0, max(0, signals.context_trigrams - model.context_min) / span)
    return factor * (1.0 + model.context_gain * richness)


def background_share(model: LengthModel, signals: PromptSignals) -> float:
    """Share of sentences that are general topic background (what siblings repeat)."""
    if signals.covered:
        return 0.0
    if signals.withheld:
        return model.isolated_overlap
    return model.background_overlap if signals.context_trigrams < 30 else 0.1


def reply_share(model: LengthModel, signals: PromptSignals, prompt: str, seed: int) -> float:
    """Share of ``max_tokens`` this prompt's reply uses.

    The base share is drawn (triangular over the range the prompt's ask selects) from the
    prompt's opening words, the question itself: a step gets the same base share under every
    strategy, so strategies differ by what they show the step, not by the luck of the draw.
    """
    low, high = (model.long_share if signals.asks_length else
                 model.brief_share if signals.asks_brevity else model.share)
    opening = " ".join(prompt.split()[:_OPENING_WORDS])
    base = random.Random(f"{seed}:share:{opening}").triangular(low, high)
    return base * length_factor(model, signals)

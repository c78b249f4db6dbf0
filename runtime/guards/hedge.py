"""Hedged stragglers: a request slower than most of its step's gets one duplicate.

A request is a straggler once it has been in flight longer than the Q-quantile of its step's
finished requests (``StragglerLimits.duration_s``). A streamed request that is answering shows
it sooner, by its pace: once it is ``SLACK_CHARS`` behind the Q-quantile of seconds per
character (``StragglerLimits.per_char_s``), a slow decoder. A late first token is not a rule of
its own: among normal requests it has a long tail (p95 three to five times the median, on real
endpoints as in the simulator), and a duplicate pays the whole prompt again, most of a run's
tokens for a step that reads the others' reports; a slow decoder's pace tells it from a normal
request within a few dozen tokens of its first.

The timer starts when the first request leaves (after its permit), so a request queued behind
the rate limit is not a straggler; the duplicate takes its own permit and spend reservation.
The race is decided when the duplicate starts answering, not when one of them ends, so the
loser has cost its prompt and what it had delivered by then:
- if the first has not started answering, the duplicate wins;
- if it has, the one expected to end sooner wins: the first's remaining characters (to the
  step's median reply length) at its own pace so far, against a whole reply at the step's
  median pace (a straggler that starts late often decodes slowly too);
- without a stream (or without those medians), the first whole answer wins.
What a cancelled request is charged is ``loser_charge``'s to say.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from chainray import telemetry
from chainray.guards.call_guards import StragglerLimits
from chainray.tokens import estimate_prompt_tokens, estimate_text_tokens

__all__ = ["Charge", "Progress", "hedged", "loser_charge", "SLACK_CHARS"]

# A streaming request is a straggler once it is this many characters (~50 tokens) behind the
# per-character limit: a few late chunks are not a slow decoder.
SLACK_CHARS = 200
_MIN_CHARS = 100  # fewer characters after the first chunk tell no decode speed


class Progress:
    """How far one request's streamed answer has come (fed by the stream reader)."""

    def __init__(self) -> None:
        self.started = asyncio.Event()  # set at the first content token
        self.streamed = False  # the answer came as a stream
        self.first_at = self.last_at = 0.0  # time.monotonic()
        self.chars = self.first_chars = 0
        self.parts: list[str] = []

    def on_text(self, text: str) -> None:
        now = time.monotonic()
        if not self.started.is_set():
            self.first_at, self.first_chars = now, len(text)
            self.started.set()
        self.last_at = now
        self.chars += len(text)
        self.parts.append(text)

    def per_char_s(self) -> float | None:
        """Seconds per character after the first chunk (None: too little to tell)."""
        after = self.chars - self.first_chars
        return (self.last_at - self.first_at) / after if after >= _MIN_CHARS else None


class Charge:
    """A hedge's shared state: when the first request left, what the winner counted."""

    def __init__(self) -> None:
        self.winner: tuple[int, int] | None = None  # (prompt, completion) of a whole answer
        self.winner_chars = 0  # the length of its text
        self.settled = asyncio.Event()  # set once the race is over (winner known or not)
        self.sent = asyncio.Event()  # set when the first request leaves (hedge timer start)
        self.sent_at = 0.0  # time.monotonic() then
        self.losers: set[int] = set()  # id() of the Progress of each cancelled loser
        # every whole answer, with the id() of its Progress: both may end before the race
        # can cancel one, and the server bills both
        self.answers: list[tuple[int, Any]] = []

    def won(self, completion: Any) -> None:
        self.winner = (completion.prompt_tokens, completion.completion_tokens)
        self.winner_chars = len(completion.text or "")

    def leave(self) -> None:
        """A request leaves; the first one starts the hedge timer."""
        if not self.sent.is_set():
            self.sent_at = time.monotonic()
            self.sent.set()

    def lost(self, progress: Progress) -> bool:
        return id(progress) in self.losers


def loser_charge(charge: Charge, progress: Progress,
                 messages: Sequence[Mapping[str, object]]) -> tuple[int, int]:
    """What a cancelled loser is charged (an estimate: a server reports no usage for a
    request the client left). Asked once the race is settled, so the winner's usage, for the
    same prompt from the same server, is known unless the winner failed.

    A cancelled stream is charged its prompt and the output it had delivered: generation
    stops when the client leaves. Output tokens are counted at the winner's tokens per
    character (chainray's estimate without a winner). A request not streamed may have been
    generated whole: it is charged as much as the winner, the most the server can have
    counted.
    """
    prompt = charge.winner[0] if charge.winner else estimate_prompt_tokens(messages)
    if progress.streamed:
        delivered = "".join(progress.parts)
        if not delivered:
            return prompt, 0
        if charge.winner and charge.winner_chars:
            return prompt, round(len(delivered) * charge.winner[1] / charge.winner_chars)
        return prompt, estimate_text_tokens(delivered)
    return charge.winner if charge.winner else (prompt, 0)


def _late_at(progress: Progress, limits: StragglerLimits, sent_at: float) -> float | None:
    """When the request becomes a straggler as far as is known now (None: no rule applies)."""
    if progress.started.is_set() and limits.per_char_s is not None:
        late_at = progress.first_at + limits.per_char_s * (progress.chars + SLACK_CHARS)
        if late_at <= time.monotonic() and _ends_sooner(progress, limits, fresh=True):
            # Behind, but a duplicate sent now would be cut when it starts answering: judged
            # again once ~SLACK_CHARS more should have come.
            return time.monotonic() + SLACK_CHARS * (limits.median_per_char_s or 0.0) + 0.001
        return late_at
    return None if limits.duration_s is None else sent_at + limits.duration_s


async def _straggles(first: asyncio.Future, progress: Progress, limits: StragglerLimits,
                     sent_at: float, streaming: bool) -> bool:
    """Wait until ``first`` ends (False) or is a straggler (True). Bounded: the request has
    a deadline of its own."""
    while True:
        late_at = _late_at(progress, limits, sent_at)
        if late_at is not None and late_at <= time.monotonic():
            return True
        # Judged again at the first token (the pace rule applies then) or when the limit is
        # reached (a stream that went on meanwhile has moved its limit).
        wake = {asyncio.ensure_future(progress.started.wait())} \
            if streaming and not progress.started.is_set() else set()
        if late_at is None and not wake:
            await asyncio.wait({first})
            return False
        done, _ = await asyncio.wait(
            {first, *wake}, return_when=asyncio.FIRST_COMPLETED,
            timeout=None if late_at is None else late_at - time.monotonic())
        for task in wake:
            task.cancel()
        if first in done:
            return False


def _ends_sooner(first: Progress, limits: StragglerLimits, fresh: bool = False) -> bool | None:
    """Whether a stream that is on its way ends before a duplicate that starts answering now
    (``fresh``: that is sent now) would (None: the step's medians are not known)."""
    if limits.reply_chars is None or limits.median_per_char_s is None:
        return None
    # Its own pace so far, after its first chunk (the one the medians are measured after too)
    pace = (time.monotonic() - first.first_at) / max(1, first.chars - first.first_chars)
    left = max(0.0, limits.reply_chars - first.chars) * pace
    head_start = (limits.median_first_token_s or 0.0) if fresh else 0.0
    return left <= head_start + limits.reply_chars * limits.median_per_char_s


async def _race(racers: dict[asyncio.Future, Progress], limits: StragglerLimits,
                streaming: bool, charge: Charge) -> tuple[Any, Progress]:
    """Decide the race when the duplicate starts answering (see the module's docstring) or
    when one of them ends; the loser is cancelled at once (marked in ``charge``)."""
    (first, original), (second, copy) = racers.items()
    pending, error = {first, second}, None
    watcher = asyncio.ensure_future(copy.started.wait()) if streaming else None
    try:
        while pending:
            done, _ = await asyncio.wait(pending | ({watcher} if watcher else set()),
                                         return_when=asyncio.FIRST_COMPLETED)
            for task in done & pending:
                pending.discard(task)
                if task.exception() is None:
                    charge.losers.update(id(racers[other]) for other in pending)
                    return task.result(), racers[task]
                error = error or task.exception()
            if watcher is not None and watcher.done() and pending == {first, second}:
                # The duplicate answers: the one expected to end later is cut now.
                keep = _ends_sooner(original, limits) if original.started.is_set() else False
                if keep is not None:
                    winner, loser = (first, second) if keep else (second, first)
                    charge.losers.add(id(racers[loser]))
                    loser.cancel()
                    return await winner, racers[winner]
            if watcher is not None and (watcher.done() or second not in pending):
                watcher.cancel()  # decided when one ends (nothing to project by)
                watcher = None
        raise error  # type: ignore[misc]
    finally:
        if watcher is not None:
            watcher.cancel()


async def hedged(send: Callable[[bool, Progress], Awaitable[Any]],
                 limits: Callable[[], Awaitable[StragglerLimits | None]], charge: Charge,
                 streaming: bool = False) -> tuple[Any, Progress]:
    """Send; once the request is a straggler, send one duplicate and race them. Returns the
    winner's ``(completion, seconds)`` and its ``Progress``.

    ``send(duplicate, progress)`` makes one request and feeds ``progress``. ``limits`` is
    asked once the request is on its way, so that what it looks up never delays the request;
    None: no hedge. ``streaming``: the request asks for a stream.
    """
    original = Progress()
    first = asyncio.ensure_future(send(False, original))
    tasks = {first}
    try:
        sent = asyncio.ensure_future(charge.sent.wait())
        # Bounded: the first request's permit wait and request have deadlines of their own.
        await asyncio.wait({first, sent}, return_when=asyncio.FIRST_COMPLETED)
        sent.cancel()
        look = asyncio.ensure_future(limits())
        tasks.add(look)  # bounded by the look-up's own timeout; cancelled in finally
        await asyncio.wait({first, look}, return_when=asyncio.FIRST_COMPLETED)
        if first.done() or look.exception() is not None or look.result() is None:
            return await first, original
        if not await _straggles(first, original, look.result(), charge.sent_at, streaming):
            return first.result(), original
        copy = Progress()
        telemetry.event("chainray.hedge", {"chainray.in_flight_s": round(
            time.monotonic() - charge.sent_at, 3)})  # a duplicate of a straggler leaves
        second = asyncio.ensure_future(send(True, copy))
        tasks.add(second)
        result, progress = await _race({first: original, second: copy}, look.result(),
                                        streaming, charge)
        charge.won(result[0])
        return result, progress
    finally:
        charge.settled.set()  # a cancelled loser is charged now (see ``loser_charge``)
        for task in tasks:
            if not task.done() and not task.cancelling():
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

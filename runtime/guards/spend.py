"""A hard spend cap, held by reservation: a call is admitted only if its worst case fits.

The worst case of a call is its prompt's upper bound in tokens (one token per UTF-8 byte: a
BPE token is never shorter than a byte) plus its ``max_tokens``, at the model's prices. The
reservation is replaced by the real cost when the call ends, so what is spent plus what is in
flight never exceeds the cap, however many calls run at once on however many nodes.

    book = SpendBook(cap_usd=1.00)
    reservation = book.reserve(0.004)      # None: the cap stops admission
    ...                                    # send the request
    book.settle(reservation, 0.0011)       # the real cost, from the server's usage
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping

__all__ = ["SpendBook", "worst_case_prompt_tokens"]


def worst_case_prompt_tokens(messages: Iterable[Mapping[str, object]]) -> int:
    """An upper bound on a chat request's prompt tokens (the estimate in chainray.tokens is
    a typical count, not a bound)."""
    return 3 + sum(4 + len(str(m.get("content") or "").encode()) for m in messages)


class SpendBook:
    def __init__(self, cap_usd: float) -> None:
        self.cap_usd = cap_usd
        self.spent_usd = 0.0
        self.reserved: dict[int, float] = {}
        self.refused = 0
        self.ids = itertools.count(1)

    @property
    def committed_usd(self) -> float:
        return self.spent_usd + sum(self.reserved.values())

    def reserve(self, worst_case_usd: float) -> int | None:
        """A reservation id, or None when the worst case does not fit what is left."""
        if self.committed_usd + worst_case_usd > self.cap_usd + 1e-12:
            self.refused += 1
            return None
        reservation = next(self.ids)
        self.reserved[reservation] = worst_case_usd
        return reservation

    def settle(self, reservation: int, actual_usd: float) -> None:
        """Replace a reservation by the real cost (a failed call costs what the server
        counted, usually nothing)."""
        self.reserved.pop(reservation, None)
        self.spent_usd += actual_usd

    def state(self) -> dict[str, float | int]:
        return {"cap_usd": self.cap_usd, "spent_usd": round(self.spent_usd, 8),
                "in_flight_usd": round(sum(self.reserved.values()), 8),
                "refused": self.refused}

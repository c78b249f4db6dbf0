"""Cost from an editable price table (USD per million tokens, with source and date per row)."""

from __future__ import annotations

import json
import warnings
from functools import cache, lru_cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from chainray.errors import InputError

__all__ = ["Price", "PriceTable", "load_prices", "BUNDLED_PRICES"]

BUNDLED_PRICES = Path(__file__).with_name("prices.json")


class Price(BaseModel):
    """USD per million tokens. ``cached_input``: a prompt token read from the provider's
    prompt cache; None where the provider documents no such price (cached tokens then cost
    the input price)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input: float = Field(ge=0)
    cached_input: float | None = Field(default=None, ge=0)
    output: float = Field(ge=0)
    context_window: int | None = Field(default=None, gt=0)  # prompt + reply, tokens
    source: str
    as_of: str
    # The provider's Batch API price as a share of the prices above (0.5: half), with its
    # own source and date; None where none is documented (a batch line then costs list).
    batch_share: float | None = Field(default=None, gt=0, le=1)
    batch_source: str | None = None
    batch_as_of: str | None = None


class PriceTable(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    models: dict[str, Price]

    def cost(self, model: str | None, prompt_tokens: int, completion_tokens: int,
             cached_tokens: int = 0, batch: bool = False) -> float:
        """USD for one call, ``cached_tokens`` of its prompt at the cached-input price
        (``batch``: a Batch API line, at the model's ``batch_share`` of it); an unknown model
        warns once and costs 0."""
        price = self.models.get(model or "")
        if price is None:
            _warn_unknown(model)
            return 0.0
        cached = min(cached_tokens, prompt_tokens)
        cached_price = price.input if price.cached_input is None else price.cached_input
        share = price.batch_share if batch and price.batch_share is not None else 1.0
        return share * ((prompt_tokens - cached) * price.input + cached * cached_price
                        + completion_tokens * price.output) / 1e6


@cache
def _warn_unknown(model: str | None) -> None:
    warnings.warn(f"no price for model {model!r}: its cost counts as 0 (add it to a price "
                  "table and pass --prices)", stacklevel=3)


@lru_cache(maxsize=8)
def load_prices(path: str | None = None) -> PriceTable:
    file = Path(path) if path else BUNDLED_PRICES
    try:
        return PriceTable.model_validate(json.loads(file.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise InputError(f"--prices: no such file {str(file)!r}") from None
    except (ValueError, ValidationError) as exc:
        raise InputError(f"--prices: {file} is not a valid price table: {exc}") from None
